"""Seed 001's perturbation statistics (advflow.perturbations.statistics): the statistics equal numpy's on a generated set, in
pixel units, over the successful inputs; selection by original and adversarial class; a class pair no input
reached gives 0 inputs and NaN statistics, never a number; a set and a profile of different seeds are refused."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from advflow.attacks.sets import write_set
from advflow.perturbations.statistics import PerturbationStats


def generated(tmp_path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, 3, n)
    x = torch.as_tensor(images.astype(np.float32) / 127.5 - 1.0)
    adversarial = (x + torch.as_tensor(rng.normal(0, 0.2, x.shape), dtype=torch.float32)).clamp(-1, 1)
    prediction = np.where(rng.random(n) < 0.7, (labels + 1 + rng.integers(0, 2, n)) % 3, labels)
    logits = torch.nn.functional.one_hot(torch.as_tensor(prediction), 3).float() * 5
    indices = np.arange(100, 100 + n)
    set_path, seeds_path = tmp_path / "set.h5", tmp_path / "seeds.h5"
    write_set(set_path, x=x, adversarial=adversarial, labels=labels, indices=indices, before=labels, logits=logits,
              attrs={"attack": "test", "target": "m"})
    with h5py.File(seeds_path, "w") as h5:
        h5["images"], h5["labels"], h5["indices"] = images, labels, indices
    return set_path, seeds_path, images, labels, adversarial.numpy(), prediction


def test_statistics_equal_numpys_in_pixel_units_over_the_successful_inputs(tmp_path):
    set_path, seeds_path, images, labels, adversarial, prediction = generated(tmp_path)
    stats = PerturbationStats.from_files(set_path, seeds_path)
    success = prediction != labels
    original, adv = images.astype(np.float64) / 255.0, (adversarial.astype(np.float64) + 1) / 2
    r = adv - original
    summary = {row["of"]: row for row in stats.summary()}
    for name, values in (("adversarial images", adv[success]), ("perturbations", r[success]),
                         ("original images", original[success])):
        row = summary[name]
        assert row["inputs"] == success.sum()
        assert (row["mean"], row["std"], row["max"], row["min"]) == pytest.approx(
            (values.mean(), values.std(), values.max(), values.min()), abs=1e-6)
    everything = {row["of"]: row for row in stats.summary(successful=False)}
    assert everything["perturbations"]["mean"] == pytest.approx(r.mean(), abs=1e-6)
    norms = stats.select().norms()
    np.testing.assert_allclose(norms["l1"], np.abs(r[success]).reshape(success.sum(), -1).sum(1), atol=1e-5)
    np.testing.assert_allclose(norms["l2"], np.linalg.norm(r[success].reshape(success.sum(), -1), axis=1), atol=1e-5)


def test_class_pairs_select_their_inputs_and_an_empty_pair_is_none_not_a_number(tmp_path):
    set_path, seeds_path, images, labels, adversarial, prediction = generated(tmp_path, seed=1)
    stats = PerturbationStats.from_files(set_path, seeds_path)
    rows = {(r["original"], r["adversarial"]): r for r in stats.by_class_pair(classes=[0, 1, 2, 3])}
    assert len(rows) == 12  # every ordered pair of 4 classes; class 3 never occurs
    for (i, j), row in rows.items():
        chosen = (labels == i) & (prediction == j)
        assert row["inputs"] == chosen.sum()
        if chosen.any():
            adv = (adversarial[chosen].astype(np.float64) + 1) / 2
            assert row["image_mean"] == pytest.approx(adv.mean(), abs=1e-6)
            mean_adv, mean_r = stats.mean_images(i, j)
            np.testing.assert_allclose(mean_adv, adv.mean(0), atol=1e-6)
            np.testing.assert_allclose(mean_r, (adv - images[chosen] / 255.0).mean(0), atol=1e-6)
        else:
            assert all(math.isnan(row[k]) for k in ("image_mean", "perturbation_std", "mean_l2"))
            assert stats.mean_images(i, j) == (None, None)
    assert sum(r["inputs"] for r in rows.values()) == (prediction != labels).sum()
    assert set(stats.pairs()) == {k for k, r in rows.items() if r["inputs"]}


def test_a_set_and_a_profile_of_other_seeds_are_refused(tmp_path):
    set_path, seeds_path, *_ = generated(tmp_path)
    with h5py.File(seeds_path, "a") as h5:
        h5["indices"][0] = 0
    with pytest.raises(ValueError, match="not the seeds of"):
        PerturbationStats.from_files(set_path, seeds_path)


def test_every_class_pair_column_equals_numpys_on_that_pairs_inputs(tmp_path):
    set_path, seeds_path, images, labels, adversarial, prediction = generated(tmp_path, seed=2)
    stats = PerturbationStats.from_files(set_path, seeds_path)
    original, adv = images.astype(np.float64) / 255.0, (adversarial.astype(np.float64) + 1) / 2
    checked = 0
    for row in stats.by_class_pair(classes=[0, 1, 2]):
        chosen = (labels == row["original"]) & (prediction == row["adversarial"])
        if not chosen.any():
            continue
        r = (adv - original)[chosen].reshape(chosen.sum(), -1)
        for kind, values in (("image", adv[chosen]), ("perturbation", r)):
            for name, value in (("mean", values.mean()), ("std", values.std()), ("max", values.max()),
                                ("min", values.min())):
                assert row[f"{kind}_{name}"] == pytest.approx(value, abs=1e-6), (row, kind, name)
        assert row["mean_l1"] == pytest.approx(np.abs(r).sum(1).mean(), abs=1e-5)
        assert row["mean_l2"] == pytest.approx(np.sqrt((r ** 2).sum(1)).mean(), abs=1e-5)
        checked += 1
    assert checked >= 4


def test_norms_and_pair_rows_on_a_planted_pair():
    """Two inputs of class 0 made into class 1 with r = (0.3, -0.4) and (0.6, 0.8): ‖r‖₁ 0.7 and 1.4, ‖r‖₂ 0.5 and
    1.0; a third input the attack failed on does not count."""
    original = np.array([[[[0.5, 0.5]]], [[[0.1, 0.1]]], [[[0.2, 0.2]]]])
    adversarial = original + np.array([[[[0.3, -0.4]]], [[[0.6, 0.8]]], [[[0.1, 0.1]]]])
    stats = PerturbationStats(original, adversarial, labels=np.array([0, 0, 0]), predictions=np.array([1, 1, 0]),
                              success=np.array([True, True, False]))
    norms = stats.select().norms()
    np.testing.assert_allclose(norms["l1"], [0.7, 1.4])
    np.testing.assert_allclose(norms["l2"], [0.5, 1.0])
    (row,) = stats.by_class_pair()
    assert (row["original"], row["adversarial"], row["inputs"]) == (0, 1, 2)
    assert row["mean_l1"] == pytest.approx(1.05) and row["mean_l2"] == pytest.approx(0.75)
    assert row["perturbation_max"] == pytest.approx(0.8) and row["perturbation_min"] == pytest.approx(-0.4)
    assert row["perturbation_mean"] == pytest.approx(0.325) and row["image_max"] == pytest.approx(0.9)


@pytest.mark.parametrize("low, high, ok", [(0.0, 1.0, True), (-1e-7, 1.0 + 1e-7, True), (-0.001, 1.0, False),
                                           (0.0, 1.001, False), (0.0, math.nan, False)])
def test_images_must_be_pixels_in_0_1(low, high, ok):
    original = np.full((2, 1, 2, 2), 0.5)
    for name in ("original", "adversarial"):
        images = {"original": original.copy(), "adversarial": original.copy()}
        images[name][0, 0, 0, 0], images[name][1, 0, 1, 1] = low, high
        make = lambda: PerturbationStats(images["original"], images["adversarial"], np.zeros(2, int),  # noqa: E731
                                         np.ones(2, int), np.ones(2, bool))
        if ok:
            assert len(make()) == 2
        else:
            with pytest.raises(ValueError, match=f"{name} images must be finite pixels in \\[0, 1\\]"):
                make()
