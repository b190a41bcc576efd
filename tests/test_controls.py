"""Random-perturbation controls (advflow.attacks.controls): each control has its attack's norm per input, leaves
unperturbed inputs unchanged, stays in the box and is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from advflow.attacks import controls, registry
from advflow.attacks.sets import norms

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


# --- seeds and exact sizes, on planted inputs -------------------------------------------------------------------


@pytest.mark.parametrize("theta", [0.4, -0.4, 2.0, -2.0])
def test_l0_control_moves_each_pixel_by_exactly_theta_or_to_the_bound(theta):
    """Planted case: asked to move every pixel that can move in theta's direction, the control's output is fixed
    whatever the draw: each such pixel moved by exactly theta, clipped to [-1, 1]; a pixel at the bound stays."""
    x = np.array([[[[-1.0, -0.5, 0.0, 0.5], [0.7, 0.9, 1.0, 0.25]]],
                  [[[1.0, 1.0, -1.0, -1.0], [0.61, -0.61, 0.3, 1.0]]]], dtype=np.float32)
    at_bound = x >= 1.0 if theta > 0 else x <= -1.0
    movable = (~at_bound).reshape(2, -1).sum(1)
    expected = np.where(at_bound, x.astype(np.float64), np.clip(x.astype(np.float64) + theta, -1.0, 1.0))
    for attack in ("jsma", "jsma_adaptive", "jsma_control"):
        out = controls.perturb_like(attack, x, {"l0": movable.astype(float)}, {"theta": theta},
                                    np.random.default_rng(5))
        np.testing.assert_array_equal(out, expected.astype(np.float32))
        # the same by hand for one pixel that is not clipped: 0.0 moves to exactly theta (or is clipped at ±1)
        assert out[0, 0, 0, 2] == np.float32(np.clip(theta, -1.0, 1.0))
    # Fewer pixels: each changed pixel moved by exactly theta unless it reached the bound
    out = controls.perturb_like("jsma", x, {"l0": np.array([3.0, 2.0])}, {"theta": theta}, np.random.default_rng(6))
    changed = out != x
    assert changed.reshape(2, -1).sum(1).tolist() == [3, 2]
    np.testing.assert_array_equal(out[changed], expected.astype(np.float32)[changed])
    # The limit: as many pixels as can move is allowed (above), one more is refused
    with pytest.raises(ValueError, match=rf"input 0: {movable[0] + 1} pixels to move but only {movable[0]} can move"):
        controls.perturb_like("jsma", x, {"l0": np.array([movable[0] + 1.0, 0.0])}, {"theta": theta},
                              np.random.default_rng(5))


def test_linf_control_moves_every_pixel_by_exactly_its_inputs_size_or_to_the_bound():
    x = _seeds()
    size = np.array([0.2, 0.05, 0.0, 0.3, 0.1, 0.2])
    out = controls.perturb_like("fgsm", x, {"linf": size}, {}, np.random.default_rng(1)).astype(np.float64)
    x64 = x.astype(np.float64)
    up, down = np.clip(x64 + size[:, None, None, None], -1, 1), np.clip(x64 - size[:, None, None, None], -1, 1)
    assert np.all(np.isclose(out, up, atol=1e-6) | np.isclose(out, down, atol=1e-6))
    # both directions occur (a fair coin per pixel), away from the bounds
    free = (x64 > -0.5) & (x64 < 0.5)
    assert (np.isclose(out, up, atol=1e-7) & ~np.isclose(up, down) & free).sum() > 20
    assert (np.isclose(out, down, atol=1e-7) & ~np.isclose(up, down) & free).sum() > 20


def _planted_set(folder, attack: str, x: np.ndarray, adversarial: np.ndarray, settings: dict) -> tuple:
    """A profile of the seeds, an attack set of ``adversarial`` (written as the attack stage writes one) and an
    untrained model, in ``folder``."""
    import json

    import h5py

    from advflow.attacks.sets import write_set
    from advflow.models.architectures import ConvNet, architecture, save_checkpoint

    images = np.rint((x + 1) * 127.5).astype(np.uint8)
    x = images.astype(np.float32) / 127.5 - 1  # the seeds as the control reads them back
    labels, indices = np.arange(len(x)) % 4, np.arange(10, 10 + len(x))
    seeds = folder / "seeds.h5"
    with h5py.File(seeds, "w") as h5:
        h5["images"], h5["labels"], h5["indices"] = images, labels, indices
    logits = torch.nn.functional.one_hot(torch.as_tensor(labels), 4).float()
    set_path = folder / f"{attack}.h5"
    write_set(set_path, x=torch.as_tensor(x), adversarial=torch.as_tensor(adversarial), labels=labels,
              indices=indices, before=labels, logits=logits,
              attrs={"attack": attack, "target": "good_init", "settings": json.dumps(settings)})
    torch.manual_seed(0)
    model = folder / "model.pt"
    if not model.exists():
        save_checkpoint(ConvNet(architecture("deep_conv", 1, (12, 12), 4)).eval(), model)
    return set_path, seeds, model, x


@pytest.mark.parametrize("attack, settings", [("fgsm", {"epsilon": 0.1}), ("jsma", {"theta": 0.5, "gamma": 0.1}),
                                              ("cw", {})])
def test_a_control_set_file_is_seeded_by_the_runs_seed(tmp_path, attack, settings):
    """make_control_set: the same run seed writes the same control, another seed another one (of the same size)."""
    import h5py

    x = _seeds()
    rng = np.random.default_rng(4)
    r = np.zeros_like(x)
    r[:, :, 3:9, 6:12] = rng.choice([-0.1, 0.1], size=(len(x), 1, 6, 6))  # pixels that can move either way
    set_path, seeds, model, x = _planted_set(tmp_path, attack, x, np.clip(x + r, -1, 1), settings)

    def control(seed: int, name: str) -> np.ndarray:
        out = tmp_path / name
        controls.make_control_set(set_path, seeds, model, seed=seed, device=torch.device("cpu"), out_path=out)
        with h5py.File(out) as h5:
            assert int(h5.attrs["seed"]) == seed
            return h5["adversarial"][:]

    a, b, c = control(0, "a.h5"), control(0, "b.h5"), control(1, "c.h5")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    norm = controls.MATCHED_NORM[registry.get(attack).norm]
    np.testing.assert_allclose(_norms(c - x)[norm], _norms(a - x)[norm], atol=1e-5)  # same size, other draw


def test_control_trajectories_are_seeded_by_the_runs_seed(tmp_path):
    import json

    import h5py

    x = _seeds(3)
    path = tmp_path / "jsma_trajectories.h5"
    with h5py.File(path, "w") as h5:
        for i in range(3):
            h5[f"steps/{i}"] = np.stack([x[i]] * (4 + i))
        h5["labels"], h5["indices"] = np.arange(3), np.arange(3)
        h5["target"], h5["success"], h5["iterations"] = np.arange(3), np.ones(3, bool), np.arange(3, 6)
        h5.attrs["settings"], h5.attrs["target_model"] = json.dumps({"theta": 0.5, "gamma": 0.1}), "good_init"

    def control(seed: int, name: str) -> list[np.ndarray]:
        controls.make_control_trajectories(path, seed=seed, out_path=tmp_path / name)
        with h5py.File(tmp_path / name) as h5:
            assert int(h5.attrs["seed"]) == seed
            return [h5[f"steps/{i}"][:] for i in range(3)]

    a, b, c = control(0, "a.h5"), control(0, "b.h5"), control(1, "c.h5")
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    for i, trajectory in enumerate(c):  # every step moves two pixels by exactly theta = 0.5, or up to the bound 1
        flat = trajectory.reshape(len(trajectory), -1)
        assert np.array_equal(flat[0], x[i].reshape(-1))
        for before, after in zip(flat[:-1], flat[1:]):
            moved = after != before
            assert moved.sum() == 2
            np.testing.assert_array_equal(after[moved], np.minimum(x[i].reshape(-1)[moved].astype(np.float64) + 0.5,
                                                                   1.0).astype(np.float32))


def test_the_control_generator_depends_on_the_seed_and_the_set():
    draw = lambda seed, name: controls._generator(seed, name).random(8)  # noqa: E731
    np.testing.assert_array_equal(draw(3, "random_fgsm@good_init"), draw(3, "random_fgsm@good_init"))
    assert not np.array_equal(draw(3, "random_fgsm@good_init"), draw(4, "random_fgsm@good_init"))
    assert not np.array_equal(draw(3, "random_fgsm@good_init"), draw(3, "random_fgsm@deep_conv"))
