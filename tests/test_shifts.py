"""Paired, standardized shifts and their bootstrap intervals (advflow.information.shifts): the interval covers a planted
shift, a zero shift is inconclusive, a planted shift in either direction holds or fails; layers without
spread drop out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advflow.information import shifts
from advflow.information.shifts import FAILS, HOLDS, INCONCLUSIVE, Interval

N, K = 50, 5
RESAMPLES = 1000


def _planted(rng: np.random.Generator, delta: float, n: int = N) -> np.ndarray:
    """Standardized paired differences (n, K) whose true per-layer mean is ``delta`` (unit noise)."""
    return delta + rng.standard_normal((n, K))


def test_interval_covers_a_planted_shift_in_at_least_90_percent_of_50_draws():
    delta = 0.8
    covered = 0
    for draw in range(50):
        deltas = _planted(np.random.default_rng(draw), delta)
        result = shifts.paired_bootstrap(lambda i: {"shift": shifts.shift(deltas[i])}, N, resamples=RESAMPLES,
                                         seed=draw)["shift"]
        covered += result.lower <= delta <= result.upper
    assert covered >= 45, f"covered the planted shift in {covered} of 50 draws"


def test_a_zero_shift_difference_is_inconclusive():
    """Attack and control drawn from the same distribution: the difference of their shifts straddles 0."""
    inconclusive = 0
    for draw in range(50):
        rng = np.random.default_rng(100 + draw)
        attack, control = _planted(rng, 0.3), _planted(rng, 0.3)
        result = shifts.paired_bootstrap(lambda i: {"d": shifts.shift(attack[i]) - shifts.shift(control[i])}, N,
                                         resamples=RESAMPLES, seed=draw)["d"]
        inconclusive += shifts.decide(result) == INCONCLUSIVE
    assert inconclusive >= 45, f"only {inconclusive} of 50 equal-shift draws were inconclusive"
    same = _planted(np.random.default_rng(1), 0.3)
    exact = shifts.paired_bootstrap(lambda i: {"d": shifts.shift(same[i]) - shifts.shift(same[i])}, N,
                                    resamples=RESAMPLES, seed=0)["d"]
    assert shifts.decide(exact) == INCONCLUSIVE


@pytest.mark.parametrize(("attack_delta", "control_delta", "verdict"), [(1.0, 0.0, HOLDS), (0.0, 1.0, FAILS)])
def test_a_planted_shift_in_either_direction_holds_or_fails(attack_delta, control_delta, verdict):
    rng = np.random.default_rng(5)
    attack, control = _planted(rng, attack_delta), _planted(rng, control_delta)
    result = shifts.paired_bootstrap(lambda i: {"d": shifts.shift(attack[i]) - shifts.shift(control[i])}, N,
                                     resamples=RESAMPLES, seed=0)["d"]
    assert shifts.decide(result) == verdict


def test_bootstrap_is_seeded_and_keeps_the_pairing():
    rng = np.random.default_rng(2)
    a = _planted(rng, 0.5)
    b = a + 0.25  # paired: b - a is exactly 0.25 on every input
    stats = lambda i: {"a": shifts.shift(a[i]), "b": shifts.shift(b[i]),  # noqa: E731
                       "mean_diff": float((b[i] - a[i]).mean())}
    first = shifts.paired_bootstrap(stats, N, resamples=200, seed=9)
    again = shifts.paired_bootstrap(stats, N, resamples=200, seed=9)
    other = shifts.paired_bootstrap(stats, N, resamples=200, seed=10)
    assert first == again and first != other
    assert first["mean_diff"].lower == pytest.approx(0.25) and first["mean_diff"].upper == pytest.approx(0.25)


def test_layer_scale_is_the_normal_spread_and_zero_spread_layers_drop_out():
    normal = np.array([[0.1, 0.0, 2.0], [0.3, 0.0, 4.0], [0.2, 0.0, 3.0]])
    scale = shifts.layer_scale(normal)
    assert scale[0] == pytest.approx(0.1) and math.isnan(scale[1]) and scale[2] == pytest.approx(1.0)
    adv, seed = np.array([[0.3, 0.0, 5.0]]), np.array([[0.1, 0.0, 3.0]])
    d = shifts.standardized(adv, seed, scale)
    assert d[0, 0] == pytest.approx(2.0) and d[0, 2] == pytest.approx(2.0)
    assert shifts.shift(d) == pytest.approx(2.0)  # the zero-spread layer is left out, not counted as 0
    assert math.isnan(shifts.shift(np.full((3, 2), math.nan)))


def test_shift_is_the_mean_over_layers_of_the_absolute_mean_difference():
    d = np.array([[1.0, -2.0], [3.0, -4.0]])
    assert shifts.shift(d) == pytest.approx((2.0 + 3.0) / 2)


def test_two_sample_bootstrap_separates_groups():
    rng = np.random.default_rng(3)
    far, near = _planted(rng, 1.0, 30), _planted(rng, 0.0, 30)
    result = shifts.two_sample_bootstrap(lambda i, j: shifts.shift(far[i]) - shifts.shift(near[j]), 30, 30,
                                         resamples=300, seed=0)
    assert shifts.decide(result) == HOLDS


def test_decide_and_combine():
    assert shifts.decide(Interval(0.2, 0.1, 0.3)) == HOLDS
    assert shifts.decide(Interval(-0.2, -0.3, -0.1)) == FAILS
    assert shifts.decide(Interval(0.0, -0.1, 0.1)) == INCONCLUSIVE
    assert shifts.decide(Interval(math.nan, math.nan, math.nan)) == INCONCLUSIVE
    assert shifts.combine([HOLDS, HOLDS]) == HOLDS
    assert shifts.combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert shifts.combine([HOLDS, FAILS]) == FAILS


def test_standardized_pairs_each_input_with_its_own_seed_not_the_mean_seed():
    """Three inputs whose seeds differ: every row's difference is taken from that row's own seed (hand-computed)."""
    adv = np.array([[1.0, 2.0], [5.0, 7.0], [3.0, 3.0]])
    seed = np.array([[0.0, 1.0], [4.0, 4.0], [1.0, 0.0]])  # mean seed (5/3, 5/3) differs from every row's
    scale = np.array([2.0, 0.5])
    expected = np.array([[(1 - 0) / 2, (2 - 1) / 0.5],
                         [(5 - 4) / 2, (7 - 4) / 0.5],
                         [(3 - 1) / 2, (3 - 0) / 0.5]])  # [[0.5, 2], [0.5, 6], [1, 6]]
    np.testing.assert_allclose(shifts.standardized(adv, seed, scale), expected, rtol=0, atol=1e-12)
    # the shift of these rows: layer 0 |mean| = 2/3, layer 1 = 14/3; mean over layers = 8/3
    assert shifts.shift(shifts.standardized(adv, seed, scale)) == pytest.approx(8 / 3)
    # a paired set that equals its seeds row by row has zero shift, whatever the seeds' spread
    assert shifts.shift(shifts.standardized(seed, seed, scale)) == 0.0


def test_shift_takes_the_absolute_value_of_the_mean_not_the_mean_of_absolute_values():
    """Differences that cancel within a layer give no shift (mean over inputs first, then |.|)."""
    d = np.array([[1.0, 3.0], [-1.0, 1.0]])
    assert shifts.shift(d) == pytest.approx((0.0 + 2.0) / 2)


def test_decide_at_the_boundary_an_interval_touching_zero_is_inconclusive():
    """"Holds" needs the interval to lie strictly above 0, "fails" strictly below: an end at exactly 0 decides
    nothing."""
    assert shifts.decide(Interval(0.1, 0.0, 0.2)) == INCONCLUSIVE
    assert shifts.decide(Interval(-0.1, -0.2, 0.0)) == INCONCLUSIVE
    assert shifts.decide(Interval(0.1, 1e-12, 0.2)) == HOLDS
    assert shifts.decide(Interval(-0.1, -0.2, -1e-12)) == FAILS
    assert shifts.decide(Interval(0.1, math.nan, 0.2)) == INCONCLUSIVE


def test_paired_interval_has_the_width_of_a_95_percent_interval_of_a_mean():
    """The percentile interval of a mean of n unit-variance inputs is about 2 * 1.96 / sqrt(n) wide (not the width
    of a 90 % or 99 % interval), averaged over draws."""
    n, widths = 60, []
    for draw in range(20):
        x = np.random.default_rng(300 + draw).standard_normal(n)
        interval = shifts.paired_bootstrap(lambda i: {"m": float(x[i].mean())}, n, resamples=1000, seed=draw)["m"]
        widths.append((interval.upper - interval.lower) / x.std(ddof=1))
    expected = 2 * 1.959964 / math.sqrt(n)
    assert np.mean(widths) == pytest.approx(expected, rel=0.06), (np.mean(widths), expected)


def test_two_sample_bootstrap_resamples_the_two_groups_independently():
    """Two groups correlated by position (b_i = a_i + small noise): the difference of their means has bootstrap
    standard error sqrt(var_a / n_a + var_b / n_b) only when each group is resampled on its own; resampling both
    with the same indices would cancel the shared part and give a far narrower interval."""
    n = 40
    rng = np.random.default_rng(21)
    a = rng.normal(0.0, 1.0, n)
    b = a + rng.normal(0.0, 0.05, n) - 0.3
    seen = []

    def statistic(i: np.ndarray, j: np.ndarray) -> float:
        seen.append((i.copy(), j.copy()))
        return float(a[i].mean() - b[j].mean())

    interval = shifts.two_sample_bootstrap(statistic, n, n, resamples=2000, seed=4)
    assert interval.estimate == pytest.approx(a.mean() - b.mean())
    standard_error = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
    width = interval.upper - interval.lower
    assert width == pytest.approx(2 * 1.959964 * standard_error, rel=0.12), (width, standard_error)
    resampled = seen[1:]  # the first call is the estimate on the data
    assert len(resampled) == 2000
    assert sum(np.array_equal(i, j) for i, j in resampled) == 0
    # and the resampled indices of the two groups are uncorrelated draws: their index means barely correlate
    means_i = np.array([i.mean() for i, _ in resampled])
    means_j = np.array([j.mean() for _, j in resampled])
    assert abs(np.corrcoef(means_i, means_j)[0, 1]) < 0.1


def test_two_sample_interval_covers_a_planted_difference_of_group_means():
    """Coverage against a known truth: groups N(0.5, 1) and N(0, 1), difference 0.5, covered in about 95 % of
    draws (at least 34 of 40, far fewer for a too-narrow interval)."""
    covered = 0
    for draw in range(40):
        rng = np.random.default_rng(500 + draw)
        a, b = rng.normal(0.5, 1.0, 30), rng.normal(0.0, 1.0, 25)
        interval = shifts.two_sample_bootstrap(lambda i, j: float(a[i].mean() - b[j].mean()), 30, 25,
                                               resamples=400, seed=draw)
        covered += interval.lower <= 0.5 <= interval.upper
    assert covered >= 34, f"covered the planted difference in {covered} of 40 draws"


def test_a_layer_of_identical_nonzero_values_has_no_spread():
    """A column of 0.1s has a computed std of about 1e-17 (rounding), not 0: it still carries no information and
    must drop out (NaN), or every delta on it would be divided by 1e-17."""
    normal = np.column_stack([np.full(80, 0.1), np.full(80, 0.7), np.linspace(0.0, 1.0, 80), np.zeros(80)])
    scale = shifts.layer_scale(normal)
    assert math.isnan(scale[0]) and math.isnan(scale[1]) and math.isnan(scale[3])
    assert scale[2] == pytest.approx(np.linspace(0.0, 1.0, 80).std(ddof=1))
    assert math.isnan(shifts.layer_scale(np.array([[0.1, 0.2]]))[0])  # one input: no spread to compute


def test_bootstrap_draws_every_input_uniformly_with_replacement():
    """Each of the n inputs, the first and the last included, is drawn with probability 1/n in every position."""
    index = shifts.bootstrap_indices(5, resamples=4000, seed=3)
    assert index.shape == (4000, 5) and index.min() == 0 and index.max() == 4
    shares = np.bincount(index.ravel(), minlength=5) / index.size
    np.testing.assert_allclose(shares, 0.2, atol=4 * math.sqrt(0.2 * 0.8 / index.size))
    assert (shifts.bootstrap_indices(1, resamples=10, seed=0) == 0).all()
    # with replacement: some resample repeats an input (all 4000 permutations would be absurd)
    assert np.mean([np.unique(row).size < 5 for row in index]) == pytest.approx(1 - 120 / 5 ** 5, abs=0.03)
