"""The detector interface (advflow.defenses): a threshold set at FPR p on clean validation scores flags a share p of
independent clean inputs; false-positive rates outside (0, 1) and scores that are empty or not finite are refused;
pixels and model space convert both ways; a detector without state refuses one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advflow.defenses import Detector, check_fpr, flagged, from_pixels, threshold, to_pixels

VALIDATION, TEST = 20_000, 200_000


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05])
@pytest.mark.parametrize("distribution", ["normal", "exponential"])
def test_a_threshold_at_fpr_p_flags_a_share_p_of_independent_clean_inputs(fpr, distribution):
    """Within 4 standard errors of a binomial share, counting both samples: the flagged share of the test sample
    varies with it (p (1 - p) / TEST) and with the threshold, whose coverage varies like a share of the
    validation sample (p (1 - p) / VALIDATION)."""
    rng = np.random.default_rng(int(fpr * 1000))
    draw = getattr(rng, f"standard_{distribution}")
    limit = threshold(draw(VALIDATION), fpr)
    share = flagged(draw(TEST), limit).mean()
    standard_error = math.sqrt(fpr * (1 - fpr) * (1 / VALIDATION + 1 / TEST))
    assert abs(share - fpr) <= 4 * standard_error, f"flagged {share:.5f} of clean inputs at FPR {fpr}"


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05, 0.5])
def test_on_the_validation_scores_themselves_a_threshold_flags_at_most_a_share_p(fpr):
    scores = np.random.default_rng(0).standard_normal(VALIDATION)
    share = flagged(scores, threshold(scores, fpr)).mean()
    assert fpr - 2 / VALIDATION <= share <= fpr
    ties = np.repeat(np.arange(10.0), 100)  # heavy ties: never more than p
    assert flagged(ties, threshold(ties, fpr)).mean() <= fpr


def test_flagged_means_strictly_above_the_threshold():
    assert flagged(np.array([0.5, 1.0, 1.5]), 1.0).tolist() == [False, False, True]


@pytest.mark.parametrize("fpr", [0, 1, -0.1, 1.5, float("nan"), float("inf"), "a", None, True])
def test_check_fpr_rejects_values_outside_the_open_unit_interval(fpr):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        check_fpr(fpr)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        threshold(np.arange(10.0), fpr)


@pytest.mark.parametrize("fpr", [0.005, "0.05", np.float32(0.25)])
def test_check_fpr_accepts_numbers_in_the_open_unit_interval(fpr):
    assert check_fpr(fpr) == float(fpr)


@pytest.mark.parametrize("scores", [np.array([]), np.array([0.1, np.nan, 0.3]), np.array([0.1, np.inf]),
                                    [-np.inf, 1.0]])
def test_threshold_rejects_empty_or_non_finite_scores(scores):
    with pytest.raises(ValueError, match="finite scores"):
        threshold(scores, 0.01)


def test_pixels_and_model_space_convert_both_ways():
    x = torch.linspace(-1, 1, 11)
    assert to_pixels(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]
    torch.testing.assert_close(from_pixels(to_pixels(x)), x)


def test_a_detector_without_state_refuses_a_state():
    class Constant(Detector):
        name = "constant"

        def score(self, x: torch.Tensor) -> np.ndarray:
            return np.zeros(len(x))

    detector = Constant()
    assert detector.state_dict() == {}
    detector.load_state_dict({})
    with pytest.raises(ValueError, match="constant keeps no state"):
        detector.load_state_dict({"weights": torch.zeros(1)})
    with pytest.raises(TypeError):
        Detector()  # score is abstract


def test_a_nan_score_is_an_error_not_a_clean_input():
    with pytest.raises(ValueError, match="NaN"):
        flagged(np.array([0.1, np.nan]), 0.5)
    assert flagged(np.array([0.1, np.inf]), 0.5).tolist() == [False, True]


def test_on_a_small_validation_set_a_threshold_never_flags_more_than_a_share_p():
    """Ten distinct scores 1..10 at FPR 15 %: at most 1.5 of them may lie above the threshold, so it is 9 (only 10
    above it); 8 would flag two, 20 %. Every small sample and FPR: the share flagged is at most p."""
    assert threshold(np.arange(1.0, 11.0), 0.15) == 9.0
    assert flagged(np.arange(1.0, 11.0), threshold(np.arange(1.0, 11.0), 0.15)).sum() == 1
    rng = np.random.default_rng(5)
    for n in range(2, 40):
        scores = rng.permutation(np.arange(float(n)))
        for fpr in (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.33, 0.5, 0.9):
            assert flagged(scores, threshold(scores, fpr)).mean() <= fpr, (n, fpr)
