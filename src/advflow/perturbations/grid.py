"""Seed 001's average-adversarial grid (Fig. 1) and mean perturbation maps (Fig. 4): M correctly classified test
images of each class i, attacked towards every other class j with a targeted iterative attack that steps along the
gradient, not its sign (Foolbox's L2 basic iterative attack with a targeted criterion); cell (i, j) is the mean of
the adversarial images that reach j, the diagonal the mean original of class i; a second grid holds the mean
perturbations. Each cell's success count travels with it: a cell no input reached holds NaN in the file and
"none" in every figure and table, never an image.

File ``grid.h5``: ``mean_adversarial`` and ``mean_perturbation`` ``(K, K, C, H, W)`` in pixel units ([0, 1];
perturbations in [-1, 1]), ``successes`` ``(K, K)`` (diagonal: M), ``attempted`` ``(K, K)``, ``indices`` ``(K, M)``
(test-split indices of the images of each class), ``adversarial`` ``(K, K, M, C, H, W)`` every attacked image in
pixels (row i, column j: the M images of class i attacked towards j; the diagonal the originals) and ``reached``
``(K, K, M)`` whether each reached its target (for seed 001's Fig. 3 pixel histograms); attrs: model, M, settings,
seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.workflow.io import atomic_h5, open_h5

log = logging.getLogger("advflow.perturbations.grid")


def pick_images(labels: np.ndarray, correct: np.ndarray, num_classes: int, m: int, *, seed: int) -> np.ndarray:
    """``(K, M)`` test-split indices: per class, the first M correctly classified images in a seeded order; a class
    with fewer than M is an error naming the class and the key to lower."""
    order = np.random.default_rng([seed, 11]).permutation(len(labels))
    picked = []
    for i in range(num_classes):
        mine = order[(labels[order] == i) & correct[order]][:m]
        if len(mine) < m:
            raise ValueError(f"class {i} has only {len(mine)} correctly classified test images; lower "
                             f"perturbations.grid.m to at most {len(mine)}")
        picked.append(np.sort(mine))
    return np.stack(picked)


def targeted_l2_bim(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, settings: dict[str, Any], *,
                    device: torch.device, seed: int) -> torch.Tensor:
    """Foolbox's targeted L2 basic iterative attack (gradient steps, not sign steps) in model space [-1, 1]:
    ``epsilon`` the L2 budget, ``steps`` and ``rel_stepsize`` (step = rel_stepsize × epsilon)."""
    import foolbox as fb

    torch.manual_seed(seed)
    fmodel = fb.PyTorchModel(model.eval(), bounds=(-1.0, 1.0), device=device)
    attack = fb.attacks.L2BasicIterativeAttack(rel_stepsize=float(settings["rel_stepsize"]),
                                               steps=int(settings["steps"]), random_start=False)
    _, clipped, _ = attack(fmodel, x.to(device), fb.criteria.TargetedMisclassification(targets.to(device)),
                           epsilons=float(settings["epsilon"]))
    return clipped.detach().cpu()


def average_grid(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, settings: dict[str, Any], *,
                 seed: int, device: torch.device, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The grid's arrays (see the module docstring) from the test images (uint8 ``(N, C, H, W)``) and labels."""
    from advflow.attacks.sets import _model_space, model_logits
    from advflow.models.architectures import predict_logits

    num_classes = int(model.arch["num_classes"])
    m = int(settings["m"])
    correct = predict_logits(model, images, device).argmax(1).numpy() == labels
    indices = pick_images(labels, correct, num_classes, m, seed=seed)
    shape = images.shape[1:]
    mean_adv = np.full((num_classes, num_classes, *shape), np.nan)
    mean_r = np.full_like(mean_adv, np.nan)
    successes = np.zeros((num_classes, num_classes), dtype=np.int64)
    attempted = np.zeros_like(successes)
    every = np.zeros((num_classes, num_classes, m, *shape), dtype=np.float32)
    reached_all = np.zeros((num_classes, num_classes, m), dtype=bool)
    for i in range(num_classes):
        x = _model_space(images[indices[i]])
        originals = (x.numpy().astype(np.float64) + 1) / 2
        mean_adv[i, i], mean_r[i, i] = originals.mean(0), 0.0
        successes[i, i] = attempted[i, i] = m
        every[i, i], reached_all[i, i] = originals, True
        others = [j for j in range(num_classes) if j != i]
        seeds = x.repeat(len(others), 1, 1, 1)
        targets = torch.tensor(others).repeat_interleave(m)
        adversarial = torch.cat([
            targeted_l2_bim(model, seeds[s:s + batch_size], targets[s:s + batch_size], settings, device=device,
                            seed=seed + i)
            for s in range(0, len(seeds), batch_size)])
        with torch.no_grad():
            prediction = model_logits(model, adversarial, device, batch_size).argmax(1).numpy()
        pixels = (adversarial.numpy().astype(np.float64) + 1) / 2
        for n, j in enumerate(others):
            rows = slice(n * m, (n + 1) * m)
            hit = prediction[rows] == j
            attempted[i, j], successes[i, j] = m, int(hit.sum())
            every[i, j], reached_all[i, j] = pixels[rows], hit
            if hit.any():
                mean_adv[i, j] = pixels[rows][hit].mean(0)
                mean_r[i, j] = (pixels[rows][hit] - originals[hit]).mean(0)
        log.info("grid row %d/%d: class %d reaches %s of %d", i + 1, num_classes, i,
                 [int(successes[i, j]) for j in others], m)
    return {"mean_adversarial": mean_adv, "mean_perturbation": mean_r, "successes": successes,
            "attempted": attempted, "indices": indices, "adversarial": every, "reached": reached_all}


def write_grid(path: str | Path, grid: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    with atomic_h5(path) as h5:
        for key, value in grid.items():
            h5.create_dataset(key, data=value.astype(np.float32) if value.dtype.kind == "f" else value,
                              compression="gzip" if value.ndim > 3 else None)
        h5.attrs.update(attrs)


GRID_KEYS = ("mean_adversarial", "mean_perturbation", "successes", "attempted", "indices", "adversarial", "reached")


def read_grid(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays :func:`write_grid` wrote; a file missing one is an error naming it and the rule."""
    with open_h5(path) as h5:
        missing = [key for key in GRID_KEYS if key not in h5]
        if missing:
            raise ValueError(f"{path}: not a complete grid file (no {', '.join(missing)}); delete it and rerun the "
                             f"workflow (rule average_grid)")
        return {key: h5[key][:] for key in GRID_KEYS}
