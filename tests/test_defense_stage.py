"""The defense stage (advflow.defenses.settings, advflow.defenses.stage, rules/defense.smk): its config is
checked before any work, sweep sets are named and parsed one way, margins and saved MID states are read
honestly, and reruns follow the settings each rule depends on (an FPR re-tabulates, it rescores nothing)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from advflow.config import ConfigError
from advflow.defenses.settings import attack_settings, defense_settings, parse_set, strength_name, sweep_sets
from advflow.io import CorruptFileError
from conftest import REPO, dry_run_with, snakemake

BASE = {"seed": 0, "dataset": "synthetic", "models": {"good_init": {}}}


def settings_of(**block):
    return defense_settings({**BASE, "defense": block})


def test_a_config_without_a_defense_block_runs_no_defense_stage():
    assert defense_settings(BASE) is None
    assert settings_of()["detectors"] == ["magnet_l1", "magnet_l2", "mid"]  # seed 003 on Fashion-MNIST


@pytest.mark.parametrize("block, message", [
    ({"fpr": {"mid": 0}}, r"defense\.fpr\.mid: .*\(0, 1\); got 0"),
    ({"fpr": {"mid": 1.0}}, r"defense\.fpr\.mid: .*\(0, 1\)"),
    ({"fpr": {"mid": math.nan}}, r"defense\.fpr\.mid: .*\(0, 1\); got nan"),
    ({"fpr": {"mid": "a"}}, r"defense\.fpr\.mid: .*\(0, 1\)"),
    ({"fpr": {"magnet_l3": 0.01}}, r"defense\.fpr\.magnet_l3: unknown detector; allowed: magnet_l1, magnet_l2"),
    ({"detectors": ["mid", "lid"]}, r"defense\.detectors: unknown lid; allowed: magnet_l1, .*mid"),
    ({"detectors": []}, r"defense\.detectors: must be a non-empty list"),
    ({"attacks": ["pgd", "fgsm"]}, r"defense\.attacks: unknown fgsm; allowed: pgd, bim, cw, ead_l1, ead_en"),
    ({"epsilons": []}, r"defense\.epsilons: must be a non-empty list"),
    ({"epsilons": [0.1, 2.0]}, r"defense\.epsilons: 2\.0 is out of range"),
    ({"kappas": [-5]}, r"defense\.kappas: -5 is out of range"),
    ({"classifier": "resnet"}, r"defense\.classifier: 'resnet' is not a model of the zoo; allowed: good_init"),
    ({"classifier": "vgg_like"}, r"defense\.classifier: vgg_like is not among the config's models"),
    ({"n": 0}, r"defense\.n: must be a positive integer"),
    ({"folds": 3}, r"defense\.folds: unknown key; allowed: classifier"),
])
def test_bad_defense_settings_are_config_errors_naming_the_key_and_the_allowed_values(block, message):
    with pytest.raises(ConfigError, match=message):
        settings_of(**block)


def test_sweep_sets_are_named_and_parsed_one_way_and_epsilon_doubles_in_model_space():
    settings = settings_of(attacks=["pgd", "ead_l1"], epsilons=[0.05, 0.5], kappas=[0, 15])
    assert sweep_sets(settings) == ["pgd_eps0.05", "pgd_eps0.5", "ead_l1_kappa0", "ead_l1_kappa15"]
    for name in sweep_sets(settings):
        attack, value = parse_set(name)
        assert f"{attack}_{strength_name(attack, value)}" == name
    library, own = attack_settings(settings, "pgd", 0.05)
    assert library == "pgd" and own["epsilon"] == pytest.approx(0.1)  # [0, 1] pixels -> [-1, 1]
    assert own["alpha"] == pytest.approx(settings["pgd"]["rel_stepsize"] * 0.1)
    assert attack_settings(settings, "bim", 0.2)[0] == "igsm"  # BIM is the library's IGSM
    assert attack_settings(settings, "ead_l1", 15)[1]["kappa"] == 15.0
    with pytest.raises(ValueError, match="not a sweep set"):
        parse_set("fgsm_eps0.1")


def test_margins_are_the_best_other_logit_minus_the_true_one():
    from advflow.defenses.stage import margins

    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    labels = torch.tensor([0, 0, 2])
    assert margins(logits, labels).tolist() == [-1.0, 3.0, -3.0]


def test_the_attack_and_scoring_jobs_do_not_import_lightning():
    """Lightning's import costs seconds per job; of the defense stage only the autoencoders' training needs it."""
    code = ("import sys, advflow.defenses.stage, advflow.defenses.magnet, advflow.defenses.mine, "
            "advflow.defenses.metrics; print('lightning' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert found[-1] == "False"
    code = "import sys, advflow.defenses.training; print('lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()[-1] == "True"  # the check above can fail


def test_a_sweep_sets_random_control_matches_each_inputs_perturbation_size_and_is_seeded():
    from advflow.defenses.stage import random_control

    x = torch.rand(4, 1, 6, 6) * 1.6 - 0.8
    linf = x.clone()
    linf[0] += 0.2 * torch.sign(torch.randn(1, 6, 6))
    linf[1] += 0.1
    # linf[2], linf[3]: the attack failed and left them unchanged
    control = random_control("pgd_eps0.1", "pgd", x, linf, seed=3)
    r = (torch.as_tensor(control) - x).flatten(1).abs()
    assert r[0].max() == pytest.approx(0.2, abs=1e-6) and r[1].max() == pytest.approx(0.1, abs=1e-6)
    assert r[2:].max() == 0 and not torch.equal(torch.as_tensor(control[1]), linf[1])  # random signs, not +0.1
    np.testing.assert_array_equal(control, random_control("pgd_eps0.1", "pgd", x, linf, seed=3))
    assert not np.array_equal(control, random_control("pgd_eps0.1", "pgd", x, linf, seed=4))
    l2 = x + 0.05 * torch.randn_like(x) * torch.tensor([1.0, 1.0, 0.0, 0.0]).view(4, 1, 1, 1)
    control = random_control("cw_kappa5", "cw", x, l2, seed=3)
    norms = (torch.as_tensor(control) - x).flatten(1).norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), (l2 - x).flatten(1).norm(dim=1).numpy(), atol=1e-5)


def test_a_truncated_mid_state_is_an_error_naming_the_file_and_the_rule(tmp_path):
    from advflow.defenses.stage import load_mid_state

    path = tmp_path / "mid.pt"
    torch.save({"network": {"w": torch.zeros(2)}, "references": torch.zeros(3, 4)}, path)
    assert set(load_mid_state(path)) == {"network", "references"}
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=r"mid\.pt: damaged \(not a readable MID state.*rule fit_mid"):
        load_mid_state(path)
    assert not path.exists() and path.with_name("mid.pt.damaged").exists()  # moved aside: the next run refits
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CorruptFileError, match="not a MID state"):
        load_mid_state(path)
    assert path.with_name("mid.pt.damaged.1").exists()


def test_a_bad_defense_block_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["defense"]["fpr"] = {"mid": 1.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "bad.yaml", workdir=tmp_path, check=False)
    assert result.returncode != 0
    assert "defense.fpr.mid" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# The tiny run


DEFENSE_TABLES = ("thresholds.csv", "table1_defense_rate.csv", "table2_defense_rate.csv", "clean_accuracy.csv",
                  "detectors.csv")


@pytest.mark.slow
def test_tiny_run_writes_every_defense_table_and_figure_and_the_report_section(tiny_run):
    root = tiny_run / "results" / "synthetic" / "defense"
    for name in DEFENSE_TABLES:
        assert (root / "tables" / name).is_file(), name
    for name in ("defense_rate", "defense_roc"):
        assert (root / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (root / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    page = (tiny_run / "results" / "synthetic" / "report.html").read_text()
    assert '<section id="defense"' in page and 'href="#defense"' in page
    for name in DEFENSE_TABLES:
        assert f'data-table="defense_{name}"' in page
    assert "Against seed 003" in page


SCORED = 2 + 10  # validation, clean and the tiny config's 10 sweep sets


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    # An FPR changes thresholds and tables only: nothing is rescored.
    (lambda c: c["defense"].update(fpr={"mid": 0.05}), {"defense_tables": 1, "report": 1, "all": 1}),
    # A new ε crafts and scores only its new sets (PGD and BIM); seed 001's statistics and dropout vote take them in.
    (lambda c: c["defense"].update(epsilons=[0.1, 0.3, 0.2]),
     {"defense_attack": 2, "defense_scores": 2, "defense_tables": 1, "report": 1, "all": 1, "perturbation_stats": 1,
      "dropout_vote": 1}),
    # MINE's settings refit MID and rescore; the autoencoders are not retrained.
    (lambda c: c["defense"]["mine"].update(steps=30),
     {"fit_mid": 1, "defense_scores": SCORED, "defense_tables": 1, "report": 1, "all": 1}),
    # An autoencoder setting retrains both autoencoders and what uses them, and crafts nothing.
    (lambda c: c["defense"]["autoencoder"].update(epochs=3),
     {"train_autoencoder": 2, "fit_mid": 1, "defense_scores": SCORED, "defense_tables": 1, "report": 1, "all": 1}),
])
def test_changing_one_defense_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, expected):
    assert dry_run_with(tiny_run, tmp_path, change) == expected


def test_the_comparison_with_the_seeds_numbers_counts_them_inside_below_and_above_our_intervals():
    from advflow.report.defense import comparison
    rows = [{"attack": "bim", "inputs": 100.0, "successful": 90.0, "defense_rate_attacked": r, "seed003": s}
            for r, s in ((0.84, 84.1), (0.95, 83.8), (0.60, 84.2), (0.80, math.nan))]
    text = comparison(rows, "ε")[0]
    assert "inside our 95 % interval at 1 of 3 εs, below it (ours higher) at 1, above it (ours lower) at 1" in text
    assert "90–90 of them successful" in text and "not adversarial" not in text
    failed = [{**r, "successful": 0.0} for r in rows]
    assert "No input fooled the undefended classifier" in comparison(failed, "ε")[0]
