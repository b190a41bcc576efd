"""The adaptive attacks' tables (advflow.defenses.adaptive_stage.adaptive_rows) against a direct computation, and the
report's statements on them (advflow.report.adaptive): defended accuracy beside transfer, detection power kept or
lost per budget, the sanity checks said."""

from __future__ import annotations


import numpy as np
import pytest

from advflow.defenses.adaptive_stage import MASKING, adaptive_rows, transfer_outcome
from advflow.information.shifts import wilson

N = 10
SETTINGS = {"detectors": ["magnet_l1", "mid"], "compared": ["lid"], "reformer": True,
            "fpr": {"magnet_l1": 0.001, "mid": 0.005, "lid": 0.005},
            "adaptive": {"n": N, "targets": ["undefended", "defense", "lid"], "attacks": ["pgd"]}}
LIMITS = {"magnet_l1": 1.0, "mid": 1.0, "lid": 1.0}


def adaptive_set(target, strength, success, flagged, longer=False, guards=()):
    success, flagged = np.asarray(success, bool), np.asarray(flagged, bool)
    scores = {g: np.where(flagged, 2.0, 0.0) for g in guards}
    return {"target": target, "attack": "pgd", "strength": strength, "longer": longer, "success": success,
            "fooled": success | flagged, "flagged": flagged, "labels": np.zeros(N, int), "indices": np.arange(N),
            "margin": np.zeros(N), "scores": scores, "surrogate": {g: v + 0.1 for g, v in scores.items()},
            "clean_scores": {g: np.zeros(N) for g in guards}, "clean_surrogate": {g: np.zeros(N) for g in guards},
            "thresholds": {g: 1.0 for g in guards}, "surrogates": {g: "exact" for g in guards}, "system": ""}


def transfer_table(prediction, reformed, scores):
    n = len(prediction)
    return {"index": np.arange(n), "label": np.zeros(n, int), "prediction": np.asarray(prediction),
            "reformed_prediction": np.asarray(reformed), "success": np.asarray(prediction) != 0,
            **{f"score_{d}": np.asarray(v, float) for d, v in scores.items()}}


def test_adaptive_rows_equal_a_direct_computation():
    flag3 = np.arange(N) < 3
    sets = [adaptive_set("undefended", 0.3, np.ones(N), np.zeros(N)),
            adaptive_set("undefended", 0.5, np.ones(N), np.zeros(N)),
            adaptive_set("undefended", 0.5, np.ones(N), np.zeros(N), longer=True),
            adaptive_set("defense", 0.3, ~flag3, flag3, guards=("magnet_l1", "mid")),
            adaptive_set("defense", 0.5, np.arange(N) >= 1, np.arange(N) < 1, guards=("magnet_l1", "mid")),
            adaptive_set("defense", 0.5, np.arange(N) >= 1, np.arange(N) < 1, longer=True, guards=("magnet_l1", "mid")),
            adaptive_set("lid", 0.3, np.zeros(N), np.zeros(N), guards=("lid",)),
            adaptive_set("lid", 0.5, np.zeros(N), np.zeros(N), guards=("lid",)),
            adaptive_set("lid", 0.5, np.arange(N) < 4, np.zeros(N), longer=True, guards=("lid",))]
    # transfer: 12 seeds (only the first N count); the reformer restores seeds 0-4, magnet_l1 flags seeds 5-6
    transfer = {("pgd", 0.3): transfer_table(np.ones(12, int), np.r_[np.zeros(5, int), np.ones(7, int)],
                                             {"magnet_l1": np.r_[np.zeros(5), 2, 2, np.zeros(5)],
                                              "mid": np.zeros(12), "lid": np.r_[2, np.zeros(11)]})}
    tables = adaptive_rows(sets, transfer, SETTINGS, LIMITS)
    row = next(r for r in tables["adaptive.csv"] if r["target"] == "defense" and r["strength"] == 0.3)
    assert row["success"] == pytest.approx(0.7) and row["defended_accuracy"] == pytest.approx(0.3)
    assert (row["defended_accuracy_low"], row["defended_accuracy_high"]) == pytest.approx(wilson(0.3, N))
    assert row["detection"] == pytest.approx(0.3) and row["reformer"] == "yes"
    # transfer on the first N seeds: fooled after the reformer on 5..9, flagged 5, 6 -> success 7, 8, 9
    assert row["transfer_defended_accuracy"] == pytest.approx(0.7)
    assert row["transfer_detection"] == pytest.approx(0.2) and row["masking"] == ""
    lid = next(r for r in tables["adaptive.csv"] if r["target"] == "lid" and r["strength"] == 0.3)
    assert lid["transfer_defended_accuracy"] == pytest.approx(0.1)  # no reformer: all fooled, seed 0 flagged
    # lid's adaptive success 0 of 10 against the undefended 10 of 10: the masking flag, in both tables
    assert lid["masking"] == MASKING
    checks = {(r["target"], r["attack"]): r for r in tables["adaptive_checks.csv"]}
    assert checks["lid", "pgd"]["masking"] == MASKING and checks["defense", "pgd"]["masking"] == "no"
    assert checks["lid", "pgd"]["gained"] == 4 and checks["lid", "pgd"]["convergence"] == "not converged"
    assert checks["defense", "pgd"]["convergence"] == "converged"
    assert checks["undefended", "pgd"]["undefended_reaches_all"] == "yes"
    guards = {(r["target"], r["guard"], r["strength"]): r for r in tables["adaptive_guards.csv"]
              if r["longer"] == "no"}
    assert guards["defense", "mid", 0.3]["detection"] == pytest.approx(0.3)
    assert guards["defense", "mid", 0.3]["fitting"] == "unsupervised (clean data only)"
    assert guards["defense", "mid", 0.3]["threat"].startswith("adaptive (white-box")
    assert guards["defense", "magnet_l1", 0.3]["transfer_detection"] == pytest.approx(0.2)
    assert {r["inputs"] for r in tables["adaptive_surrogates.csv"]} == {"clean seeds", "adaptive adversarial"}


