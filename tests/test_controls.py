"""Random-perturbation controls (advflow.controls): each control has its attack's norm per input, leaves
unperturbed inputs unchanged, stays in the box and is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from advflow import controls
from advflow.adversarial import norms

import torch


def _seeds(n: int = 6) -> np.ndarray:
    """Fashion-MNIST-like inputs in [-1, 1]: half the pixels at the lower bound (background)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 1, 12, 12)).astype(np.float32)
    x[:, :, :, :6] = -1.0
    x[:, :, 0, 0] = 1.0
    return x


def _norms(v: np.ndarray) -> dict[str, np.ndarray]:
    return norms(torch.as_tensor(v))


@pytest.mark.parametrize("attack", ["fgsm", "igsm", "pgd"])
def test_linf_control_has_the_attacks_linf_norm_per_input(attack):
    x = _seeds()
    size = np.array([0.2, 0.05, 0.0, 0.3, 0.1, 0.2])
    out = controls.perturb_like(attack, x, {"linf": size}, {}, np.random.default_rng(1))
    got = _norms(out - x)["linf"]
    np.testing.assert_allclose(got, size, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1
    moved = out != x
    assert moved[1].mean() > 0.4  # every pixel moves, but those pushed past a bound are clipped


@pytest.mark.parametrize("attack", ["jsma", "jsma_adaptive", "jsma_control"])
def test_l0_control_moves_the_attacks_number_of_pixels_by_theta(attack):
    x = _seeds()
    count = np.array([10.0, 0.0, 3.0, 25.0, 1.0, 7.0])
    out = controls.perturb_like(attack, x, {"l0": count}, {"theta": 0.4}, np.random.default_rng(2))
    r = out - x
    np.testing.assert_array_equal(_norms(r)["l0"], count)
    changed = r[r != 0]
    assert np.all(changed > 0) and np.all(changed <= 0.4 + 1e-6)
    assert out.max() <= 1


@pytest.mark.parametrize("attack", ["deepfool", "cw", "ead_l1", "ead_en"])
def test_l2_control_is_gaussian_noise_of_the_attacks_l2_norm_after_clipping(attack):
    x = _seeds()
    size = np.array([1.5, 0.0, 0.3, 4.0, 0.01, 2.2])
    out = controls.perturb_like(attack, x, {"l2": size}, {}, np.random.default_rng(3))
    np.testing.assert_allclose(_norms(out - x)["l2"], size, rtol=1e-5, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1
    assert np.array_equal(out[1], x[1])


def test_controls_are_seeded():
    x = _seeds()
    size = {"linf": np.full(6, 0.1), "l0": np.full(6, 4.0), "l2": np.full(6, 1.0)}
    for attack in ("fgsm", "jsma", "cw"):
        a = controls.perturb_like(attack, x, size, {"theta": 1.0}, np.random.default_rng(7))
        b = controls.perturb_like(attack, x, size, {"theta": 1.0}, np.random.default_rng(7))
        c = controls.perturb_like(attack, x, size, {"theta": 1.0}, np.random.default_rng(8))
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_control_trajectory_moves_two_new_pixels_per_step():
    x = _seeds(1)[0]
    steps = np.stack([x] * 6)  # a JSMA trajectory of 5 updates (values do not matter, only its length)
    (trajectory,) = controls.random_trajectory([steps], 0.5, np.random.default_rng(0))
    assert trajectory.shape == steps.shape and np.array_equal(trajectory[0], x)
    ever = np.zeros(x.size, dtype=int)
    for before, after in zip(trajectory[:-1], trajectory[1:]):
        changed = (before != after).reshape(-1)
        assert changed.sum() == 2
        ever += changed
    assert ever.max() == 1  # no pixel is moved twice


def test_control_names():
    assert controls.control_name("fgsm") == "random_fgsm"
    assert controls.attacked_by("random_jsma_control") == "jsma_control"
    with pytest.raises(ValueError, match="not a control"):
        controls.attacked_by("fgsm")
