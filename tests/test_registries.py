"""The attack and detector registries (advflow.attacks.registry, advflow.defenses.registry): every entry keeps its
contract, an unknown name is refused when the config is checked, and one entry adds a name everywhere the workflow
reads names (the schema, the settings, the attack stage, the defense stage)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from advflow import config as cfg
from advflow.attacks import registry as attacks
from advflow.attacks.library import run_attack
from advflow.defenses import Detector, flagged, threshold
from advflow.defenses import registry as detectors
from advflow.defenses.settings import attack_settings as sweep_settings
from advflow.defenses.settings import defense_settings, sweeps

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "config.schema.yaml"

BASE = {"seed": 0, "dataset": "synthetic", "models": {"good_init": {}}, "attack_sets": {"good_init": ["fgsm"]}}


def errors(config: dict) -> list[str]:
    return cfg.config_errors(config, cfg.load_schema(SCHEMA))


# ------------------------------------------------------------------------------------------------- attacks

@pytest.mark.parametrize("name", attacks.names())
def test_every_attack_entry_is_a_complete_contract(name):
    spec = attacks.get(name)
    schema = cfg.load_schema(SCHEMA)
    assert spec.norm in attacks.NORMS and spec.kind in attacks.KINDS and spec.label and spec.family
    if spec.settings is not None:
        # its defaults are a valid config block of the shape it names, and the schema takes its block
        jsonschema.validate({"$defs": schema["$defs"], **schema["$defs"][spec.settings]}, dict(spec.defaults))
        assert schema["properties"]["attacks"]["properties"][name] == {"$ref": f"#/$defs/{spec.settings}"}
    else:
        assert attacks.get(spec.settings_from).settings is not None  # it borrows a configurable attack's settings
        assert name not in schema["properties"]["attacks"]["properties"]
    config = {**BASE, "models": {"good_init": {}, "distilled": {}}, "attack_sets": {"good_init": [name]}}
    assert errors(config) == []
    settings = cfg.attack_settings(config, name)
    assert set(spec.defaults) <= set(settings) and all(settings[k] == v for k, v in spec.fixed.items())
    assert name in cfg.resolve(config)["attacks"]
    if spec.sweep_name is not None:  # the defense stage sweeps it under its sweep name, in the seed's units
        assert attacks.sweep(spec.sweep_name) is spec
        library_name, library_settings = sweep_settings({spec.sweep_name: dict(spec.sweep_defaults)},
                                                        spec.sweep_name, 0.1 if spec.strength == "epsilon" else 5)
        assert library_name == name
        expected = {"epsilon": 0.2} if spec.strength == "epsilon" else {"kappa": 5.0}  # ε in [0, 1] pixels: 2ε
        assert {k: library_settings[k] for k in expected} == pytest.approx(expected)


def test_the_registries_order_is_the_studys_and_the_sweeps_order_seed_003s():
    assert attacks.names()[:3] == ("fgsm", "igsm", "pgd")
    assert tuple(attacks.sweep_attacks()) == ("pgd", "bim", "cw", "ead_l1", "ead_en")
    assert attacks.swept_by("epsilon") == ("pgd", "bim") and attacks.swept_by("kappa") == ("cw", "ead_l1", "ead_en")


@pytest.mark.parametrize("where, config", [
    ("attack_sets.good_init", {**BASE, "attack_sets": {"good_init": ["fgsm", "lid_attack"]}}),
    ("attacks", {**BASE, "attacks": {"lid_attack": {"epsilon": 0.1}}}),
    ("defense.attacks", {**BASE, "defense": {"attacks": ["lid_attack"]}}),
])
def test_an_unknown_attack_is_refused_when_the_config_is_checked(where, config):
    found = errors(config)
    assert len(found) == 1 and where in found[0] and "lid_attack" in found[0], found


def test_an_unknown_attack_is_refused_by_the_library_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown attack 'lid_attack'; allowed: fgsm, igsm, pgd, jsma"):
        run_attack("lid_attack", torch.nn.Flatten(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), {},
                   num_classes=2)
    with pytest.raises(cfg.ConfigError, match=r"unknown attack 'lid_attack'"):
        cfg.attack_settings(BASE, "lid_attack")
    with pytest.raises(ValueError, match=r"unknown sweep attack 'igsm'; allowed: pgd, bim"):
        attacks.sweep("igsm")  # the defense stage sweeps IGSM under seed 003's name


def _toy_craft(model, x, labels, settings, *, num_classes, device):
    """A planted attack: every pixel moved by +epsilon, clipped to the box."""
    return (x + settings["epsilon"]).clamp(*attacks.BOUNDS), {}


def test_one_registry_entry_adds_an_attack_everywhere(monkeypatch):
    spec = attacks.AttackSpec("toy", "linf", "gradient", "Toy", "toys", {"epsilon": 0.3}, _toy_craft,
                              settings="linf_attack", sweep_name="toy", strength="epsilon",
                              sweep_defaults={"steps": 1, "rel_stepsize": 1.0}, sweep_order=9)
    monkeypatch.setitem(attacks.ATTACKS, "toy", spec)
    config = {**BASE, "attack_sets": {"good_init": ["fgsm", "toy"]}, "attacks": {"toy": {"epsilon": 0.5}}}
    assert errors(config) == []
    assert errors({**config, "attacks": {"toy": {"epsilon": 3}}})  # its block follows the shape it names
    assert cfg.attack_settings(config, "toy") == {"epsilon": 0.5}
    assert cfg.attacks_in_use(config) == ["fgsm", "toy"]
    x = torch.zeros(2, 1, 3, 3)
    outcome = run_attack("toy", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 2)), x,
                         torch.zeros(2, dtype=torch.long), {"epsilon": 0.5}, num_classes=2)
    assert torch.equal(outcome.adversarial, torch.full_like(x, 0.5))
    # the defense stage sweeps it over ε too: a name, a set per strength, the library's settings
    defense = {**config, "defense": {"attacks": ["toy"], "epsilons": [0.1]}}
    assert errors(defense) == []
    settings = defense_settings(defense)
    assert sweeps(settings) == {"toy_eps0.1": ("toy", 0.1)}


# ------------------------------------------------------------------------------------------------- detectors

class MeanLogits(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        return torch.stack([8 * m, -8 * m, torch.zeros_like(m)], dim=1)


class ConvLogits(torch.nn.Module):
    """A small conv classifier (fixed weights): the detectors that read conv layers need some."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3, padding=1),
                                            torch.nn.ReLU())
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _context(states: dict | None = None, classifier: torch.nn.Module | None = None) -> detectors.Built:
    from advflow.defenses.magnet import autoencoder

    torch.manual_seed(0)
    settings = {"mine": {"hidden": 8, "layers": 1, "steps": 5, "batch_size": 16, "lr": 0.002, "ema_rate": 0.01,
                         "references": 5, "train_size": 20},
                "infopath": {"train_size": 24, "buckets": 4}, "mahalanobis": {"train_size": 24},
                "lid": {"train_size": 24, "k": 5, "references": 20}}
    return detectors.Built(classifier or MeanLogits(),
                           {"ae_i": autoencoder("ae_i", 1).eval(), "ae_ii": autoencoder("ae_ii", 1).eval()},
                           states or {}, settings, 0)