def test_transfer_outcome_reads_the_vote_s_plurality_for_the_vote():
    settings = {**SETTINGS, "compared": ["dropout_vote"], "fpr": {**SETTINGS["fpr"], "dropout_vote": 0.005}}
    table = transfer_table(np.ones(N, int), np.ones(N, int), {"dropout_vote": np.zeros(N)})
    plurality = np.r_[np.zeros(6, int), np.ones(4, int)]
    out = transfer_outcome(table, "dropout_vote", settings, {"dropout_vote": 0.5}, N, plurality)
    assert out["success"].tolist() == [False] * 6 + [True] * 4


def test_the_report_says_where_a_detector_keeps_detection_power_and_from_which_budget_it_falls():
    from advflow.report.adaptive import accuracy_statements, check_statements, detection_statements

    def guard(strength, rate, low, high):
        return {"target": "lid", "guard": "lid", "attack": "pgd", "strength": strength, "longer": "no",
                "detection": rate, "detection_low": low, "detection_high": high}

    said = detection_statements([guard(0.1, 0.6, 0.3, 0.8), guard(0.3, 0.2, 0.05, 0.5), guard(0.5, 0.0, 0.0, 0.3)],
                                {"lid": 0.005})
    assert said == ["lid against PGD (L∞) that knows it keeps detection power up to ε = 0.3 (detection 20.0 % "
                    "[5.0 %, 50.0 %]) and falls from ε = 0.5 (detection 0.0 % [0.0 %, 30.0 %], its FPR 0.5 %)."]
    bumpy = detection_statements([guard(0.1, 0.0, 0.0, 0.3), guard(0.3, 0.2, 0.05, 0.5)], {"lid": 0.005})
    assert "keeps detection power at ε = 0.3 and not at ε = 0.1" in bumpy[0] and "not monotone" in bumpy[0]
    none = detection_statements([guard(0.1, 0.0, 0.0, 0.3)], {"lid": 0.005})
    assert "keeps no detection power at any budget tried" in none[0]
    rows = [{"target": "defense", "guards": "magnet_l1 + mid", "reformer": "yes", "attack": "pgd", "strength": 0.3,
             "longer": "no", "n": 10, "defended_accuracy": 0.3, "defended_accuracy_low": 0.1,
             "defended_accuracy_high": 0.6, "transfer_defended_accuracy": 0.7, "transfer_defended_accuracy_low": 0.4,
             "transfer_defended_accuracy_high": 0.9}]
    assert accuracy_statements(rows) == [
        "defense (magnet_l1 + mid, reformer), defended accuracy under its adaptive attack, n = 10: PGD (L∞): ε = 0.3: "
        "30.0 % [10.0 %, 60.0 %] (transfer 70.0 % [40.0 %, 90.0 %])."]
    checks = [{"target": "undefended", "attack": "pgd", "strength": 0.5, "undefended_success": 1.0,
               "undefended_success_low": 0.7, "undefended_success_high": 1.0, "undefended_reaches_all": "yes",
               "convergence": "converged", "gained": 0, "masking": "no"},
              {"target": "lid", "attack": "pgd", "strength": 0.5, "convergence": "not converged", "gained": 4,
               "masking": MASKING}]
    text = " ".join(check_statements(checks, []))
    assert "reaches 100 %: yes" in text and "converged on 1 of 2" in text and "lid pgd (+4 seeds)" in text
    assert "Possible gradient masking or optimisation failure" in text and "lid pgd" in text
