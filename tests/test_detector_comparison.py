"""Comparing detectors (advflow.defenses.comparison): the supervised layer combination and its held-out seeds, the
worst case over attacks, and the paired-bootstrap ranking."""

from __future__ import annotations

import time

import numpy as np
import pytest

from advflow.defenses import flagged
from advflow.defenses.comparison import (SupervisedCombiner, compare, cross_fit_scores, fold_seeds, pair_rows,
                                         paired_auc_difference,
                                         rank_detectors, seen_or_unseen, split_seeds, worst_case_auc,
                                         worst_case_detected, worst_case_scores, worst_case_seeds, worst_case_tpr)
from advflow.defenses.metrics import auc_interval, roc_auc
from advflow.information.shifts import wilson


def layer_values(n: int, layers: int, shift: float, rng: np.random.Generator) -> np.ndarray:
    """(n, layers) values; only layer 2 carries ``shift``."""
    values = rng.normal(size=(n, layers))
    values[:, 2] += shift
    return values


# --- supervised combination --------------------------------------------------------------------------------------

def test_split_seeds_is_disjoint_complete_and_seeded():
    train, score = split_seeds(101, fraction=0.3, seed=4)
    assert np.intersect1d(train, score).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, score])), np.arange(101))
    assert train.size == 30
    again = split_seeds(101, fraction=0.3, seed=4)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], score)
    assert not np.array_equal(split_seeds(101, fraction=0.3, seed=5)[0], train)
    with pytest.raises(ValueError, match="fraction"):
        split_seeds(10, fraction=1.0, seed=0)


def test_combiner_refuses_the_seeds_it_trained_on_and_labels_seen_and_unseen():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    n = 60
    clean, adversarial = layer_values(n, 4, 0.0, rng), layer_values(n, 4, 2.0, rng)
    train, score = split_seeds(n, seed=1)
    combiner = SupervisedCombiner(random_state=0).fit(clean[train], adversarial[train], seeds=train, attack="pgd",
                                                      control_values=layer_values(train.size, 4, 0.0, rng))
    assert np.array_equal(combiner.trained["seeds"], train) and combiner.attack == "pgd"
    assert combiner.score(adversarial[score], seeds=score).shape == (score.size,)
    assert combiner.score(clean[score], seeds=score).shape == (score.size,)  # the clean originals of held-out seeds
    mixed = np.sort(np.r_[score[:3], train[:2]])
    with pytest.raises(ValueError, match=rf"trained on seeds .*{train[0]}"):
        combiner.score(adversarial[mixed], seeds=mixed)
    assert seen_or_unseen(combiner, "pgd") == "seen"
    assert seen_or_unseen(combiner, "cw") == "unseen"
    with pytest.raises(ValueError, match="not fitted"):
        seen_or_unseen(SupervisedCombiner(), "pgd")


def test_combiner_with_a_separate_clean_pool_refuses_its_trained_clean_images():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(1)
    pool = layer_values(40, 3, 0.0, rng)
    adversarial = layer_values(30, 3, 2.0, rng)
    clean_train, clean_score = split_seeds(40, seed=2)
    train, score = split_seeds(30, seed=3)
    with pytest.raises(ValueError, match="clean_seeds"):
        SupervisedCombiner().fit(pool[clean_train], adversarial[train], seeds=train, attack="bim", clean_pool="clean")
    combiner = SupervisedCombiner().fit(pool[clean_train], adversarial[train], seeds=train, attack="bim",
                                        clean_seeds=clean_train, clean_pool="clean")
    combiner.score(pool[clean_score], seeds=clean_score, pool="clean")
    with pytest.raises(ValueError, match="trained on clean"):
        combiner.score(pool[clean_train[:2]], seeds=clean_train[:2], pool="clean")


def test_combiner_finds_the_shifted_layer_on_held_out_seeds():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    n, layers = 400, 6
    clean, adversarial = layer_values(n, layers, 0.0, rng), layer_values(n, layers, 2.5, rng)
    train, score = split_seeds(n, seed=0)
    combiner = SupervisedCombiner(random_state=0).fit(clean[train], adversarial[train], seeds=train, attack="pgd")
    auc = roc_auc(combiner.score(clean[score], seeds=score), combiner.score(adversarial[score], seeds=score))
    assert auc > 0.9
    weights = combiner.pipeline.named_steps["regression"].coef_.ravel()
    assert np.argmax(np.abs(weights)) == 2


