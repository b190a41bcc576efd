"""Defense metrics (advflow.defenses.metrics; docs/method.md, "Defenses and detectors", "Metrics"; seed 003, Tables 1-2): the
defense rate is the share of adversarial inputs flagged by a detector or classified correctly after the reformer,
over attacked or successful inputs; clean accuracy without the defense minus what the detectors and the reformer
cost plus what the reformer gains is the accuracy with it; thresholds follow the FPRs; AUC, TPR at 1 % / 5 % FPR and
ROC equal scikit-learn's; score tables round-trip through CSV; tables carry the seed's numbers; figures render."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from advflow.defenses import metrics as m
from advflow.workflow.io import DamagedFileError

pytestmark = pytest.mark.usefixtures("one_thread")

LIMITS = {"l1": 0.5, "mid": 0.5}


def table(label, prediction, reformed, scores: dict[str, list[float]], margin=None) -> dict[str, np.ndarray]:
    label, prediction = np.asarray(label), np.asarray(prediction)
    n = label.size
    return {"index": np.arange(n), "label": label, "prediction": prediction, "success": prediction != label,
            "reformed_prediction": np.asarray(reformed),
            "margin": np.full(n, np.nan) if margin is None else np.asarray(margin, dtype=np.float64),
            **{f"score_{name}": np.asarray(values, dtype=np.float64) for name, values in scores.items()}}


def random_table(rng: np.random.Generator, n: int, detectors=("l1", "mid"), margin=None) -> dict[str, np.ndarray]:
    label = rng.integers(0, 10, n)
    prediction = np.where(rng.random(n) < 0.7, label, rng.integers(0, 10, n))
    reformed = np.where(rng.random(n) < 0.6, label, rng.integers(0, 10, n))
    return table(label, prediction, reformed, {d: rng.random(n) for d in detectors}, margin)


# Six adversarial inputs, label 0: 0 flagged by l1 only, 1 by mid only, 2 reformed right, 3 neither (fooled after
# the reformer), 4 neither, 5 attack failed (prediction right) but the reformer gets it wrong and nothing flags it.
HAND = table(label=[0] * 6, prediction=[1, 2, 3, 4, 5, 0], reformed=[1, 2, 0, 4, 5, 7],
             scores={"l1": [0.9, 0.1, 0.2, 0.3, 0.1, 0.4], "mid": [0.0, 0.8, 0.1, 0.2, 0.3, 0.1]})


def test_defense_rate_is_flagged_or_right_after_the_reformer_over_both_denominators():
    assert m.defended(HAND, LIMITS, ["l1", "mid"]).tolist() == [True, True, True, False, False, False]
    assert m.defense_rate(HAND, LIMITS, ["l1", "mid"], over="attacked") == (0.5, 6)
    assert m.defense_rate(HAND, LIMITS, ["l1", "mid"], over="successful") == (3 / 5, 5)
    assert m.defense_rate(HAND, LIMITS, ["l1"], over="attacked") == (2 / 6, 6)
    # without the reformer the plain prediction counts: input 5 (attack failed) is defended, input 2 is not
    assert m.defended(HAND, LIMITS, ["l1", "mid"], reformer=False).tolist() == [True, True, False, False, False, True]
    nobody = {**HAND, "success": np.zeros(6, dtype=bool)}
    assert math.isnan(m.defense_rate(nobody, LIMITS, ["l1"], over="successful")[0])
    assert m.defense_rate(nobody, LIMITS, ["l1"], over="successful")[1] == 0
    with pytest.raises(ValueError, match="no threshold for detector magnet_l2"):
        m.defended(HAND, LIMITS, ["magnet_l2"])
    with pytest.raises(ValueError, match="'attacked'"):
        m.defense_rate(HAND, LIMITS, ["l1"], over="all")


def assert_adds_up(accuracy: dict) -> None:
    assert math.isclose(accuracy["without"] - accuracy["lost_to_detectors"] - accuracy["lost_to_reformer"]
                        + accuracy["gained_by_reformer"], accuracy["with_defense"], abs_tol=1e-12)


def test_clean_accuracy_without_minus_losses_plus_gains_is_with_the_defense():
    # 0 right, kept; 1 right, flagged; 2 right, reformer breaks it; 3 wrong, reformer fixes it; 4 wrong, flagged
    clean = table(label=[0, 1, 2, 3, 4], prediction=[0, 1, 2, 9, 9], reformed=[0, 1, 9, 3, 9],
                  scores={"l1": [0.1, 0.9, 0.1, 0.1, 0.7], "mid": [0.1] * 5})
    accuracy = m.clean_accuracy(clean, LIMITS, ["l1", "mid"])
    assert accuracy == {"without": 0.6, "with_defense": 0.4, "lost_to_detectors": 0.2, "lost_to_reformer": 0.2,
                        "gained_by_reformer": 0.2, "n": 5}
    assert_adds_up(accuracy)
    plain = m.clean_accuracy(clean, LIMITS, ["l1", "mid"], reformer=False)
    assert plain["with_defense"] == 0.4 and plain["lost_to_reformer"] == plain["gained_by_reformer"] == 0
    rng = np.random.default_rng(1)
    for reformer in (True, False):
        assert_adds_up(m.clean_accuracy(random_table(rng, 997), {"l1": 0.9, "mid": 0.8}, ["l1", "mid"],
                                        reformer=reformer))


def test_thresholds_follow_the_fprs_and_name_the_detectors_there_are():
    rng = np.random.default_rng(2)
    validation, test = random_table(rng, 20_000), random_table(rng, 20_000)
    fprs = {"l1": 0.05, "mid": 0.01}
    limits = m.thresholds(validation, fprs)
    for detector, fpr in fprs.items():
        share = m.any_flagged(test, limits, [detector]).mean()
        assert abs(share - fpr) <= 4 * math.sqrt(fpr * (1 - fpr) * 2 / 20_000), (detector, share)
    with pytest.raises(ValueError, match="no column score_magnet_l2; the detectors here are: l1, mid"):
        m.thresholds(validation, {"magnet_l2": 0.001})


def test_auc_is_one_when_separated_and_one_half_for_one_distribution_and_equals_sklearn():
    rng = np.random.default_rng(3)
    clean = table([0] * 2000, [0] * 2000, [0] * 2000, {"d": rng.random(2000)})
    far = table([0] * 1000, [1] * 1000, [1] * 1000, {"d": 2 + rng.random(1000)})
    same = table([0] * 2000, [1] * 2000, [1] * 2000, {"d": rng.random(2000)})
    separated = m.detector_metrics(clean, far, "d")
    assert {k: separated[k] for k in ("auc", "auc_low", "auc_high", "tpr_at_1", "tpr_at_5", "n_adversarial",
                                      "n_clean", "note")} == {
        "auc": 1.0, "auc_low": 1.0, "auc_high": 1.0, "tpr_at_1": 1.0, "tpr_at_5": 1.0, "n_adversarial": 1000,
        "n_clean": 2000, "note": ""}
    assert separated["tpr_at_5_low"] == pytest.approx(m.wilson(1.0, 1000)[0]) and separated["tpr_at_5_high"] == 1.0
    half = m.detector_metrics(clean, same, "d")
    assert abs(half["auc"] - 0.5) < 4 * math.sqrt((1 / 2000 + 1 / 2000 + 1 / 4000) / 12)  # Mann-Whitney's SE
    assert abs(half["tpr_at_5"] - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 1000) + 0.01
    ties = table([0] * 300, [1] * 300, [1] * 300, {"d": rng.integers(0, 5, 300).astype(float)})
    clean_ties = table([0] * 200, [0] * 200, [0] * 200, {"d": rng.integers(0, 4, 200).astype(float)})
    truth = np.r_[np.ones(300), np.zeros(200)]
    both = np.r_[ties["score_d"], clean_ties["score_d"]]
    assert math.isclose(m.detector_metrics(clean_ties, ties, "d")["auc"], sk.roc_auc_score(truth, both), rel_tol=1e-12)
    fpr, tpr = m.roc_curve(clean_ties, ties, "d")
    sk_fpr, sk_tpr, _ = sk.roc_curve(truth, both, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)


def test_wilson_interval_is_the_score_interval_and_handles_no_trials():
    low, high = m.wilson(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert m.wilson(0.0, 30)[0] == 0.0 and 0.10 < m.wilson(0.0, 30)[1] < 0.12  # no zero-width interval at 0
    assert all(math.isnan(v) for v in m.wilson(0.5, 0))


def test_auc_interval_is_the_percentile_bootstrap_of_resampled_clean_and_adversarial_inputs():
    rng = np.random.default_rng(11)
    clean, adversarial = rng.normal(0, 1, 40), rng.normal(0.8, 1, 25)
    low, high = m.auc_interval(clean, adversarial, resamples=300, seed=5)
    draws = np.random.default_rng([5, 25, 40])
    by_adversarial, by_clean = draws.integers(0, 25, (300, 25)), draws.integers(0, 40, (300, 40))
    aucs = [m.roc_auc(clean[c], adversarial[a]) for a, c in zip(by_adversarial, by_clean)]
    assert (low, high) == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])), abs=1e-12)
    assert m.auc_interval(clean, adversarial, resamples=300, seed=5) == (low, high)  # seeded
    truth = 0.5 + 0.5 * math.erf(0.8 / 2)  # P(X > Y) for N(0.8, 1) vs N(0, 1): Phi(0.8 / sqrt 2)
    covered = 0
    for repeat in range(60):
        rng = np.random.default_rng(100 + repeat)
        low, high = m.auc_interval(rng.normal(0, 1, 60), rng.normal(0.8, 1, 30), resamples=400, seed=repeat)
        covered += low <= truth <= high
    assert covered >= 50  # about 95 % of 60; 50 or more unless the interval is far too narrow
    assert all(math.isnan(v) for v in m.auc_interval(clean, adversarial[:0]))


def with_control(scores: dict[str, np.ndarray], control_scores: dict[str, np.ndarray],
                 control_prediction: np.ndarray) -> dict[str, np.ndarray]:
    return {**scores, "control_prediction": control_prediction, "control_reformed_prediction": control_prediction,
            **{f"control_score_{d}": np.asarray(v, dtype=np.float64) for d, v in control_scores.items()}}


def test_a_detector_is_judged_against_the_random_control_of_the_same_size():
    rng = np.random.default_rng(12)
    clean = table([0] * 400, [0] * 400, [0] * 400, {"noise": rng.normal(0, 1, 400), "adv": rng.normal(0, 1, 400)})
    attacked = table([0] * 60, [1] * 60, [1] * 60, {"noise": rng.normal(3, 1, 60), "adv": rng.normal(3, 1, 60)})
    # "noise" flags any perturbation (its control scores as high as the attack); "adv" only the attack.
    scored = with_control(attacked, {"noise": rng.normal(3, 1, 60), "adv": rng.normal(0, 1, 60)}, np.zeros(60, int))
    noise, adv = (m.detector_metrics(clean, scored, d, resamples=300) for d in ("noise", "adv"))
    assert noise["vs_control"] == "inconclusive" and noise["control_auc"] > 0.9
    assert adv["vs_control"] == "above control" and abs(adv["control_auc"] - 0.5) < 0.15
    assert adv["control_tpr_at_5"] < 0.2 < noise["control_tpr_at_5"]
    assert m.vs_control(0.2, 0.3, 0.5, 0.6) == "below control" and m.vs_control(0.2, math.nan, 0.5, 0.6) == "n/a"
    view = m.control_view(scored)
    assert view["prediction"].tolist() == [0] * 60 and view["success"].all()
    assert m.detectors_in(view) == ["noise", "adv"]
    row = m.table1_rows({("pgd", 0.1): scored}, {"noise": 2.0, "adv": 2.0}, ["adv"])[0]
    assert row["flagged"] == pytest.approx((attacked["score_adv"] > 2.0).mean())
    assert row["control_flagged"] == pytest.approx((scored["control_score_adv"] > 2.0).mean())
    assert row["flagged_low"] <= row["flagged"] <= row["flagged_high"]
    assert row["defense_rate_attacked_low"] <= row["defense_rate_attacked"] <= row["defense_rate_attacked_high"]
    assert math.isnan(m.table1_rows({("pgd", 0.1): attacked}, {"adv": 2.0}, ["adv"])[0]["control_flagged"])
    with pytest.raises(ValueError, match="no random control"):
        m.control_view(attacked)


def test_no_successful_input_gives_a_note_not_a_number():
    failed = {**HAND, "success": np.zeros(6, dtype=bool)}
    metrics = m.detector_metrics(HAND, failed, "l1", over="successful")
    assert metrics["note"] == "n/a (no successful adversarial input)" and metrics["n_adversarial"] == 0
    assert all(math.isnan(metrics[key]) for key in ("auc", "auc_low", "auc_high", "tpr_at_1", "tpr_at_5"))
    assert m.format_metric(metrics["auc"], metrics["note"]) == "n/a (no successful adversarial input)"
    assert m.format_metric(0.98765, "") == "0.988"
    assert m.format_metric(1 / 3, "", rate=True) == "33.3 %"


def test_score_tables_round_trip_exactly_and_bad_files_name_file_and_column(tmp_path):
    scores = random_table(np.random.default_rng(4), 50, margin=np.random.default_rng(5).normal(size=50) / 3)
    scores["margin"][:5] = np.nan
    path = tmp_path / "scores.csv"
    m.write_scores(path, scores)
    back = m.read_scores(path)
    assert list(back) == list(scores) and m.detectors_in(back) == ["l1", "mid"]
    for name, values in scores.items():
        assert back[name].dtype == values.dtype, name
        np.testing.assert_array_equal(back[name], values)
    text = path.read_text().splitlines()
    (tmp_path / "no_margin.csv").write_text("\n".join(line.rsplit(",", 3)[0] for line in text))  # margin, scores cut
    # A damaged table is moved aside (kept as .damaged) so the next run scores the set again.
    with pytest.raises(DamagedFileError, match=r"no_margin\.csv: damaged \(missing column\(s\) margin.*rule defense_scores"):
        m.read_scores(tmp_path / "no_margin.csv")
    assert (tmp_path / "no_margin.csv.damaged").exists() and not (tmp_path / "no_margin.csv").exists()
    (tmp_path / "nan.csv").write_text("\n".join(text[:3] + [text[3].rsplit(",", 1)[0] + ",nan"] + text[4:]))
    with pytest.raises(DamagedFileError, match=r"nan\.csv: damaged \(column score_mid has 1 NaN"):
        m.read_scores(tmp_path / "nan.csv")
    # Cut at a row boundary: whole on its own, short against the set it scored.
    (tmp_path / "cut.csv").write_text("\n".join(text[:26]) + "\n")
    assert m.read_scores(tmp_path / "cut.csv")["index"].size == 25
    with pytest.raises(DamagedFileError, match=r"cut\.csv: damaged \(25 rows where the scored set has 50 inputs"):
        m.read_scores(tmp_path / "cut.csv", rows=50)
    (tmp_path / "short.csv").write_text("\n".join(text[:10] + [text[10][:12]]))
    with pytest.raises(DamagedFileError, match=r"short\.csv: damaged \(line 11 has \d fields, the header has"):
        m.read_scores(tmp_path / "short.csv")
    with pytest.raises(ValueError, match=r"out\.csv: column score_l1 has 1 NaN"):
        m.write_scores(tmp_path / "out.csv", {**scores, "score_l1": np.r_[np.nan, scores["score_l1"][1:]]})
    assert not (tmp_path / "out.csv").exists()


def sweep(rng: np.random.Generator, strengths: dict[str, list[float]]) -> dict:
    return {(attack, s): random_table(rng, 40, margin=rng.normal(s, 5, 40)) for attack, values in strengths.items()
            for s in values}


def test_tables_carry_the_seed_numbers_at_their_strength_and_count_reached_margins():
    rng = np.random.default_rng(6)
    rows1 = m.table1_rows(sweep(rng, {"bim": [0.5, 0.2], "pgd": [0.05, 0.45, 0.6]}), LIMITS, ["l1", "mid"])
    assert [(r["attack"], r["epsilon"]) for r in rows1] == [("pgd", 0.05), ("pgd", 0.45), ("pgd", 0.6), ("bim", 0.2),
                                                            ("bim", 0.5)]
    assert [r["seed003"] for r in rows1[:2] + rows1[3:]] == [77.2, 84.1, 84.5, 84.8] and math.isnan(rows1[2]["seed003"])
    assert m.SEED_TABLE1_ORDER_UNCERTAIN and "order" in m.SEED_TABLE1_CAVEAT
    sets = sweep(rng, {"cw": [0, 40], "ead_en": [15], "ead_l1": [5]})
    rows2 = m.table2_rows(sets, LIMITS, ["l1"])
    assert [(r["attack"], r["kappa"], r["seed003"]) for r in rows2] == [
        ("cw", 0, 88.4), ("cw", 40, 56.9), ("ead_l1", 5, 82.7), ("ead_en", 15, 73.3)]
    for row in rows2:
        margin = sets[row["attack"], row["kappa"]]["margin"]
        assert row["reached_kappa"] == int((margin >= row["kappa"]).sum()) and 0 < row["reached_kappa"] < 40
        assert row["defense_rate_attacked"] == m.defense_rate(sets[row["attack"], row["kappa"]], LIMITS, ["l1"])[0]
    assert m.table2_rows({("cw", 10): table([0, 0], [1, 1], [1, 1], {"l1": [0, 0]}, [10.0, 9.99])}, LIMITS,
                         ["l1"])[0]["reached_kappa"] == 1
    with pytest.raises(ValueError, match="attack.* pgd do not belong"):
        m.table2_rows({("pgd", 0.1): HAND}, LIMITS, ["l1"])
    rows = m.detector_rows(random_table(rng, 30), sets, ["l1", "mid"])
    assert len(rows) == 2 * 4 * 2 and {r["over"] for r in rows} == {"attacked", "successful"}


def test_both_figures_render_to_png_with_a_pdf():
    rng = np.random.default_rng(7)
    sets = sweep(rng, {"pgd": [0.1, 0.3], "bim": [0.1], "cw": [0, 20], "ead_l1": [0]})
    t1 = m.table1_rows({k: v for k, v in sets.items() if k[0] in m.EPSILON_ATTACKS}, LIMITS, ["l1"])
    t2 = m.table2_rows({k: v for k, v in sets.items() if k[0] in m.KAPPA_ATTACKS}, LIMITS, ["l1"])
    figures = [m.defense_rate_figure(t1, t2, dpi=40), m.roc_figure(random_table(rng, 60), sets, ["l1", "mid"], dpi=40)]
    for figure in figures:
        assert figure.name.endswith(".png") and "all attacked inputs" in figure.caption
        assert figure.image.startswith(b"\x89PNG\r\n\x1a\n") and figure.image.pdf.startswith(b"%PDF")
    assert "order" in figures[0].caption


@pytest.mark.parametrize(("low", "high", "control_low", "control_high", "expected"), [
    (0.71, 0.90, 0.50, 0.70, "above control"),   # lower bound just above the control's upper bound
    (0.70, 0.90, 0.50, 0.70, "inconclusive"),    # touching at the boundary: the intervals overlap in one point
    (0.60, 0.90, 0.50, 0.70, "inconclusive"),    # lower bound between the control's bounds: overlap
    (0.50, 0.90, 0.50, 0.70, "inconclusive"),    # lower bound at the control's lower bound
    (0.55, 0.65, 0.50, 0.70, "inconclusive"),    # inside the control's interval
    (0.40, 0.80, 0.50, 0.70, "inconclusive"),    # containing it
    (0.30, 0.49, 0.50, 0.70, "below control"),   # upper bound just below the control's lower bound
    (0.30, 0.50, 0.50, 0.70, "inconclusive"),    # touching from below
    (0.30, 0.60, 0.50, 0.70, "inconclusive"),    # upper bound between the control's bounds
    (0.30, 0.70, 0.50, 0.70, "inconclusive"),    # upper bound at the control's upper bound
    (math.nan, 0.9, 0.5, 0.7, "n/a"), (0.7, 0.9, 0.5, math.inf, "n/a"),
])
def test_vs_control_is_above_only_when_the_whole_interval_clears_the_controls(low, high, control_low, control_high,
                                                                               expected):
    """Above control: the AUC's lower bound exceeds the control's UPPER bound (the 95 % intervals do not overlap);
    below: the upper bound lies under the control's lower bound; any overlap, a shared end included, is
    inconclusive."""
    assert m.vs_control(low, high, control_low, control_high) == expected


def _wilson_by_scipy(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


def test_defense_rate_intervals_are_wilson_intervals_over_their_own_denominator():
    """20 attacked inputs, 8 of them successful: the rate over the successful inputs has a Wilson interval over 8
    trials, the rate over all attacked inputs over 20 (both checked against scipy's Wilson interval)."""
    n, successful = 20, np.arange(20) < 8
    label = np.zeros(n, dtype=int)
    prediction = np.where(successful, 1, 0)
    # defended: flagged by l1 (score > 0.5) or right after the reformer
    flagged = np.isin(np.arange(n), [0, 1, 2, 10, 11])   # 3 successful and 2 failed inputs flagged
    reformed_right = np.isin(np.arange(n), [3, 12, 13, 14, 15, 16])  # 1 successful, 5 failed
    reformed = np.where(reformed_right, 0, 5)
    scores = table(label, prediction, reformed, {"l1": np.where(flagged, 0.9, 0.1), "mid": np.zeros(n)})
    row = m.table1_rows({("pgd", 0.1): scores}, LIMITS, ["l1"])[0]
    assert row["inputs"] == 20 and row["successful"] == 8
    assert row["defense_rate_successful"] == pytest.approx(4 / 8)
    assert row["defense_rate_attacked"] == pytest.approx(11 / 20)
    expected_successful, expected_attacked = _wilson_by_scipy(4, 8), _wilson_by_scipy(11, 20)
    assert (row["defense_rate_successful_low"], row["defense_rate_successful_high"]) == pytest.approx(
        expected_successful, abs=1e-6)
    assert (row["defense_rate_attacked_low"], row["defense_rate_attacked_high"]) == pytest.approx(
        expected_attacked, abs=1e-6)
    assert (row["flagged_low"], row["flagged_high"]) == pytest.approx(_wilson_by_scipy(5, 20), abs=1e-6)
    # the successful-input interval is the wider one: 8 trials, not 20
    assert (row["defense_rate_successful_high"] - row["defense_rate_successful_low"]
            > row["defense_rate_attacked_high"] - row["defense_rate_attacked_low"] + 0.1)


def test_tpr_intervals_over_the_successful_inputs_are_wilson_intervals_over_those_inputs():
    """TPR over the successful inputs (7 of 30): its Wilson interval is over 7 trials, checked against scipy."""
    clean = table([0] * 100, [0] * 100, [0] * 100, {"d": np.linspace(0.0, 1.0, 100)})
    successful = np.arange(30) < 7
    scores = np.where(np.isin(np.arange(30), [0, 1, 2, 20, 21]), 5.0, -1.0)  # 3 of the 7 successful flagged
    attacked = table([0] * 30, np.where(successful, 1, 0), [0] * 30, {"d": scores})
    over_successful = m.detector_metrics(clean, attacked, "d", over="successful", resamples=50)
    assert over_successful["n_adversarial"] == 7 and over_successful["tpr_at_5"] == pytest.approx(3 / 7)
    assert (over_successful["tpr_at_5_low"], over_successful["tpr_at_5_high"]) == pytest.approx(
        _wilson_by_scipy(3, 7), abs=1e-6)
    over_attacked = m.detector_metrics(clean, attacked, "d", over="attacked", resamples=50)
    assert over_attacked["n_adversarial"] == 30 and over_attacked["tpr_at_1"] == pytest.approx(5 / 30)
    assert (over_attacked["tpr_at_1_low"], over_attacked["tpr_at_1_high"]) == pytest.approx(
        _wilson_by_scipy(5, 30), abs=1e-6)


def test_wilson_interval_covers_a_known_proportion_in_about_95_percent_of_draws():
    """Coverage against a known truth: p = 0.3 over n = 40 trials, 400 draws."""
    rng = np.random.default_rng(31)
    covered = 0
    for successes in rng.binomial(40, 0.3, 400):
        low, high = m.wilson(successes / 40, 40)
        covered += low <= 0.3 <= high
    assert 0.91 <= covered / 400 <= 0.99, covered


def test_tprs_are_the_shares_flagged_above_the_1_and_5_percent_clean_thresholds_counted_by_hand():
    """Clean scores 0, 1, ..., 99: at most one clean score lies above the 1 % threshold (98 or 99) and at most five
    above the 5 % one (94 or 95), so the adversarial and control scores below, none in between, are counted by hand."""
    clean = table([0] * 100, [0] * 100, [0] * 100, {"d": np.arange(100.0)})
    adversarial = [120.0, 110.0, 97.0, 96.5, 90.0, 80.0, 50.0, 10.0]  # 2 above 1 %, 4 above 5 %
    control = [130.0, 96.5, 97.0, 10.0, 10.0, 10.0, 10.0, 10.0]  # 1 above 1 %, 3 above 5 %
    prediction = [1, 0, 1, 1, 0, 1, 1, 1]  # label 0: the attack succeeded on 6 of 8
    scored = with_control(table([0] * 8, prediction, [0] * 8, {"d": adversarial}), {"d": control}, np.zeros(8, int))
    attacked = m.detector_metrics(clean, scored, "d", resamples=50)
    assert (attacked["tpr_at_1"], attacked["tpr_at_5"], attacked["control_tpr_at_5"]) == (2 / 8, 4 / 8, 3 / 8)
    assert (attacked["n_adversarial"], attacked["n_clean"]) == (8, 100)
    # Over the successful inputs only: 120, 97, 96.5, 80, 50, 10 and their controls 130, 97, 10, 10, 10, 10.
    successful = m.detector_metrics(clean, scored, "d", over="successful", resamples=50)
    assert (successful["tpr_at_1"], successful["tpr_at_5"], successful["control_tpr_at_5"]) == (1 / 6, 3 / 6, 2 / 6)
    assert successful["n_adversarial"] == 6


def test_defense_tables_set_thresholds_on_validation_and_judge_the_defense_by_its_own_detectors(tmp_path):
    """write_defense_tables end to end on hand-made score tables: l1 (the defense, FPR 5 %) and mid (compared only,
    FPR 1 %). Validation scores 0..99 put l1's threshold in [94, 95] and mid's in [98, 99]; the clean set's l1 scores
    (0, 2, ..., 198) would put it near 190, so each expected number below tells the two apart, and tells whether mid
    (which flags clean inputs 0..9 and sweep input 3) wrongly joined the defense."""
    from advflow.defenses.tables import write_defense_tables

    ones = np.zeros(100, int)
    validation = table(ones, ones, ones, {"l1": np.arange(100.0), "mid": np.arange(100.0)})
    clean = table(ones, ones, ones, {"l1": 2.0 * np.arange(100), "mid": np.r_[np.full(10, 200.0), np.zeros(90)]})
    # label 0; inputs 0-2 fool the classifier, input 2 is right after the reformer; l1 flags 0 and 1.
    pgd = table([0] * 4, [1, 1, 1, 0], [1, 1, 0, 1], {"l1": [200.0, 96.0, 50.0, 10.0], "mid": [0.0, 0.0, 0.0, 500.0]})
    cw = table([0] * 2, [1, 0], [0, 0], {"l1": [10.0, 10.0], "mid": [0.0, 0.0]}, margin=[6.0, -1.0])
    paths = {}
    for name, scores in (("validation", validation), ("clean", clean), ("pgd_eps0.1", pgd), ("cw_kappa5", cw)):
        paths[name] = tmp_path / f"{name}.csv"
        m.write_scores(paths[name], scores)
    settings = {"detectors": ["l1"], "compared": ["mid"], "reformer": True, "fpr": {"l1": 0.05, "mid": 0.01},
                "attacks": ["pgd", "cw"], "epsilons": [0.1], "kappas": [5]}
    tables = write_defense_tables(paths["validation"], paths["clean"], [paths["pgd_eps0.1"], paths["cw_kappa5"]],
                                  settings, tables_dir=tmp_path / "tables", figures_dir=tmp_path / "figures", dpi=30,
                                  resamples=20)
    limits = {row["detector"]: row for row in tables["thresholds.csv"]}
    assert 94 <= limits["l1"]["threshold"] <= 95 and 98 <= limits["mid"]["threshold"] <= 99
    assert (limits["l1"]["role"], limits["mid"]["role"], limits["l1"]["validation_images"]) == ("defense",
                                                                                               "compared", 100)
    (row1,) = tables["table1_defense_rate.csv"]
    assert (row1["attack"], row1["epsilon"], row1["inputs"], row1["successful"]) == ("pgd", 0.1, 4, 3)
    assert row1["defense_rate_attacked"] == 3 / 4 and row1["defense_rate_successful"] == 1.0
    assert row1["flagged"] == 2 / 4
    (row2,) = tables["table2_defense_rate.csv"]
    assert (row2["attack"], row2["kappa"], row2["reached_kappa"], row2["defense_rate_attacked"]) == ("cw", 5, 1, 1.0)
    accuracy = tables["clean_accuracy.csv"][0]
    # l1 flags the clean inputs with 2 i > ~95, i >= 48: 52 of 100; everything else is right.
    assert (accuracy["without"], accuracy["with_defense"], accuracy["lost_to_detectors"]) == (1.0, 0.48, 0.52)
    assert {row["detector"] for row in tables["detectors.csv"]} == {"l1", "mid"}
    for name in ("thresholds.csv", "table1_defense_rate.csv", "table2_defense_rate.csv", "clean_accuracy.csv",
                 "detectors.csv"):
        assert (tmp_path / "tables" / name).is_file()
