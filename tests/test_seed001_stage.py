"""Seed 001 in the workflow (rules/perturbations.smk, advflow.perturbations.tables, advflow.report.seed001): bad settings are config
errors naming the key before any job; the tiny run writes the statistics, the grid, the dropout vote, its
vote-spread detector beside MagNet and MID, and the report section (rendered in Chromium with the rest, in
test_report_page); changing K or the dropout rate reruns only the dropout vote, the defense tables and the report;
changing M only the grid and the report."""

from __future__ import annotations

import csv
import math

import pytest
import yaml

from advflow.config import ConfigError
from advflow.defenses.settings import defense_settings
from advflow.perturbations.settings import perturbation_settings
from advflow.report.seed001 import grid_statement, summary_statement, vote_statements
from conftest import REPO, dry_run_with, snakemake

BASE = {"models": {"good_init": {}, "deep_conv": {}}}


@pytest.mark.parametrize("block, message", [
    ({"grid": {"m": 0}}, r"perturbations\.grid\.m: must be a positive integer"),
    ({"grid": {"epsilon": float("nan")}}, r"perturbations\.grid\.epsilon: must be a positive finite"),
    ({"grid": {"steps": 2.5}}, r"perturbations\.grid\.steps"),
    ({"grid": {"size": 3}}, r"perturbations\.grid\.size: unknown key"),
    ({"pair": [1, 1]}, r"perturbations\.pair: two different class indices"),
    ({"pair": [1]}, r"perturbations\.pair"),
    ({"model": "ensemble"}, r"perturbations\.model: 'ensemble' is not among"),
    ({"colour": 1}, r"perturbations\.colour: unknown key"),
])
def test_bad_perturbation_settings_are_config_errors_naming_the_key(block, message):
    with pytest.raises(ConfigError, match=message):
        perturbation_settings({**BASE, "perturbations": block})


@pytest.mark.parametrize("vote, message", [
    ({"k": 0}, r"defense\.dropout_vote\.k"), ({"k": True}, r"defense\.dropout_vote\.k"),
    ({"rate": 1.0}, r"defense\.dropout_vote\.rate"), ({"rate": float("nan")}, r"defense\.dropout_vote\.rate"),
    ({"rate": -0.2}, r"defense\.dropout_vote\.rate"), ({"votes": 3}, r"defense\.dropout_vote: unknown key"),
])
def test_bad_dropout_vote_settings_are_config_errors_naming_the_key(vote, message):
    with pytest.raises(ConfigError, match=message):
        defense_settings({**BASE, "defense": {"dropout_vote": vote}})
    assert defense_settings({**BASE, "defense": {"dropout_vote": {"k": 3, "rate": 0.0}}})["dropout_vote"]["k"] == 3


def test_a_bad_grid_setting_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["perturbations"]["grid"]["m"] = -1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "bad.yaml", workdir=tmp_path, check=False)
    assert result.returncode != 0 and "perturbations.grid.m" in result.stdout + result.stderr


def test_the_statements_say_what_the_grid_and_the_vote_show():
    rows = [{"original": 0.0, "adversarial": 1.0, "successes": 3.0, "attempted": 4.0},
            {"original": 1.0, "adversarial": 0.0, "successes": 0.0, "attempted": 4.0}]
    text = grid_statement(rows)
    assert "reached 3 of 8" in text and "1 of 2 class pairs" in text and "0 → 1 (3 of 4)" in text
    votes = [{"set": "clean", "kind": "clean", "inputs": 100.0, "successful": 0.0, "accuracy": 0.9,
              "accuracy_low": 0.83, "accuracy_high": 0.95, "undefended_accuracy": 0.92, "mean_spread": 0.05,
              "restored": math.nan, "restored_low": math.nan, "restored_high": math.nan,
              "control_mean_spread": math.nan},
             {"set": "pgd_eps0.1", "kind": "defense sweep", "inputs": 30.0, "successful": 20.0, "accuracy": 0.5,
              "accuracy_low": 0.3, "accuracy_high": 0.7, "undefended_accuracy": 0.33, "mean_spread": 0.3,
              "restored": 0.7, "restored_low": 0.48, "restored_high": 0.85, "control_mean_spread": 0.1}]
    said = " ".join(vote_statements(votes))
    assert "90.0 % [83.0 %, 95.0 %]" in said and "70.0 % (pgd_eps0.1, n = 20)" in said
    assert "on 0 of 1 sets the 95 % interval lies above one half" in said and "on 1 of 1 sweep sets" in said
    assert "not measured" in " ".join(vote_statements(votes[:1]))
    assert "reached none of its 8" in grid_statement([{**r, "successes": 0.0} for r in rows])
    many = [{"set": f"s{k}", "of": of, "inputs": 0.0 if k == 9 else 5.0, "mean": 0.0, "std": 0.1, "max": 0.2,
             "min": -0.2} for k in range(10) for of in ("perturbations", "original images")]
    said = summary_statement(many)
    assert "s7: perturbation std 0.100" in said and "s8:" not in said and "… 1 more sets in the table" in said
    assert "No successful input, so no statistics: s9." in said


# ---------------------------------------------------------------------------------------------------------
# The tiny run


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_tiny_run_writes_seed_001s_statistics_grid_dropout_vote_and_report_section(tiny_run):
    root = tiny_run / "results" / "synthetic"
    summary = _rows(root / "seed001" / "perturbations" / "summary.csv")
    assert {r["set"] for r in summary} >= {"fgsm@good_init", "pgd_eps0.1", "cw_kappa10"}
    assert {r["of"] for r in summary} == {"adversarial images", "perturbations", "original images"}
    success = _rows(root / "seed001" / "grid" / "grid_success.csv")
    assert len(success) == 4 * 3 and all(int(r["attempted"]) == 2 for r in success)  # synthetic: 4 classes, M = 2
    for name in ("grid", "grid_perturbation", "pixels"):
        assert (root / "seed001" / "grid" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    votes = {r["set"]: r for r in _rows(root / "defense" / "dropout" / "dropout_vote.csv")}
    assert {"validation", "clean", "pgd_eps0.1", "fgsm@good_init"} <= set(votes)
    detectors = {r["detector"] for r in _rows(root / "defense" / "tables" / "detectors.csv")}
    assert "dropout_vote" in detectors and {"magnet_l1", "mid"} <= detectors
    thresholds = {r["detector"]: r["role"] for r in _rows(root / "defense" / "tables" / "thresholds.csv")}
    assert thresholds["dropout_vote"] == "compared" and thresholds["mid"] == "defense"
    page = (root / "report.html").read_text()
    assert '<section id="seed001"' in page and 'href="#seed001"' in page
    assert 'data-table="dropout_vote.csv"' in page and "What the numbers show" in page


#: The vote, the tables that read it and the adaptive attacks on the vote (the tiny config's 4 sets against it).
VOTE_RERUN = {"dropout_vote": 1, "defense_tables": 1, "report": 1, "all": 1, "adaptive_attack": 4,
              "adaptive_tables": 1}


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    (lambda c: c["defense"]["dropout_vote"].update(k=7), VOTE_RERUN),
    (lambda c: c["defense"]["dropout_vote"].update(rate=0.3), VOTE_RERUN),
    (lambda c: c["perturbations"]["grid"].update(m=3), {"average_grid": 1, "report": 1, "all": 1}),
])
def test_changing_k_the_rate_or_m_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, expected):
    assert dry_run_with(tiny_run, tmp_path, change) == expected