def test_fold_seeds_cover_every_seed_once_and_train_on_the_rest():
    folds = fold_seeds(23, folds=5, seed=3)
    assert len(folds) == 5
    held = np.concatenate([score for _, score in folds])
    assert np.array_equal(np.sort(held), np.arange(23))  # every seed scored exactly once
    for train, score in folds:
        assert np.intersect1d(train, score).size == 0
        assert np.array_equal(np.sort(np.r_[train, score]), np.arange(23))
        assert score.size in (4, 5)
    assert len(fold_seeds(3, folds=5, seed=0)) == 3
    with pytest.raises(ValueError, match="at least 2"):
        fold_seeds(10, folds=1, seed=0)


def test_cross_fitting_scores_every_seed_by_a_combiner_that_never_trained_on_it():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(5)
    n, m = 30, 40
    clean, adversarial = layer_values(m, 3, 0.0, rng), layer_values(n, 3, 2.0, rng)
    other = layer_values(n, 3, 0.5, rng)
    clean_scores, scored = cross_fit_scores(clean, adversarial, {"pgd": adversarial, "cw": other}, attack="pgd",
                                            folds=5, seed=7)
    assert clean_scores.shape == (m,) and np.isfinite(clean_scores).all()
    assert all(np.isfinite(v).all() and v.shape == (n,) for v in scored.values())
    # each fold's scores are those of a combiner fitted on the other folds only
    for (train, held), (clean_train, clean_held) in zip(fold_seeds(n, folds=5, seed=7), fold_seeds(m, folds=5, seed=8)):
        combiner = SupervisedCombiner().fit(clean[clean_train], adversarial[train], seeds=train, attack="pgd",
                                            clean_seeds=clean_train, clean_pool="clean")
        assert np.allclose(scored["cw"][held], combiner.score(other[held], seeds=held))
        assert np.allclose(clean_scores[clean_held], combiner.score(clean[clean_held], seeds=clean_held, pool="clean"))
        with pytest.raises(ValueError, match="trained on seeds"):
            combiner.score(other[train], seeds=train)
    assert roc_auc(clean_scores, scored["pgd"]) > 0.85


# --- worst case over attacks -------------------------------------------------------------------------------------

def test_worst_case_matches_a_direct_computation_with_and_without_the_success_mask():
    scores = {"pgd": np.array([3.0, 0.5, 2.0, 4.0, 0.1]),
              "cw": np.array([2.5, 3.0, 0.2, 5.0, 0.3])}
    success = {"pgd": np.array([True, True, False, True, False]),
               "cw": np.array([True, False, True, False, False])}
    limit = 1.0
    flags = {name: flagged(values, limit) for name, values in scores.items()}
    # attacked inputs: every version counts
    assert worst_case_detected(flags).tolist() == [True, False, False, True, False]
    assert np.array_equal(worst_case_scores(scores), [2.5, 0.5, 0.2, 4.0, 0.1])
    # successful inputs: seed 1 only pgd (0.5, missed), seed 2 only cw (0.2, missed), seed 3 only pgd (4.0),
    # seed 4 no attack succeeded: left out
    assert worst_case_detected(flags, success_by_attack=success).tolist() == [True, False, False, True, False]
    assert worst_case_seeds(success).tolist() == [True, True, True, True, False]
    worst = worst_case_scores(scores, success_by_attack=success)
    assert np.array_equal(worst[:4], [2.5, 0.5, 0.2, 4.0]) and np.isnan(worst[4])
    # a version the attacker cannot pick (unsuccessful) no longer hides a seed: seed 2's pgd version is flagged,
    # its cw version (the only successful one) is not
    flags_2 = {"pgd": np.array([True, True, True, True, True]), "cw": np.array([True, True, False, True, True])}
    assert worst_case_detected(flags_2).tolist() == [True, True, False, True, True]
    assert worst_case_detected(flags_2, success_by_attack=success).tolist() == [True, True, False, True, False]
    tpr = worst_case_tpr(scores, limit, success_by_attack=success)
    assert tpr["n"] == 4 and tpr["left_out"] == 1 and tpr["tpr"] == 0.5
    assert (tpr["tpr_low"], tpr["tpr_high"]) == wilson(0.5, 4)
    assert worst_case_tpr(scores, limit)["tpr"] == pytest.approx(2 / 5)
    clean = np.array([0.0, 0.4, 1.0, 2.6])
    result = worst_case_auc(clean, scores, success_by_attack=success, resamples=200)
    assert result["auc"] == roc_auc(clean, np.array([2.5, 0.5, 0.2, 4.0])) and result["n"] == 4


