"""Presets mean what they say: a --configfile replaces config.yaml (it does not add to it), wherever
Snakemake starts; the paper preset resolves to the paper's settings; a config listing one model and one
attack plans only their jobs; the resolved config is written beside the results."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from advflow.config import PAPER_SETTINGS, paper_departures, resolve, write_resolved
from conftest import REPO, planned_jobs, snakemake

PRESETS = sorted([REPO / "config.yaml", *(REPO / "configs").glob("*.yaml")])

#: docs/method.md, "Attacks" and "Models": the paper's settings, in the models' [-1, 1] space.
PAPER_ATTACKS = {
    "fgsm": {"epsilon": 0.025},
    "igsm": {"epsilon": 0.025, "alpha": 0.002},
    "jsma": {"theta": 0.1, "gamma": 0.1},
    "jsma_adaptive": {"theta": 0.4, "gamma": 0.2, "temperature": 40.0},
    "jsma_control": {"theta": 0.4, "gamma": 0.2, "temperature": 1.0},
    "deepfool": {"overshoot": 0.02},
    "cw": {"kappa": 0.0, "c": 0.25},
    "ead_l1": {"beta": 0.1},
    "ead_en": {"beta": 0.1},
}

ONE_MODEL_ONE_ATTACK = {
    "seed": 0, "device": "cpu", "dataset": "synthetic",
    "datasets": {"synthetic": {"n_train": 200, "n_test": 100, "size": 12, "channels": 1, "num_classes": 4}},
    "training": {"val_size": 50, "epochs": 1},
    "models": {"good_init": {}},
    "inputs": {"n": 4},
    "attack_sets": {"good_init": ["fgsm"]},
}


def load_alone(path: Path) -> dict:
    """The config the workflow runs for ``--configfile path``: that file alone, with the schema's defaults."""
    config = yaml.safe_load(path.read_text())
    validate(config, schema=str(REPO / "schemas" / "config.schema.yaml"))
    return config


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_paper_preset_resolves_to_the_papers_settings():
    resolved = resolve(load_alone(REPO / "configs" / "paper-cifar10.yaml"))
    assert resolved["dataset"] == "cifar10" and resolved["inputs"]["n"] == 200
    assert resolved["models"]["distilled"]["temperature"] == 40.0
    assert resolved["models"]["compressed"]["target_ratio"] == pytest.approx(890411 / 1071542, rel=1e-3)
    for attack, expected in PAPER_ATTACKS.items():
        for key, value in expected.items():
            assert resolved["attacks"][attack][key] == pytest.approx(value), (attack, key)
    assert resolved["departs_from_paper"] == []


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_value_a_preset_states_is_the_value_it_runs(preset):
    """Each model's and attack's resolved settings hold exactly what the preset file says; nothing from
    config.yaml or elsewhere overrides or adds to them."""
    stated = yaml.safe_load(preset.read_text())
    resolved = resolve(load_alone(preset))
    for model, settings in (stated.get("models") or {}).items():
        for key, value in (settings or {}).items():
            expected = list(value) if key == "members" else value
            assert resolved["models"][model][key] == expected, (preset.name, model, key)
        for key, value in (stated.get("training") or {}).items():
            if model != "ensemble" and key not in (settings or {}):
                assert resolved["models"][model][key] == value, (preset.name, model, key)
    for attack, settings in (stated.get("attacks") or {}).items():
        if attack in resolved["attacks"]:
            for key, value in settings.items():
                assert resolved["attacks"][attack][key] == value, (preset.name, attack, key)
    for section in ("inputs", "trajectories", "mi", "report"):
        for key, value in _leaves(stated.get(section) or {}):
            assert resolved[section][key] == value, (preset.name, section, key)
    assert resolved["attack_sets"] == {t: a for t, a in stated["attack_sets"].items() if a}
    for block in ("defense", "perturbations"):  # the defense stage's and seed 001's settings, as stated
        for key, value in _leaves(stated.get(block) or {}):
            node = resolved[block]
            for part in key.split("."):
                node = node[part]
            assert node == value, (preset.name, block, key)


def test_tiny_preset_states_the_budgets_it_runs():
    """The tiny run's L∞ budgets come from its own file (they used to come from config.yaml, and only
    when Snakemake started in the repository)."""
    resolved = resolve(load_alone(REPO / "configs" / "tiny.yaml"))
    assert resolved["attacks"]["fgsm"] == {"epsilon": 0.2}
    assert resolved["attacks"]["igsm"] == {"epsilon": 0.2, "alpha": 0.02, "steps": 10}
    assert resolved["attacks"]["jsma"] == {"theta": 1.0, "gamma": 0.1}


