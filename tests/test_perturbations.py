"""Seed 001's perturbation statistics (advflow.perturbations): the statistics equal numpy's on a generated set, in
pixel units, over the successful inputs; selection by original and adversarial class; a class pair no input
reached gives 0 inputs and NaN statistics, never a number; a set and a profile of different seeds are refused."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from advflow.adversarial import write_set
from advflow.perturbations import PerturbationStats


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