def test_worst_case_needs_the_same_seeds_for_every_attack():
    with pytest.raises(ValueError, match="different numbers of seeds"):
        worst_case_scores({"pgd": np.zeros(3), "cw": np.zeros(4)})
    with pytest.raises(ValueError, match="different numbers of seeds"):
        worst_case_detected({"pgd": np.zeros(3, bool), "cw": np.zeros(4, bool)})
    with pytest.raises(ValueError, match="success"):
        worst_case_scores({"pgd": np.zeros(3)}, success_by_attack={"cw": np.ones(3, bool)})


# --- ranking with uncertainty ------------------------------------------------------------------------------------

def test_paired_difference_estimate_and_identical_detectors_tie():
    rng = np.random.default_rng(3)
    clean_a, adv_a = rng.normal(size=150), rng.normal(0.8, size=120)
    clean_b, adv_b = rng.normal(size=150), rng.normal(0.3, size=120)
    estimate, low, high = paired_auc_difference(clean_a, adv_a, clean_b, adv_b, resamples=300, seed=1)
    assert estimate == pytest.approx(roc_auc(clean_a, adv_a) - roc_auc(clean_b, adv_b), abs=1e-12)
    assert low <= estimate <= high
    assert paired_auc_difference(clean_a, adv_a, clean_a, adv_a, resamples=300) == (0.0, 0.0, 0.0)
    assert compare(0.0, 0.0) == "tied within the interval"
    assert compare(0.01, 0.2) == "better" and compare(-0.2, -0.01) == "worse"


def test_ranking_ties_identical_detectors_and_puts_a_clearly_better_one_first():
    rng = np.random.default_rng(4)
    m, n = 300, 300
    clean = {"good": rng.normal(size=m), "weak": rng.normal(size=m)}
    adversarial = {"good": rng.normal(3.0, size=n), "weak": rng.normal(0.2, size=n)}
    clean["copy"], adversarial["copy"] = clean["weak"].copy(), adversarial["weak"].copy()
    ranking = rank_detectors(clean, adversarial, resamples=500, seed=0)
    rows = {row["detector"]: row for row in ranking}
    assert ranking[0]["detector"] == "good" and rows["good"]["rank"] == 1
    assert rows["good"]["comparisons"]["weak"]["verdict"] == "better"
    assert rows["weak"]["comparisons"]["good"]["verdict"] == "worse"
    tie = rows["weak"]["comparisons"]["copy"]
    assert (tie["difference"], tie["low"], tie["high"], tie["verdict"]) == (0.0, 0.0, 0.0, "tied within the interval")
    assert rows["weak"]["rank"] == rows["copy"]["rank"] == 2
    for name, row in rows.items():
        assert row["auc"] == roc_auc(clean[name], adversarial[name])
        assert (row["auc_low"], row["auc_high"]) == auc_interval(clean[name], adversarial[name], resamples=500, seed=0)
    pairs = pair_rows(ranking)
    assert len(pairs) == 3 and {frozenset((p["detector"], p["other"])) for p in pairs} == {
        frozenset(("good", "weak")), frozenset(("good", "copy")), frozenset(("weak", "copy"))}
    with pytest.raises(ValueError, match="different numbers of inputs"):
        rank_detectors({"a": np.zeros(3), "b": np.zeros(4)}, {"a": np.ones(2), "b": np.ones(2)})