@pytest.mark.parametrize("name", detectors.scored_by_scores_rule())
def test_every_detector_the_scoring_jobs_build_fits_on_clean_data_and_scores_every_input(name):
    spec = detectors.get(name)
    assert 0 < spec.fpr < 1 and spec.autoencoder in (None, "ae_i", "ae_ii")
    classifier = ConvLogits().eval() if spec.fitted else None
    detector = detectors.build(name, _context(classifier=classifier))
    assert isinstance(detector, Detector)
    clean = torch.rand(24, 1, 8, 8) * 2 - 1
    if spec.state is not None:  # fitted by a rule of its own (fit_mid, fit_detector); MagNet's as autoencoders
        detector.fit(clean, (torch.arange(24) % 3).numpy()) if spec.labels else detector.fit(clean)
    scores = detector.score(clean)
    assert scores.shape == (24,) and np.isfinite(scores).all()
    limit = threshold(scores, 0.25)
    assert flagged(scores, limit).mean() <= 0.25  # the threshold flags at most the share it is set for
    if spec.state is not None:  # a saved state rebuilds the same detector
        again = detectors.build(name, _context({spec.state: detector.state_dict()}, classifier))
        np.testing.assert_allclose(again.score(clean), scores, rtol=1e-5, atol=1e-6)


def test_every_detector_has_a_default_fpr_in_the_defense_settings():
    settings = defense_settings({**BASE, "defense": {}})
    assert settings["fpr"] == {n: detectors.get(n).fpr for n in detectors.names()}


@pytest.mark.parametrize("key", ["detectors", "compared"])
def test_an_unknown_detector_is_refused_when_the_config_is_checked(key):
    found = errors({**BASE, "defense": {key: ["magnet_l1", "odin"]}})
    assert len(found) == 1 and f"defense.{key}" in found[0] and "odin" in found[0], found


class _Constant(Detector):
    name = "toy"

    def fit(self, x: torch.Tensor) -> "_Constant":
        self.level = float(x.mean())
        return self

    def score(self, x: torch.Tensor) -> np.ndarray:
        return (x.flatten(1).mean(1) - self.level).abs().numpy()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_one_registry_entry_adds_a_detector_everywhere(monkeypatch):
    monkeypatch.setitem(detectors.DETECTORS, "toy", detectors.DetectorSpec("toy", 0.02, lambda c: _Constant()))
    config = {**BASE, "defense": {"detectors": ["magnet_l1", "toy"]}}
    assert errors(config) == []
    settings = defense_settings(copy.deepcopy(config))
    assert settings["detectors"] == ["magnet_l1", "toy"] and settings["fpr"]["toy"] == 0.02
    assert "toy" in detectors.scored_by_scores_rule()
    from advflow.defenses.stage import build_detectors

    built = build_detectors(["toy"], MeanLogits(), {}, None, settings, seed=0)
    assert isinstance(built["toy"], _Constant)


def test_a_name_is_registered_once_and_not_as_another_attacks_sweep_name():
    import dataclasses

    with pytest.raises(ValueError, match="attack 'fgsm' is registered already"):
        attacks.register(attacks.get("fgsm"))
    with pytest.raises(ValueError, match="attack 'bim' is registered already"):  # IGSM's sweep name
        attacks.register(dataclasses.replace(attacks.get("fgsm"), name="bim"))
    with pytest.raises(ValueError, match="detector 'mid' is registered already"):
        detectors.register(detectors.get("mid"))
    assert "bim" not in attacks.ATTACKS and len(detectors.DETECTORS) == len(detectors.names())


def test_the_defense_stage_defaults_to_seed_003s_sweeps_in_its_tables_order():
    settings = defense_settings({**BASE, "defense": {}})
    assert settings["attacks"] == ["pgd", "bim", "cw", "ead_l1", "ead_en"]
    assert settings["pgd"] == {"steps": 40, "rel_stepsize": 0.025} and settings["bim"] == {"steps": 10, "rel_stepsize": 0.1}
    assert settings["cw"] == {"binary_search_steps": 9, "steps": 1000, "stepsize": 0.01, "c": 0.001}
    assert settings["ead_en"] == {"binary_search_steps": 9, "steps": 1000, "stepsize": 0.01, "c": 0.001, "beta": 0.1}
