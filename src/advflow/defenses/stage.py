"""The defense stage (docs/method.md, "Defenses and detectors"): seed 003's MagNet + MID against transfer attacks.

Threat model: oblivious / transfer. Attacks are crafted on the undefended classifier (``defense.classifier``)
and shown to the defended system. Files under ``results/{dataset}/defense/``:

=======================================  ================================================================
``inputs/{seeds,validation,clean}.h5``   N_d test images the classifier gets right (the attacks' seeds);
                                         clean validation images (every threshold); clean held-out test
                                         images (clean accuracy with and without the defense). Disjoint.
``autoencoders/{ae_i,ae_ii}.pt``         MagNet's autoencoders, trained on clean training images
``detectors/mid.pt``                     the MID detector's fitted MINE network and references
``adv/{attack}_{strength}.h5``           a sweep set (the usual adversarial-set layout, + ``extra/margin`` and
                                         ``extra/control``: each seed perturbed at random by the attack's own
                                         size, :mod:`advflow.attacks.controls`)
``scores/{set}.csv``                     per input: label, prediction, success, reformed prediction, margin
                                         and every detector's score, and the same for its random control
                                         (``control_*``; :mod:`advflow.defenses.metrics`)
=======================================  ================================================================

Strengths are named ``eps{ε}`` (PGD, BIM; ε in seed 003's [0, 1] pixel units, 2ε in our [-1, 1] space) and
``kappa{κ}`` (C&W-L2, EAD-L1, EAD-EN). Thresholds and tables (rule ``defense_tables``) read the scores only,
so changing an FPR rescored nothing.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.attacks.sets import _model_space, craft_set, model_logits
from advflow.workflow.catalog import control_name
from advflow.workflow.errors import ConfigError
from advflow.attacks.controls import _generator as control_generator
from advflow.attacks.controls import perturb_like
from advflow.data import load_prepared
from advflow.defenses import Detector
from advflow.defenses import registry
from advflow.defenses.magnet import (
    Reformer,
    load_autoencoder,
    save_autoencoder,
)
from advflow.defenses.metrics import CONTROL_COLUMN_PREFIX, LAYER_COLUMN_PREFIX
from advflow.defenses.mine import MIDDetector
from advflow.defenses.settings import (
    KAPPA_ATTACKS,
    attack_settings,
    strength_name,
)
from advflow.workflow.io import atomic_path, check_h5, open_h5, quarantine
from advflow.models.architectures import load_checkpoint
from advflow.attacks.profiles import _write, correctly_classified
from advflow.attacks.checks import check_profile, check_set

log = logging.getLogger("advflow.defenses")

# ---------------------------------------------------------------------------------------------------------
# Inputs, autoencoders, MID


def select_inputs(data_path: str | Path, classifier_path: str | Path, settings: dict[str, Any], *, seed: int,
                  device: torch.device, out_seeds: str | Path, out_validation: str | Path,
                  out_clean: str | Path) -> None:
    """Disjoint test images in a seeded random order: the first ``validation`` and then ``clean`` images (any),
    then the first ``n`` of the rest the classifier classifies correctly (the attacks' seeds)."""
    dataset = load_prepared(data_path)
    images, labels = dataset.test.images, dataset.test.labels
    need = settings["validation"] + settings["clean"] + settings["n"]
    if need > len(labels):
        raise ConfigError(f"defense.n + defense.validation + defense.clean = {need} exceed the {len(labels)} test "
                          f"images; lower them")
    order = np.random.default_rng([seed, 3]).permutation(len(labels))
    validation = np.sort(order[:settings["validation"]])
    clean = np.sort(order[settings["validation"]:settings["validation"] + settings["clean"]])
    rest = order[settings["validation"] + settings["clean"]:]
    model = load_checkpoint(classifier_path, device)
    correct = rest[correctly_classified([model], images[rest], labels[rest], device)]
    if len(correct) < settings["n"]:
        raise RuntimeError(f"only {len(correct)} of the remaining test images are classified correctly by "
                           f"{model.arch['name']}; lower defense.n to at most that")
    seeds = np.sort(correct[:settings["n"]])
    name = model.arch["name"]
    _write(out_validation, dataset, "test", validation, f"{len(validation)} clean validation images (seed {seed})")
    _write(out_clean, dataset, "test", clean, f"{len(clean)} clean held-out test images (seed {seed})")
    _write(out_seeds, dataset, "test", seeds, f"{len(seeds)} test images {name} classifies correctly (seed {seed})")
    log.info("defense inputs: %d validation, %d clean, %d seeds (of %d correct)", len(validation), len(clean),
             len(seeds), len(correct))


def train_defense_autoencoder(name: str, data_path: str | Path, settings: dict[str, Any], *, seed: int,
                              device: torch.device, out: str | Path, log_dir: str | None = None) -> None:
    """Train MagNet autoencoder ``name`` on clean training images (``autoencoder.train_size`` of them, seeded)."""
    from advflow.defenses.training import (  # Lightning: this rule only
        AutoencoderSettings,
        train_autoencoder,
    )

    train = load_prepared(data_path).train.images
    size = settings["autoencoder"].get("train_size")
    if size is not None and size < len(train):
        train = train[np.sort(np.random.default_rng([seed, 5]).choice(len(train), size, replace=False))]
    own = {k: v for k, v in settings["autoencoder"].items() if k != "train_size"}
    model = train_autoencoder(name, train, AutoencoderSettings(**own, seed=seed), device=device, log_dir=log_dir)
    save_autoencoder(model, name, out)


def mid_detector(classifier: torch.nn.Module, ae_i: torch.nn.Module, settings: dict[str, Any], *,
                 seed: int) -> MIDDetector:
    """MID as the registry builds it, before it is fitted (rule fit_mid fits it and saves its state)."""
    return registry.build("mid", registry.Built(classifier, {"ae_i": ae_i}, {}, settings, seed))


def fit_mid(data_path: str | Path, classifier_path: str | Path, ae_i_path: str | Path, settings: dict[str, Any],
            *, seed: int, device: torch.device, out: str | Path) -> None:
    """Fit the MID detector on clean training images (``mine.train_size`` of them, seeded) and save its state."""
    train = load_prepared(data_path).train.images
    size = min(int(settings["mine"]["train_size"]), len(train))
    train = train[np.sort(np.random.default_rng([seed, 7]).choice(len(train), size, replace=False))]
    detector = mid_detector(load_checkpoint(classifier_path, device), load_autoencoder(ae_i_path, device), settings,
                            seed=seed)
    detector.fit(_model_space(train))
    log.info("MID fitted on %d clean pairs: DV estimate %.4f nats", size, detector.fitted_mi)
    with atomic_path(out) as tmp:
        torch.save(detector.state_dict(), tmp)


# ---------------------------------------------------------------------------------------------------------
# Sweep sets and scores


def margins(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The achieved logit margin of each input, max_{j != y} z_j - z_y (> 0: misclassified; C&W's κ asks >= κ)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], -math.inf)
    return (others.max(1).values - true).numpy().astype(np.float64)


def random_control(name: str, library_attack: str, x: torch.Tensor, adversarial: torch.Tensor, *,
                   seed: int) -> np.ndarray:
    """The sweep set's random control: each seed perturbed at random by the attack's own size for that input (random
    ±ε per pixel for PGD/BIM, Gaussian noise of the same L2 norm for C&W/EAD; an input the attack left unchanged
    stays unchanged), as the study's controls (:func:`advflow.attacks.controls.perturb_like`); seeded per set."""
    seeds = x.numpy().astype(np.float32)
    r = (adversarial.numpy().astype(np.float64) - seeds).reshape(len(seeds), -1)
    norms = {"linf": np.abs(r).max(1, initial=0.0), "l2": np.linalg.norm(r, axis=1)}
    return perturb_like(library_attack, seeds, norms, {}, control_generator(seed, control_name(name)))


def craft_sweep_set(attack: str, strength: float, classifier_path: str | Path, seeds_path: str | Path,
                    settings: dict[str, Any], *, seed: int, device: torch.device, out: str | Path) -> dict[str, Any]:
    """Attack the defense seeds on the undefended classifier for one sweep set (``attack`` at ``strength``, in the
    seed's units), as every adversarial set is crafted (:func:`advflow.attacks.sets.craft_set`), and record each
    input's achieved margin and its random control under ``extra/``."""
    library_attack, own = attack_settings(settings, attack, strength)
    name = f"{attack}_{strength_name(attack, strength)}"

    kept: dict[str, np.ndarray] = {}

    def records(x: torch.Tensor, labels: torch.Tensor, outcome: Any) -> dict[str, np.ndarray]:
        kept["margin"], kept["success"] = margins(outcome.logits, labels), outcome.success.numpy()
        return {"margin": kept["margin"],
                "control": random_control(name, library_attack, x, outcome.adversarial, seed=seed)}

    row = craft_set(library_attack, classifier_path, seeds_path, own, seed=seed, device=device, out_path=out,
                    batch_size=int(settings["batch_size"]), records=records,
                    attrs={"attack": attack, "strength": float(strength)})
    success, margin = kept["success"], kept["margin"]
    reached = int((margin >= strength).sum()) if attack in KAPPA_ATTACKS else int(success.sum())
    log.info("%s: success %d / %d; margin >= κ on %d", name, int(success.sum()), len(success), reached)
    return {**row, "success": int(success.sum())}


def load_mid_state(path: str | Path) -> dict[str, Any]:
    """A saved MID state (:func:`fit_mid`), loaded with ``weights_only=True``; a truncated or foreign file is an
    error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow's fit_mid rule")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise quarantine(path, f"not a readable MID state: {type(error).__name__}: {error}",
                         rebuilt_by="rule fit_mid") from error
    if not isinstance(state, dict) or not {"network", "references"} <= set(state):
        raise quarantine(path, "not a MID state (no network and references)", rebuilt_by="rule fit_mid")
    return state


def load_detector_state(name: str, path: str | Path) -> dict[str, Any]:
    """The state rule ``fit_detector`` (or ``fit_mid``) saved for detector ``name``, loaded with
    ``weights_only=True``; a missing, truncated or foreign file is an error naming it and the rule that remakes it."""
    if name == "mid":
        return load_mid_state(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow's fit_detector rule")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise quarantine(path, f"not a readable {name} state: {type(error).__name__}: {error}",
                         rebuilt_by="rule fit_detector") from error
    if not isinstance(state, dict) or not state:
        raise quarantine(path, f"not a {name} state (no fitted tensors)", rebuilt_by="rule fit_detector")
    return state


def build_detectors(names: list[str], classifier: torch.nn.Module, autoencoders: dict[str, torch.nn.Module],
                    states: dict[str, dict[str, Any]] | None, settings: dict[str, Any], *,
                    seed: int) -> dict[str, Detector]:
    """The configured detectors as the registry (:mod:`advflow.defenses.registry`) builds them, fitted (MID and
    the detectors of rule fit_detector from their saved ``states``, by name). A name the registry does not know,
    or one scored by a rule of its own (the dropout vote), is a ValueError naming the detectors the scoring jobs
    know."""
    context = registry.Built(classifier, autoencoders, dict(states or {}), settings, seed)
    return {name: registry.build(name, context) for name in names}


def fit_detector(name: str, data_path: str | Path, classifier_path: str | Path, settings: dict[str, Any], *,
                 seed: int, device: torch.device, out: str | Path) -> None:
    """Fit detector ``name`` (one of :func:`advflow.defenses.registry.fitted_by_rule`) on ``defense.{name}.train_size``
    clean training images (a seeded draw) and save its state, loadable with ``weights_only=True``."""
    spec = registry.get(name)
    if not spec.fitted:
        raise ValueError(f"detector {name!r} is not fitted by rule fit_detector; it fits: "
                         f"{', '.join(registry.fitted_by_rule())}")
    train = load_prepared(data_path).train
    size = min(int(settings[name]["train_size"]), len(train.images))
    chosen = np.sort(np.random.default_rng([seed, 11, registry.names().index(name)]).choice(
        len(train.images), size, replace=False))
    classifier = load_checkpoint(classifier_path, device)
    detector = registry.build(name, registry.Built(classifier, {}, {}, settings, seed))
    x = _model_space(train.images[chosen])
    started = time.perf_counter()
    if spec.labels:
        detector.fit(x, train.labels[chosen].astype(np.int64))
    else:
        detector.fit(x)
    log.info("%s fitted on %d clean training images in %.1f s", name, size, time.perf_counter() - started)
    with atomic_path(out) as tmp:
        torch.save(detector.state_dict(), tmp)


def set_size(h5: Any, path: str | Path) -> int:
    """The number of inputs of an open defense set file (clean images or a sweep set with its ``extra/`` records),
    checked: a damaged file is moved aside (:mod:`advflow.attacks.checks`) so the next run writes it again."""
    if "adversarial" not in h5:
        return check_profile(h5, path)
    n = check_set(h5, path)
    extra = {f"extra/{k}": (n,) + h5[f"extra/{k}"].shape[1:] for k in h5.get("extra", {})}
    check_h5(h5, path, datasets=extra, finite=tuple(k for k in extra if k == "extra/control"))
    return n


def set_sizes(paths: dict[str, str | Path]) -> dict[str, int]:
    """:func:`set_size` of each set file, by name (what :func:`advflow.defenses.tables.write_defense_tables` checks
    the score tables against)."""
    sizes = {}
    for name, path in paths.items():
        with open_h5(path) as h5:
            sizes[name] = set_size(h5, path)
    return sizes


def score_set(set_path: str | Path, detectors: dict[str, Detector], classifier: torch.nn.Module,
              reformer: Reformer, device: torch.device, *,
              control_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The score table of a set file (a profile: clean; an adversarial set: its adversarial images, and its random
    control: the set's ``extra/control``, or for a study set the control set file ``control_path`` of the same
    seeds)."""
    with open_h5(set_path) as h5:
        set_size(h5, set_path)
        adversarial = "adversarial" in h5
        if adversarial:
            x = torch.as_tensor(h5["adversarial"][:])
            labels, success = h5["labels"][:].astype(np.int64), h5["success"][:].astype(bool)
            margin = h5["extra/margin"][:] if "extra/margin" in h5 else np.full(len(labels), math.nan)
            control = torch.as_tensor(h5["extra/control"][:]) if "extra/control" in h5 else None
            indices = h5["indices"][:]
        else:
            images, labels = h5["images"][:], h5["labels"][:].astype(np.int64)
            x, success, margin = _model_space(images), np.zeros(len(labels), bool), np.full(len(labels), math.nan)
            control = None
    if control_path is not None:
        with open_h5(control_path) as h5:
            set_size(h5, control_path)
            if not np.array_equal(h5["indices"][:], indices):
                raise ValueError(f"{control_path}: not the control of {set_path} (its seeds differ); rerun rule control")
            control = torch.as_tensor(h5["adversarial"][:])
    columns = {"index": np.arange(len(labels)), "label": labels, "success": success, "margin": margin}
    for prefix, images in (("", x), (CONTROL_COLUMN_PREFIX, control)):
        if images is None:
            continue
        columns[f"{prefix}prediction"] = model_logits(classifier, images, device).argmax(1).numpy()
        columns[f"{prefix}reformed_prediction"] = reformer.predict(classifier, images)
        for name, detector in detectors.items():
            layered = getattr(detector, "scores_and_layers", None)
            if callable(layered):  # the per-layer values beside the score: layer_<detector>_<layer> columns
                scores, names, values = layered(images.float())
                columns[f"{prefix}score_{name}"] = scores
                for j, layer in enumerate(names):
                    columns[f"{prefix}{LAYER_COLUMN_PREFIX}{name}_{layer}"] = values[:, j]
            else:
                columns[f"{prefix}score_{name}"] = detector.score(images.float())
            log.info("%s: %s scored by %s", Path(set_path).name, "its random control" if prefix else "inputs", name)
    return columns
