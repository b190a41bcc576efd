"""Random-perturbation controls (docs/method.md, "How a finding is decided"): beside every adversarial set, a set of
the same seeds perturbed at random by the same amount per input, so that a shift of the information
paths counts as adversarial only where it exceeds what any perturbation of that size does.

The size is matched per input, in the attack's family of norms:

==========================================  ===================================================================
attack (norm)                               control
==========================================  ===================================================================
FGSM, IGSM, PGD (L-infinity)                every pixel moved by +eps_i or -eps_i at random, eps_i the attack's
                                            own ||r_i||_inf, clipped to the box
JSMA, adaptive JSMA, its regular control    the attack's L0_i pixels, drawn at random among those that can move
(L0)                                        in theta's direction, moved by theta (clipped to the box)
DeepFool, C&W, EAD (L2 / L1)                Gaussian noise scaled so that the clipped perturbation has the
                                            attack's own ||r_i||_2 (bisection on the scale)
==========================================  ===================================================================

An input the attack left unchanged (norm 0) stays unchanged in its control. A control set is named
``random_{attack}@{target}`` (:func:`advflow.workflow.catalog.control_set`) and has the file layout of an
adversarial set (:mod:`advflow.attacks.sets`), so the features, MI and paths stages treat it like any set. Q1's
control trajectory (:func:`random_trajectory`) moves two random pixels by theta per step, as many steps as JSMA took.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.attacks import registry
from advflow.attacks.registry import BOUNDS
from advflow.workflow.catalog import control_name, control_trajectory_set, set_name
from advflow.workflow.io import atomic_h5, open_h5
from advflow.attacks.checks import check_set

log = logging.getLogger("advflow.attacks.controls")

#: Which size a control matches, by the attack's norm (docs/method.md: random +-eps for L-infinity attacks, the
#: same number of pixels moved by theta for JSMA, Gaussian noise of the same L2 norm for L2 / L1 attacks).
MATCHED_NORM = {"linf": "linf", "l0": "l0", "l2": "l2", "l1": "l2"}


def _generator(seed: int, name: str) -> np.random.Generator:
    """One generator per (seed, set): the same seed gives the same control, different sets differ."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def random_sign(x: np.ndarray, size: np.ndarray, rng: np.random.Generator,
                box: tuple[float, float] = BOUNDS) -> np.ndarray:
    """L-infinity control: every pixel of input i moved by +size_i or -size_i (fair coin), clipped."""
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float64), size=x.shape)
    r = signs * size.reshape(-1, *[1] * (x.ndim - 1))
    return np.clip(x.astype(np.float64) + r, *box).astype(np.float32)


def random_pixels(x: np.ndarray, count: np.ndarray, theta: float, rng: np.random.Generator,
                  box: tuple[float, float] = BOUNDS) -> np.ndarray:
    """L0 control: ``count_i`` distinct pixels of input i, drawn among those that can move in theta's
    direction (not at the bound), each moved by theta and clipped to the box."""
    low, high = box
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = flat.copy()
    for i, c in enumerate(np.asarray(count, dtype=np.int64)):
        movable = np.flatnonzero(flat[i] < high if theta > 0 else flat[i] > low)
        if c > movable.size:
            raise ValueError(f"input {i}: {c} pixels to move but only {movable.size} can move by theta={theta}")
        picked = rng.choice(movable, size=int(c), replace=False)
        out[i, picked] = np.clip(flat[i, picked] + theta, low, high)
    return out.reshape(x.shape).astype(np.float32)


def gaussian_l2(x: np.ndarray, size: np.ndarray, rng: np.random.Generator, box: tuple[float, float] = BOUNDS,
                *, iterations: int = 60) -> np.ndarray:
    """L2 control: a Gaussian direction per input, scaled so that the perturbation left after clipping
    to the box has L2 norm ``size_i``. The clipped norm grows monotonically with the scale, so a
    bisection finds it (to float precision after 60 halvings)."""
    x64 = x.reshape(len(x), -1).astype(np.float64)
    direction = rng.standard_normal(x64.shape)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-300)
    size = np.asarray(size, dtype=np.float64)

    def clipped_norm(scale: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.clip(x64 + scale[:, None] * direction, *box) - x64, axis=1)

    low = np.zeros(len(x))
    high = np.maximum(size, 1e-12)
    for _ in range(200):  # grow the bracket until it holds the target norm (or clipping saturates)
        short = clipped_norm(high) < size
        if not short.any():
            break
        high = np.where(short, high * 2, high)
    for _ in range(iterations):
        mid = (low + high) / 2
        below = clipped_norm(mid) < size
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    scale = np.where(size > 0, high, 0.0)
    return np.clip(x64 + scale[:, None] * direction, *box).reshape(x.shape).astype(np.float32)


