"""Data stage: read a dataset from where it lives and write one prepared HDF5 file.

Pixels stay uint8 in the prepared file; models see them scaled to [-1, 1] (docs/method.md, "Data"),
see :func:`to_model_space`.

Prepared file layout (``data/{dataset}.h5``)::

    train/images  (N, C, H, W) uint8     train/labels  (N,) int64
    test/images   (M, C, H, W) uint8     test/labels   (M,) int64
    attrs: name, classes (JSON list), source (where the raw data came from)

Every dataset is checked by :func:`validate_dataset` before it is written and when it is read back;
a prepared file that fails is moved aside (``<name>.damaged``) and rebuilt by the next run.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advflow.workflow.catalog import (
    FASHION_MNIST_CLASSES, HOW_TO_GET, IDX_STEMS, MNIST_CLASSES, DatasetMissingError, cifar_folder, find_idx,
    locate_dataset,
)
from advflow.workflow.io import CorruptFileError, atomic_h5, open_h5, quarantine


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


# --------------------------------------------------------------------------- validation

MIN_SIDE = 8  # the smallest image height and width the models accept


def _pixel_problem(images: np.ndarray) -> str | None:
    """Why ``images`` are not uint8 pixels, or None."""
    if images.dtype == np.uint8:
        return None
    found = images.dtype.name
    if images.dtype.kind == "f":
        nan = int(np.isnan(images).sum())
        if nan:
            return f"pixels must be uint8 in [0, 255]; found {found} with {nan} NaN"
        finite = images[np.isfinite(images)]
        if finite.size:
            found += f" (values {finite.min():g} to {finite.max():g})"
    elif images.dtype.kind in "iu" and images.size:
        found += f" (values {images.min()} to {images.max()})"
    return f"pixels must be uint8 in [0, 255]; found {found}"


def _as_pixels(images: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Raw pixels as uint8: integers in [0, 255] are converted exactly, anything else is refused."""
    if images.dtype.kind in "iu" and (not images.size or (images.min() >= 0 and images.max() <= 255)):
        return images.astype(np.uint8, copy=False), None
    return None, _pixel_problem(images)


def _images_problem(images: np.ndarray) -> str | None:
    """Why ``images`` are not (N, C, H, W) uint8 images, or None."""
    if images.ndim != 4:
        return f"images have shape {images.shape}; expected 4 dimensions (N, C, H, W)"
    n, c, h, w = images.shape
    if n == 0:
        return "split is empty (0 images)"
    if c not in (1, 3):
        return f"images have {c} channels (shape {images.shape}); expected 1 (grey) or 3 (RGB)"
    if h < MIN_SIDE or w < MIN_SIDE:
        return f"images are {h}x{w} pixels (shape {images.shape}); height and width must be at least {MIN_SIDE}"
    return _pixel_problem(images)


def _labels_problem(labels: np.ndarray, n_classes: int) -> str | None:
    """Why ``labels`` are not 1-D integer labels of ``n_classes`` classes, or None."""
    if labels.ndim != 1:
        return f"labels have shape {labels.shape}; expected one integer label per image, shape (N,)"
    if labels.dtype.kind not in "iu":
        return f"labels are {labels.dtype.name}; expected integers"
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= n_classes:
            return (f"labels must lie in [0, {n_classes - 1}] ({n_classes} classes); "
                    f"found smallest {low}, largest {high}")
    return None


def _classes_problem(classes: list[str]) -> str | None:
    if not classes:
        return "no class names (the classes list is empty)"
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        return f"class names repeat: {', '.join(map(repr, repeated))}"
    return None


def dataset_problem(dataset: Dataset) -> str | None:
    """What is wrong with ``dataset`` (the first problem found), or None when it is usable."""
    problem = _classes_problem(dataset.classes)
    if problem:
        return problem
    for name in ("train", "test"):
        split = getattr(dataset, name)
        images, labels = np.asarray(split.images), np.asarray(split.labels)
        problem = _images_problem(images) or _labels_problem(labels, len(dataset.classes))
        if problem:
            return f"{name} {problem}"
        if len(labels) != len(images):
            return f"{name} has {len(images)} images but {len(labels)} labels"
    train, test = dataset.train.images.shape[1:], dataset.test.images.shape[1:]
    if train != test:
        return (f"train images are {'x'.join(map(str, train))} but test images are {'x'.join(map(str, test))} "
                "(C x H x W); both splits must have one image shape")
    return None


