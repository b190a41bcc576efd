"""Seed 001's average-adversarial grid (advflow.perturbations.grid): cell (i, j) is the mean of the adversarial images from class i
that the model classifies as j, the diagonal the mean original; success counts per cell; a cell no input reached is
NaN in the file (\"none\" in figures), never a made-up image; the same seed gives the same grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advflow.perturbations.grid as grid_module
from conftest import BLOB_CLASSES, blobs

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = {"m": 3, "epsilon": 3.0, "steps": 10, "rel_stepsize": 0.2}


def test_a_cell_is_the_mean_of_the_adversarial_images_that_reached_its_class(model, monkeypatch, tmp_path):
    images, labels = blobs(80, seed=5)
    seen = []
    attack = grid_module.targeted_l2_bim

    def recording(model_, x, targets, settings, **kwargs):
        out = attack(model_, x, targets, settings, **kwargs)
        seen.append((x.clone(), targets.clone(), out.clone()))
        return out

    monkeypatch.setattr(grid_module, "targeted_l2_bim", recording)
    grid = grid_module.average_grid(model, images, labels, SETTINGS, seed=0, device=torch.device("cpu"))
    k, m = BLOB_CLASSES, SETTINGS["m"]
    assert grid["mean_adversarial"].shape == (k, k, 1, 12, 12) and grid["indices"].shape == (k, m)
    assert (np.diag(grid["successes"]) == m).all() and (grid["attempted"][~np.eye(k, dtype=bool)] == m).all()
    for i in range(k):
        x, targets, adversarial = seen[i]
        with torch.no_grad():
            reached = model(adversarial).argmax(1).numpy()
        np.testing.assert_allclose(grid["mean_adversarial"][i, i], images[grid["indices"][i]].mean(0) / 255, atol=1e-6)
        assert (labels[grid["indices"][i]] == i).all()
        for j in range(k):
            if j == i:
                continue
            rows = (targets.numpy() == j)
            hit = rows & (reached == j)
            assert grid["successes"][i, j] == hit.sum()
            np.testing.assert_array_equal(grid["reached"][i, j], hit[rows])
            if hit.any():
                np.testing.assert_allclose(grid["adversarial"][i, j][grid["reached"][i, j]],
                                           (adversarial[hit].numpy() + 1) / 2, atol=1e-6)
                expected = (adversarial[hit].numpy().astype(np.float64) + 1) / 2
                np.testing.assert_allclose(grid["mean_adversarial"][i, j], expected.mean(0), atol=1e-6)
                originals = (x[hit].numpy().astype(np.float64) + 1) / 2
                np.testing.assert_allclose(grid["mean_perturbation"][i, j], (expected - originals).mean(0), atol=1e-6)
            else:
                assert np.isnan(grid["mean_adversarial"][i, j]).all()
    assert grid["successes"][~np.eye(k, dtype=bool)].sum() > 0  # the attack reaches some targets
    grid_module.write_grid(tmp_path / "grid.h5", grid, {"model": "deep_conv"})
    back = grid_module.read_grid(tmp_path / "grid.h5")
    np.testing.assert_array_equal(back["successes"], grid["successes"])
    again = grid_module.average_grid(model, images, labels, SETTINGS, seed=0, device=torch.device("cpu"))
    np.testing.assert_array_equal(again["successes"], grid["successes"])
    np.testing.assert_array_equal(again["mean_adversarial"], grid["mean_adversarial"])


def test_a_class_with_fewer_than_m_correct_images_names_the_key():
    labels = np.array([0, 0, 1, 1, 1])
    correct = np.array([True, False, True, True, True])
    with pytest.raises(ValueError, match=r"class 0 has only 1 .* perturbations\.grid\.m"):
        grid_module.pick_images(labels, correct, 2, 2, seed=0)
    picked = grid_module.pick_images(labels, correct, 2, 1, seed=0)
    assert picked[0].tolist() == [0] and labels[picked[1]].tolist() == [1]


def test_the_grids_seed_picks_its_images_the_same_seed_the_same_picks_another_seed_others():
    """Planted labels (every image correct): the picks of a seed are M distinct images of each class, sorted; the
    same seed picks the same, another seed other images."""
    labels = np.repeat(np.arange(3), 20)
    correct = np.ones(len(labels), dtype=bool)
    correct[[0, 5, 21]] = False  # never picked
    picks = {seed: grid_module.pick_images(labels, correct, 3, 4, seed=seed) for seed in range(4)}
    for seed, picked in picks.items():
        assert picked.shape == (3, 4)
        for i in range(3):
            assert (labels[picked[i]] == i).all() and correct[picked[i]].all()
            assert len(set(picked[i].tolist())) == 4 and (np.diff(picked[i]) > 0).all()
        np.testing.assert_array_equal(grid_module.pick_images(labels, correct, 3, 4, seed=seed), picked)
    assert len({picked.tobytes() for picked in picks.values()}) == 4  # every seed its own picks
    # M at its limit: class 0 has 18 correct images; 18 can be picked, 19 cannot
    assert grid_module.pick_images(labels, correct, 3, 18, seed=0)[0].tolist() == [
        i for i in range(20) if i not in (0, 5)]
    with pytest.raises(ValueError, match=r"class 0 has only 18 .* at most 18"):
        grid_module.pick_images(labels, correct, 3, 19, seed=0)


def test_the_same_seed_gives_the_same_grid_and_another_seed_another(model, monkeypatch):
    """average_grid passes its seed on: with a deterministic stand-in for the attack, seeds 3 and 3 give identical
    grids, seeds 3 and 4 different images (cells' means over other images); the diagonal is the mean of the
    picked originals, computed here from the images."""
    images, labels = blobs(80, seed=5)

    def brighten(model_, x, targets, settings, *, device, seed):  # moves every pixel by 0.5 (model space)
        return (x + 0.5).clamp(-1, 1)

    monkeypatch.setattr(grid_module, "targeted_l2_bim", brighten)
    run = lambda seed: grid_module.average_grid(model, images, labels, SETTINGS, seed=seed,  # noqa: E731
                                                device=torch.device("cpu"))
    a, b, c = run(3), run(3), run(4)
    for key in grid_module.GRID_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["indices"], c["indices"])
    assert not np.array_equal(a["adversarial"], c["adversarial"])
    for grid in (a, c):
        for i in range(BLOB_CLASSES):
            picked = images[grid["indices"][i]].astype(np.float64) / 255
            np.testing.assert_allclose(grid["mean_adversarial"][i, i], picked.mean(0), atol=1e-6)
            np.testing.assert_allclose(grid["adversarial"][i, (i + 1) % BLOB_CLASSES],
                                       np.clip(picked + 0.25, 0, 1), atol=1e-6)
