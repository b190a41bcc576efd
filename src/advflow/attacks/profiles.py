"""Input profiles (docs/method.md, "Experiments"): the normal inputs every experiment starts from.

``normal_train``: N random training images. ``normal_test``: N test images classified correctly by
every model they are used on; these are the attack seeds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from advflow.data import Dataset, load_prepared
from advflow.workflow.io import atomic_h5, open_h5
from advflow.models.architectures import load_checkpoint, predict_logits
from advflow.attacks.checks import check_profile

log = logging.getLogger("advflow.attacks.profiles")


def correctly_classified(models: list[torch.nn.Module], images: np.ndarray, labels: np.ndarray,
                         device: torch.device) -> np.ndarray:
    """Boolean mask of the images every model classifies correctly."""
    mask = np.ones(len(labels), dtype=bool)
    for model in models:
        mask &= predict_logits(model, images, device).argmax(1).numpy() == labels
    return mask


def _first_correct(models: list[torch.nn.Module], images: np.ndarray, labels: np.ndarray, *, n: int,
                   rng: np.random.Generator, device: torch.device) -> tuple[np.ndarray, int, int]:
    """The first ``n`` images, in a seeded random order, that every model classifies correctly (sorted),
    with how many were checked and found correct. Images are checked in chunks, so a small N does not
    classify the whole split."""
    order = rng.permutation(len(labels))
    chunk = max(64, 2 * n)
    kept: list[np.ndarray] = []
    checked = 0
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        kept.append(part[correctly_classified(models, images[part], labels[part], device)])
        checked += len(part)
        if sum(len(k) for k in kept) >= n:
            break
    correct = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return np.sort(correct[:n]), checked, len(correct)


def _write(path: str | Path, dataset: Dataset, split: str, indices: np.ndarray, description: str) -> None:
    part = getattr(dataset, split)
    with atomic_h5(path) as h5:
        h5.create_dataset("images", data=part.images[indices])
        h5.create_dataset("labels", data=part.labels[indices])
        h5.create_dataset("indices", data=indices)
        h5.attrs["split"] = split
        h5.attrs["description"] = description


def _train_draw(rng: np.random.Generator, dataset: Dataset, n: int) -> np.ndarray:
    """``normal_train``'s indices: the first draw of the profiles' random stream (seeded by ``seed``)."""
    return np.sort(rng.choice(len(dataset.train.labels), size=min(n, len(dataset.train.labels)), replace=False))


def select_normal_train(data_path: str | Path, *, n: int, seed: int, out: str | Path,
                        dataset: Dataset | None = None) -> None:
    """Write ``normal_train``: ``n`` random training images. No model enters the draw, so this is a job of its
    own (rule ``select_normal_train``): retraining a model does not redraw it or re-measure it. ``dataset``:
    the prepared data when already loaded."""
    dataset = load_prepared(data_path) if dataset is None else dataset
    train = _train_draw(np.random.default_rng(seed), dataset, n)
    _write(out, dataset, "train", train, f"{len(train)} random training images (seed {seed})")
    log.info("normal_train: %d random training images (seed %d)", len(train), seed)


def select_attack_seeds(data_path: str | Path, model_paths: list[str | Path], *, n: int, seed: int,
                        device: torch.device, out: str | Path, dataset: Dataset | None = None) -> None:
    """Write ``normal_test`` (the attack seeds): the first ``n`` test images, in a seeded random order, that every
    model classifies correctly. The order continues the random stream after ``normal_train``'s draw (replayed
    here), so the two files are those one run of :func:`select_profiles` writes. ``dataset``: the prepared data
    when already loaded."""
    dataset = load_prepared(data_path) if dataset is None else dataset
    rng = np.random.default_rng(seed)
    _train_draw(rng, dataset, n)  # replayed: the seeds' order is the stream's continuation
    models = [load_checkpoint(p, device) for p in model_paths]
    test, checked, found = _first_correct(models, dataset.test.images, dataset.test.labels, n=n, rng=rng,
                                          device=device)
    if len(test) < n:
        raise RuntimeError(f"only {len(test)} test images are classified correctly by every model "
                           f"({', '.join(m.arch['name'] for m in models)}); lower inputs.n to at most that")
    names = ", ".join(m.arch["name"] for m in models)
    _write(out, dataset, "test", test, f"{n} test images classified correctly by {names} (seed {seed})")
    log.info("attack seeds: %d of %d test images checked (in seeded random order) were correct on every model, "
             "the first %d kept", found, checked, n)


def select_profiles(data_path: str | Path, model_paths: list[str | Path], *, n: int, seed: int,
                    device: torch.device, out_train: str | Path, out_test: str | Path) -> None:
    """Write ``normal_train`` and ``normal_test`` (the attack seeds) as HDF5 files: :func:`select_normal_train`
    then :func:`select_attack_seeds`, which the workflow runs as two jobs."""
    dataset = load_prepared(data_path)
    select_normal_train(data_path, n=n, seed=seed, out=out_train, dataset=dataset)
    select_attack_seeds(data_path, model_paths, n=n, seed=seed, device=device, out=out_test, dataset=dataset)


def load_profile(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8, labels, indices into the split) of a profile file, checked (:func:`check_profile`)."""
    with open_h5(path) as h5:
        check_profile(h5, path)
        return h5["images"][:], h5["labels"][:], h5["indices"][:]