def test_departures_from_the_paper_are_named_with_both_values():
    config = load_alone(REPO / "config.yaml")
    departures = paper_departures(config)
    assert "attacks.fgsm.epsilon = 0.2 (paper: 0.025)" in departures
    assert "attacks.jsma.theta = 1 (paper: 0.1)" in departures
    assert "dataset = fashion_mnist (paper: cifar10)" in departures
    assert not any(d.startswith("models.compressed.target_ratio") for d in departures)  # 0.831 states the ratio
    # Only the attacks a run uses count.
    config["attack_sets"] = {"good_init": ["cw"]}
    assert not any(d.startswith("attacks.") for d in paper_departures(config))
    assert set(PAPER_SETTINGS) >= {"attacks.fgsm.epsilon", "attacks.jsma.theta", "inputs.n"}


def test_a_preset_replaces_config_yaml_wherever_snakemake_starts(tmp_path):
    """One model and one attack plan only their jobs, whether Snakemake starts in an empty directory or
    in the repository (where config.yaml lies); without --configfile, config.yaml is read from beside
    the Snakefile in both."""
    preset = tmp_path / "one.yaml"
    preset.write_text(yaml.safe_dump(ONE_MODEL_ONE_ATTACK))
    expected = {"prepare_data": 1, "train_model": 1, "select_normal_train": 1, "select_inputs": 1, "attack": 1, "control": 1,
                "attack_tables": 1, "features": 4, "mi": 4, "aggregate": 4, "report": 1, "all": 1}
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    assert planned_jobs(snakemake("-n", "--configfile", str(preset), workdir=elsewhere)) == expected
    # Where a config.yaml lies in the directory Snakemake runs in (the repository root, as a user
    # starts it): still only the preset.
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "config.yaml").write_text((REPO / "config.yaml").read_text())
    assert planned_jobs(snakemake("-n", "--configfile", str(preset), workdir=beside)) == expected
    default = planned_jobs(snakemake("-n", workdir=elsewhere))
    assert default["train_model"] == 3 and default["attack"] == 22  # config.yaml's whole study


def test_resolved_config_is_written_and_a_different_one_is_kept(tmp_path):
    config = load_alone(REPO / "configs" / "tiny.yaml")
    target = tmp_path / "results" / "config.resolved.yaml"
    assert write_resolved(target, resolve(config)) is None
    assert yaml.safe_load(target.read_text())["attacks"]["fgsm"] == {"epsilon": 0.2}
    assert write_resolved(target, resolve(config)) is None  # same settings: nothing kept, nothing new
    changed = copy.deepcopy(config)
    changed["attacks"]["fgsm"]["epsilon"] = 0.1
    kept = write_resolved(target, resolve(changed))
    assert kept is not None and yaml.safe_load(kept.read_text())["attacks"]["fgsm"] == {"epsilon": 0.2}
    assert yaml.safe_load(target.read_text())["attacks"]["fgsm"] == {"epsilon": 0.1}
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, kept.name])


def test_the_gpu_preset_plans_every_stage_at_the_papers_scale(tmp_path):
    """configs/gpu.yaml (issue 31): its dry run plans every stage of the study, the defense stage with its adaptive
    attacks and seed 001, from a fresh folder; its GPU jobs ask for GPU memory (profiles/local shares the GPU)."""
    preset = REPO / "configs" / "gpu.yaml"
    stated = yaml.safe_load(preset.read_text())
    assert stated["inputs"]["n"] == 200 and stated["trajectories"]["n"] >= 20 and stated["defense"]["n"] == 1000
    assert stated["training"]["patience"] and stated["models"]["distilled"]["temperature"] == 100
    planned = planned_jobs(snakemake("-n", "--configfile", str(preset), workdir=tmp_path))
    for rule in ("prepare_data", "train_model", "train_distillation_teacher", "distill", "compress", "ensemble",
                 "select_inputs", "attack", "control", "jsma_trajectories", "features", "mi", "aggregate",
                 "aggregate_subsets", "attack_tables", "report", "defense_inputs", "train_autoencoder", "fit_mid",
                 "fit_detector", "defense_attack", "defense_scores", "defense_tables", "dropout_vote",
                 "adaptive_attack", "adaptive_tables", "perturbation_stats", "average_grid"):
        assert planned.get(rule, 0) >= 1, (rule, planned)
    assert planned["train_model"] == 3 and planned["adaptive_attack"] > 50