def test_ranking_ten_detectors_on_a_thousand_inputs_is_fast():
    rng = np.random.default_rng(5)
    clean = {f"d{i}": rng.normal(size=1000) for i in range(10)}
    adversarial = {f"d{i}": rng.normal(0.1 * i, size=1000) for i in range(10)}
    start = time.perf_counter()
    ranking = rank_detectors(clean, adversarial, resamples=1000, seed=0)
    assert time.perf_counter() - start < 5.0
    assert ranking[0]["detector"] == "d9"


def _score_table(rng, n, shift, success, with_control=True):
    """A score table of n inputs with a layered detector 'd': 3 per-layer values, layer 1 shifted by ``shift``."""
    from advflow.defenses.metrics import check_table

    values = rng.normal(size=(n, 3))
    values[:, 1] += shift
    table = {"index": np.arange(n), "label": np.zeros(n, int), "prediction": np.zeros(n, int),
             "reformed_prediction": np.zeros(n, int), "success": success, "margin": np.zeros(n),
             "score_d": values.sum(1)}
    table.update({f"layer_d_l{j}": values[:, j] for j in range(3)})
    if with_control:
        control = rng.normal(size=(n, 3))
        table.update({"control_prediction": np.zeros(n, int), "control_reformed_prediction": np.zeros(n, int),
                      "control_score_d": control.sum(1), **{f"control_layer_d_l{j}": control[:, j] for j in range(3)}})
    return check_table(table)


def test_supervised_rows_train_on_one_attack_and_score_held_out_seeds_seen_and_unseen():
    from advflow.defenses.tables import supervised_rows

    rng = np.random.default_rng(0)
    n = 80
    clean = _score_table(rng, 200, 0.0, np.zeros(200, bool), with_control=False)
    sets = {("pgd", 0.3): _score_table(rng, n, 4.0, np.ones(n, bool)),
            ("bim", 0.3): _score_table(rng, n, 0.0, np.arange(n) % 2 == 0)}
    rows = supervised_rows(clean, sets, ["d"], resamples=200, seed=0)
    by = {(r["trained_on"], r["attack"], r["over"]): r for r in rows}
    seen = by[("pgd at 0.3", "pgd", "attacked")]
    assert seen["seen"] == "seen" and seen["auc"] > 0.9
    assert by[("pgd at 0.3", "bim", "attacked")]["seen"] == "unseen"
    assert 0.25 < by[("pgd at 0.3", "bim", "attacked")]["auc"] < 0.75  # no shift in bim: nothing to find
    # Cross-fitted: every seed and every clean image is scored, each by the fold's combiner that held it out.
    assert seen["n_adversarial"] == n and seen["n_clean"] == 200 and seen["folds"] == 5
    successful = by[("pgd at 0.3", "bim", "successful")]
    assert successful["n_adversarial"] == n // 2  # over the seeds bim fooled
    assert {r["trained_on"] for r in rows} == {"pgd at 0.3", "bim at 0.3"}


def test_layer_rows_judge_each_layer_against_the_attacks_random_control_paired_by_seed():
    from advflow.defenses.metrics import check_table
    from advflow.defenses.tables import layer_rows

    rng = np.random.default_rng(1)
    n = 120
    clean = _score_table(rng, 300, 0.0, np.zeros(300, bool), with_control=False)
    table = dict(_score_table(rng, n, 0.0, np.ones(n, bool)))
    table["layer_d_l0"] = rng.normal(size=n) + 1.0          # layer 0: the attack moves it a little,
    table["control_layer_d_l0"] = rng.normal(size=n) + 3.0  # its control (noise of the same size) more
    table["layer_d_l1"] = rng.normal(size=n) + 3.0          # layer 1: the attack moves it, the control does not
    table["control_layer_d_l1"] = rng.normal(size=n)
    rows = layer_rows(clean, {("pgd", 0.5): check_table(table)}, "d", resamples=300)["pgd"]
    verdict = {r["value"]: r["vs_control"] for r in rows}
    assert verdict["l0"] == "below control" and verdict["l1"] == "above control"
    first = next(r for r in rows if r["value"] == "l1")
    assert first["minus_control"] == pytest.approx(first["auc"] - first["control_auc"])