def validate_dataset(dataset: Dataset, where: str, fix: str = "fix the source or fetch it again") -> None:
    """Raise :class:`DataFormatError` naming ``where`` and the problem when ``dataset`` is not usable:
    images (N, C, H, W) uint8 with C 1 or 3 and H, W >= 8, no empty split, one integer label per image
    within the classes, one image shape for both splits, distinct class names."""
    problem = dataset_problem(dataset)
    if problem:
        raise DataFormatError(f"{where}: {problem}; {fix}")


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
        images, labels = read_idx(found["images"]), read_idx(found["labels"])
        if images.ndim != 3:
            raise DataFormatError(f"{found['images']}: images have shape {images.shape}; expected "
                                  "3 dimensions (N, H, W); fetch the file again")
        images, problem = _as_pixels(images)
        if problem:
            raise DataFormatError(f"{found['images']}: {problem}; fetch the file again")
        problem = _labels_problem(labels, len(classes))
        if problem:
            raise DataFormatError(f"{found['labels']}: {problem}; fetch the file again")
        if len(images) != len(labels):
            raise DataFormatError(
                f"{folder}: {found['images'].name} holds {len(images)} images but {found['labels'].name} "
                f"holds {len(labels)} labels; fetch both files again"
            )
        splits[split] = Split(np.ascontiguousarray(images[:, None, :, :]), labels.astype(np.int64))
    dataset = Dataset(name, splits["train"], splits["test"], classes, source=str(folder.resolve()))
    validate_dataset(dataset, str(folder), fix="fetch the dataset again")
    return dataset


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
        if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
            raise DataFormatError(f"{path}: not a CIFAR-10 batch (no 'data' and 'labels'); fetch it again")
        data, problem = _as_pixels(np.asarray(entry[b"data"]))
        if problem:
            raise DataFormatError(f"{path}: {problem}; fetch it again")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataFormatError(f"{path}: expected rows of 3072 pixels, got {data.shape}")
        labels = np.asarray(entry[b"labels"])
        problem = _labels_problem(labels, len(classes))
        if problem is None and len(labels) != len(data):
            problem = f"{len(data)} images but {len(labels)} labels"
        if problem:
            raise DataFormatError(f"{path}: {problem}; fetch it again")
        return Split(data.reshape(-1, 3, 32, 32), labels.astype(np.int64))

    problem = _classes_problem(classes)
    if problem:
        raise DataFormatError(f"{meta_path}: {problem}; fetch it again")
    train_paths = sorted(folder.glob("data_batch_*"))
    parts = [batch(p) for p in train_paths]
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    dataset = Dataset("cifar10", train, batch(folder / "test_batch"), classes, source=str(folder.resolve()))
    validate_dataset(dataset, str(folder), fix="fetch the dataset again")
    return dataset


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
            group.create_dataset("labels", data=np.asarray(split.labels, dtype=np.int64))
        h5.attrs["name"] = dataset.name
        h5.attrs["classes"] = json.dumps(dataset.classes)
        h5.attrs["source"] = dataset.source


def prepare(name: str, settings: dict[str, Any] | None, out_path: str | Path, seed: int = 0) -> Dataset:
    """Read dataset ``name`` from its raw source, check it, and write ``out_path`` (nothing when it fails)."""
    dataset = load_raw(name, settings, seed=seed)
    fix = "change its settings in the config" if name == "synthetic" else "fix the source or fetch it again"
    validate_dataset(dataset, f"dataset '{name}' from {dataset.source}", fix=fix)
    write_prepared(dataset, out_path)
    return dataset


_PREPARED = ("train/images", "train/labels", "test/images", "test/labels")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_prepared(path: Path) -> tuple[Dataset | None, str | None]:
    """The dataset in a prepared file, or what makes it unreadable."""
    try:
        h5 = open_h5(path, damaged="keep")
    except CorruptFileError as err:
        return None, f"cannot be read as HDF5: {err.__cause__ or err}"
    with h5:
        arrays = {}
        for key in _PREPARED:
            if not isinstance(h5.get(key), h5py.Dataset):
                return None, f"no dataset '{key}'"
            try:
                arrays[key] = np.asarray(h5[key][()])
            except OSError as err:
                return None, f"'{key}' cannot be read: {err}"
        for key in ("name", "classes", "source"):
            if key not in h5.attrs:
                return None, f"no attribute '{key}'"
        name, classes, source = (_text(h5.attrs[key]) for key in ("name", "classes", "source"))
        try:
            classes = json.loads(classes)
        except (TypeError, ValueError):
            classes = None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            return None, "attribute 'classes' is not a JSON list of names"
    splits = {s: Split(arrays[f"{s}/images"], arrays[f"{s}/labels"]) for s in ("train", "test")}
    return Dataset(name, splits["train"], splits["test"], classes, source), None


def load_prepared(path: str | Path, name: str | None = None) -> Dataset:
    """Read a prepared ``data/{dataset}.h5`` file into memory, checked by :func:`dataset_problem`.

    A damaged file (a dataset or attribute missing, pixels not uint8, NaN, labels outside the classes, a
    wrong shape, another dataset than ``name`` when given) is moved aside and a DamagedFileError raised;
    the next ``snakemake`` run prepares it again from the raw data.
    """
    path = Path(path)
    dataset, problem = _read_prepared(path)
    if dataset is not None:
        problem = dataset_problem(dataset)
        if problem is None and name is not None and dataset.name != name:
            problem = f"it holds dataset '{dataset.name}', expected '{name}'"
    if problem:
        raise quarantine(path, problem, rebuilt_by="rule prepare_data")
    for split in (dataset.train, dataset.test):
        split.labels = split.labels.astype(np.int64, copy=False)
    return dataset


def to_model_space(images: np.ndarray | Any) -> Any:
    """uint8 pixels in [0, 255] -> floats in [-1, 1], the models' input space (works on NumPy or torch)."""
    return images / 127.5 - 1.0
