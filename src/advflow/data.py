"""Data stage: read a dataset from where it lives and write one prepared HDF5 file.

Pixels stay uint8 in the prepared file; models see them scaled to [-1, 1] (SPEC, "Data"),
see :func:`to_model_space`.

Prepared file layout (``data/{dataset}.h5``)::

    train/images  (N, C, H, W) uint8     train/labels  (N,) int64
    test/images   (M, C, H, W) uint8     test/labels   (M,) int64
    attrs: name, classes (JSON list), source (where the raw data came from)
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advflow.catalog import (
    FASHION_MNIST_CLASSES, HOW_TO_GET, IDX_STEMS, MNIST_CLASSES, DatasetMissingError, cifar_folder, find_idx,
    locate_dataset,
)
from advflow.io import atomic_h5, open_h5

class DataFormatError(ValueError):
    """A raw or prepared data file exists but cannot be read as what it claims to be."""


@dataclass
class Split:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list[str]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


# --------------------------------------------------------------------------- IDX (MNIST family)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot read ({err}); the file may be truncated, fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(dims)) if dims else 0
    offset = 4 + 4 * ndim
    if len(raw) - offset < count * dtype.itemsize:
        raise DataFormatError(
            f"{path}: truncated IDX file ({len(raw) - offset} bytes of data, expected "
            f"{count * dtype.itemsize}); fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def read_idx_dataset(folder: str | Path, name: str, classes: list[str]) -> Dataset:
    """Read the four IDX files of MNIST or Fashion-MNIST from ``folder``."""
    folder = Path(folder)
    splits = {}
    for split in ("train", "test"):
        found = {kind: find_idx(folder, IDX_STEMS[(split, kind)]) for kind in ("images", "labels")}
        missing = [IDX_STEMS[(split, k)] for k, v in found.items() if v is None]
        if missing:
            raise DatasetMissingError(f"{folder}: missing {', '.join(missing)}. {HOW_TO_GET[name]}")
        images = read_idx(found["images"])
        labels = read_idx(found["labels"]).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise DataFormatError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
        splits[split] = Split(np.ascontiguousarray(images[:, None, :, :].astype(np.uint8)), labels)
    return Dataset(name, splits["train"], splits["test"], classes, source=str(folder.resolve()))


# --------------------------------------------------------------------------- CIFAR-10


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except Exception as err:  # pickle raises many types on a damaged file
        raise DataFormatError(f"{path}: cannot read this CIFAR-10 batch ({err}); fetch it again") from err


def read_cifar10(root: str | Path) -> Dataset:
    """Read the standard ``cifar-10-batches-py`` folder (``root`` may be it or its parent)."""
    folder = cifar_folder(Path(root))
    if folder is None:
        raise DatasetMissingError(f"{root}: no cifar-10-batches-py batches found. {HOW_TO_GET['cifar10']}")
    meta_path = folder / "batches.meta"
    if meta_path.is_file():
        classes = [c.decode() for c in _unpickle(meta_path)[b"label_names"]]
    else:
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(path: Path) -> Split:
        entry = _unpickle(path)
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataFormatError(f"{path}: expected rows of 3072 pixels, got {data.shape}")
        return Split(data.reshape(-1, 3, 32, 32), np.asarray(entry[b"labels"], dtype=np.int64))

    train_paths = sorted(folder.glob("data_batch_*"))
    parts = [batch(p) for p in train_paths]
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    return Dataset("cifar10", train, batch(folder / "test_batch"), classes, source=str(folder.resolve()))


def _download_with_torchvision(name: str, root: Path) -> Path:
    import torchvision  # only needed here

    root.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        return root / "cifar-10-batches-py"
    torchvision.datasets.MNIST(str(root), train=True, download=True)
    return root / "MNIST" / "raw"


# --------------------------------------------------------------------------- synthetic


def make_synthetic(
    *, n_train: int = 600, n_test: int = 200, size: int = 12, channels: int = 1,
    num_classes: int = 10, noise: float = 0.15, seed: int = 0,
) -> Dataset:
    """A small learnable image dataset for tests: each class is a fixed random smooth pattern
    plus per-image noise and a random brightness, so class identity lives in spatial structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(num_classes, channels, 4, 4))
    reps = -(-size // 4)
    prototypes = np.kron(coarse, np.ones((1, 1, reps, reps)))[:, :, :size, :size]

    def draw(n: int) -> Split:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        images = prototypes[labels] * rng.uniform(0.7, 1.0, size=(n, 1, 1, 1))
        images = images + rng.normal(0, noise, size=images.shape)
        return Split((np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64))

    classes = [f"pattern_{i}" for i in range(num_classes)]
    return Dataset("synthetic", draw(n_train), draw(n_test), classes, source=f"generated (seed {seed})")


# --------------------------------------------------------------------------- locate / load / write


def load_raw(name: str, settings: dict[str, Any] | None = None, seed: int = 0) -> Dataset:
    """Read dataset ``name`` from its raw files (or generate it), as configured in ``settings``."""
    settings = dict(settings or {})
    if name == "synthetic":
        keys = ("n_train", "n_test", "size", "channels", "num_classes", "noise")
        return make_synthetic(seed=seed, **{k: settings[k] for k in keys if k in settings})
    folder = locate_dataset(name, settings)
    if folder is None:  # download requested and nothing local
        folder = _download_with_torchvision(name, Path(settings.get("download_root", "data/raw")))
    if name == "cifar10":
        return read_cifar10(folder)
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else MNIST_CLASSES
    return read_idx_dataset(folder, name, classes)


def write_prepared(dataset: Dataset, path: str | Path) -> None:
    """Write ``dataset`` to one HDF5 file, atomically (temporary name, then rename)."""
    with atomic_h5(path) as h5:
        for split_name in ("train", "test"):
            split = getattr(dataset, split_name)
            group = h5.create_group(split_name)
            group.create_dataset("images", data=split.images, chunks=True, compression="gzip", compression_opts=4)
            group.create_dataset("labels", data=split.labels)
        h5.attrs["name"] = dataset.name
        h5.attrs["classes"] = json.dumps(dataset.classes)
        h5.attrs["source"] = dataset.source


def prepare(name: str, settings: dict[str, Any] | None, out_path: str | Path, seed: int = 0) -> Dataset:
    dataset = load_raw(name, settings, seed=seed)
    write_prepared(dataset, out_path)
    return dataset


def load_prepared(path: str | Path) -> Dataset:
    """Read a prepared ``data/{dataset}.h5`` file into memory."""
    with open_h5(path) as h5:
        try:
            splits = {
                s: Split(np.asarray(h5[f"{s}/images"]), np.asarray(h5[f"{s}/labels"], dtype=np.int64))
                for s in ("train", "test")
            }
            name, classes, source = str(h5.attrs["name"]), json.loads(h5.attrs["classes"]), str(h5.attrs["source"])
        except (KeyError, OSError) as err:
            raise DataFormatError(
                f"{path}: not a complete prepared dataset ({err}). Delete it and rerun the workflow "
                "to prepare it again."
            ) from err
    return Dataset(name, splits["train"], splits["test"], classes, source)


def to_model_space(images: np.ndarray | Any) -> Any:
    """uint8 pixels in [0, 255] -> floats in [-1, 1], the models' input space (works on NumPy or torch)."""
    return images / 127.5 - 1.0
