"""Paired, standardized shifts and their bootstrap intervals (advflow.shifts): the interval covers a planted
shift, a zero shift is inconclusive, a planted shift in either direction holds or fails; layers without
spread drop out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advflow import shifts
from advflow.shifts import FAILS, HOLDS, INCONCLUSIVE, Interval

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