def perturb_like(attack: str, x: np.ndarray, r_norms: dict[str, np.ndarray], settings: dict[str, Any],
                 rng: np.random.Generator) -> np.ndarray:
    """The random control of ``attack`` for seeds ``x`` (N, C, H, W) in model space, given the attack's
    per-input perturbation norms ``r_norms`` (``l0``, ``l2``, ``linf``, ...) and its settings."""
    norm = MATCHED_NORM[registry.get(attack).norm]
    if norm == "linf":
        return random_sign(x, np.asarray(r_norms["linf"], dtype=np.float64), rng)
    if norm == "l0":
        return random_pixels(x, np.rint(r_norms["l0"]).astype(np.int64), float(settings["theta"]), rng)
    return gaussian_l2(x, np.asarray(r_norms["l2"], dtype=np.float64), rng)


def make_control_set(attack_set: str | Path, seeds_path: str | Path, model_path: str | Path, *, seed: int,
                     device: torch.device, out_path: str | Path) -> dict[str, Any]:
    """Write the random control of the adversarial set ``attack_set`` (same seeds, same size per input)
    with the records of an adversarial set; returns its Table II row."""
    from advflow.attacks.sets import _model_space, model_logits, summarize, write_set
    from advflow.models.architectures import load_checkpoint
    from advflow.attacks.profiles import load_profile

    images, labels, indices = load_profile(seeds_path)
    with open_h5(attack_set) as h5:
        check_set(h5, attack_set)
        attack, target = str(h5.attrs["attack"]), str(h5.attrs["target"])
        settings = json.loads(h5.attrs["settings"])
        r_norms = {key: h5[f"norms_r/{key}"][:] for key in h5["norms_r"]}
        set_indices = h5["indices"][:]
        before = h5["pred_before"][:]
    if not np.array_equal(set_indices, indices):
        raise ValueError(f"{attack_set}: its inputs (indices) are not the seeds of {seeds_path}; rerun the attack")
    x = _model_space(images).numpy()
    rng = _generator(seed, set_name(control_name(attack), target))
    adversarial = perturb_like(attack, x, r_norms, settings, rng)
    model = load_checkpoint(model_path, device)
    logits = model_logits(model, adversarial, device)
    write_set(out_path, x=torch.as_tensor(x), adversarial=torch.as_tensor(adversarial), labels=labels,
              indices=indices, before=before, logits=logits,
              attrs={"attack": control_name(attack), "target": target, "norm": MATCHED_NORM[registry.get(attack).norm],
                     "settings": json.dumps({"control_of": attack, **settings}, sort_keys=True), "seed": seed})
    row = summarize(out_path)
    log.info("%s on %s: success %.3f (a random perturbation of %s's size per input)", control_name(attack), target,
             row["success_rate"], attack)
    return row


def random_trajectory(steps: list[np.ndarray], theta: float, rng: np.random.Generator,
                      box: tuple[float, float] = BOUNDS) -> list[np.ndarray]:
    """Q1's control: for each JSMA trajectory (iterations + 1, C, H, W), a trajectory from the same seed
    with as many steps, each moving two random pixels not moved before (and able to move) by theta."""
    low, high = box
    out = []
    for trajectory in steps:
        current = trajectory[0].reshape(-1).astype(np.float64).copy()
        movable = current < high if theta > 0 else current > low
        rows = [current.copy()]
        for _ in range(len(trajectory) - 1):
            candidates = np.flatnonzero(movable)
            picked = rng.choice(candidates, size=min(2, candidates.size), replace=False)
            current[picked] = np.clip(current[picked] + theta, low, high)
            movable[picked] = False
            rows.append(current.copy())
        out.append(np.stack(rows).reshape(trajectory.shape).astype(np.float32))
    return out


def make_control_trajectories(trajectory_path: str | Path, *, seed: int, out_path: str | Path) -> None:
    """Write the random control of a JSMA trajectories file in the same layout (``steps/{i}``, labels,
    indices; ``success`` and ``target`` copied from JSMA's so the two can be paired)."""
    with open_h5(trajectory_path) as h5:
        keys = sorted(h5["steps"], key=int)
        steps = [h5["steps"][k][:] for k in keys]
        meta = {key: h5[key][:] for key in ("labels", "indices", "target", "success", "iterations") if key in h5}
        settings = json.loads(h5.attrs["settings"])
        model = str(h5.attrs["target_model"])
    rng = _generator(seed, control_trajectory_set(model))
    controls = random_trajectory(steps, float(settings["theta"]), rng)
    with atomic_h5(out_path) as h5:
        for key, trajectory in zip(keys, controls):
            h5.create_dataset(f"steps/{key}", data=trajectory, compression="gzip")
        for key, value in meta.items():
            h5.create_dataset(key, data=value)
        h5.attrs.update({"attack": control_name("jsma"), "target_model": model,
                         "settings": json.dumps({"control_of": "jsma", **settings}, sort_keys=True), "seed": seed})
