"""Data stage: read a dataset from where it lives and write one prepared HDF5 file.

Pixels stay uint8 in the prepared file; models see them scaled to [-1, 1] (docs/method.md, "Data"),
see :func:`to_model_space`.

Prepared file layout (``data/{dataset}.h5``)::

    train/images  (N, C, H, W) uint8     train/labels  (N,) int64
    test/images   (M, C, H, W) uint8     test/labels   (M,) int64
    attrs: name, classes (JSON list), source (where the raw data came from)

Every dataset is checked by :func:`validate_dataset` before it is written and when it is read back;
a prepared file that fails is moved aside (``<name>.damaged``) and rebuilt by the next run.

Built-in datasets: ``fashion_mnist`` and ``mnist`` (IDX files), ``cifar10`` (the pickled python batches; nothing
else is ever unpickled), ``synthetic`` (generated, :func:`make_synthetic`). A dataset of the user's own is
configured as ``datasets: NAME: {format: npz | folder, path: ...}`` with ``dataset: NAME`` (NAME not a built-in's),
and read by :func:`read_npz` or :func:`read_image_folder`; every message names the file, the problem and the fix.

``format: npz`` -- one ``.npz`` file (``numpy.savez`` or ``savez_compressed``) holding

* ``x_train``, ``x_test``: uint8 pixels (integers of another dtype are converted when they all lie in [0, 255];
  floats are refused). Shapes: (N, H, W) is grey; a 4-D array is (N, C, H, W) when axis 1 is 1 or 3 and the last
  axis is not, else (N, H, W, C) when the last axis is 1 or 3 -- so an ambiguous (N, 3, H, 3) is read as NHWC --
  and refused when neither axis is 1 or 3 (:func:`advflow.workflow.catalog.image_layout`). Height and width are
  at least 8; both splits have one image shape.
* ``y_train``, ``y_test``: integer labels, shape (N,), one per image, in [0, K).
* optionally ``classes``: K class names, a 1-D array of strings; without it the classes are "0".."K-1" with K one
  more than the largest label of either split.

The file is read with ``allow_pickle=False``: an array of Python objects is refused, never unpickled.

``format: folder`` -- ``path/train/<class>/*.png|*.jpg|*.jpeg`` and ``path/test/<class>/...`` (extensions in any
case; other files, hidden files and deeper folders ignored), read with Pillow. The classes are the sorted names of
the subfolders of ``train/``; ``test/`` may lack a class but has no class ``train/`` lacks; a class folder of
``train/`` is not empty. Images are ordered by class, then by file name. Grey images (Pillow modes L, 1 and LA --
alpha dropped -- and 16/32-bit integer modes whose values lie in [0, 255]) give 1 channel when every image is grey;
any other mode is converted to RGB (alpha dropped), and then every image is RGB (grey replicated). Floating-point
images (mode F) and integer ones beyond 255 are refused. All images have one size (width x height).
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
    CUSTOM_EXPECTS, FASHION_MNIST_CLASSES, GREY_MODES, HOW_TO_GET, IDX_STEMS, MIN_SIDE, MNIST_CLASSES,
    WIDE_GREY_MODES, DatasetMissingError, cifar_folder, find_idx, image_folder_listing, image_layout, is_custom,
    locate_dataset, npz_class_names, npz_problems,
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

# MIN_SIDE (from advflow.workflow.catalog): the smallest image height and width the models accept.


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


# --------------------------------------------------------------------------- datasets of the user's own


def to_nchw(images: np.ndarray) -> np.ndarray:
    """An image array laid out as :func:`advflow.workflow.catalog.image_layout` says, as contiguous (N, C, H, W)."""
    layout = image_layout(images.shape)
    if layout == "NHW":
        return np.ascontiguousarray(images[:, None, :, :])
    if layout == "NHWC":
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if layout == "NCHW":
        return np.ascontiguousarray(images)
    raise DataFormatError(f"images of shape {images.shape} are neither (N, H, W), (N, C, H, W) nor (N, H, W, C) "
                          "with 1 or 3 channels")


def read_npz(path: str | Path, name: str = "npz") -> Dataset:
    """Read a dataset of the user's own from one .npz file (the module docstring gives the format); nothing is
    unpickled. DatasetMissingError when ``path`` is not a file; DataFormatError naming the file, the problem and
    the fix (:func:`advflow.workflow.catalog.npz_problems`, pixel values included) when it is not usable."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DatasetMissingError(f"{path}: not found{' (a folder)' if path.is_dir() else ''}; format npz expects "
                                  f"{CUSTOM_EXPECTS['npz']}")
    problems = npz_problems(path, pixel_values=True)
    if problems:
        raise DataFormatError(problems[0])
    splits = {}
    with np.load(path, allow_pickle=False) as npz:
        classes = npz_class_names(npz["classes"]) if "classes" in npz.files else None
        for split in ("train", "test"):
            images, problem = _as_pixels(np.asarray(npz[f"x_{split}"]))
            if problem:  # npz_problems has refused these already
                raise DataFormatError(f"{path}: x_{split} {problem}")
            splits[split] = Split(to_nchw(images), np.asarray(npz[f"y_{split}"]).astype(np.int64))
    if classes is None:
        classes = [str(i) for i in range(1 + max(int(s.labels.max()) for s in splits.values()))]
    dataset = Dataset(name, splits["train"], splits["test"], classes, source=str(path))
    validate_dataset(dataset, str(path), fix="fix the file")
    return dataset


def _read_image(file: Path) -> np.ndarray:
    """One image of a folder dataset: (H, W) uint8 when grey, (H, W, 3) uint8 else (module docstring)."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            if image.mode in GREY_MODES:
                return np.asarray(image.convert("L"), dtype=np.uint8)
            if image.mode in WIDE_GREY_MODES:
                pixels, problem = _as_pixels(np.asarray(image))
                if problem:
                    raise DataFormatError(f"{file}: {image.mode} image, {problem}; write 8-bit images (mode L or RGB)")
                return pixels
            if image.mode == "F":
                raise DataFormatError(f"{file}: floating-point image (mode F); write 8-bit images (mode L or RGB)")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except DataFormatError:
        raise
    except Exception as err:  # Pillow raises many types on a damaged or foreign file
        raise DataFormatError(f"{file}: cannot be read as an image ({type(err).__name__}: {err}); replace or "
                              "remove the file") from err


def read_image_folder(root: str | Path, name: str = "folder") -> Dataset:
    """Read a dataset of the user's own from a folder of images (the module docstring gives the layout).
    DatasetMissingError when ``root`` is not a folder; DataFormatError naming the file or folder, the problem and
    the fix (:func:`advflow.workflow.catalog.image_folder_listing`, then each image: unreadable, another size)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetMissingError(f"{root}: not found{' (a file)' if root.is_file() else ''}; format folder expects "
                                  f"{CUSTOM_EXPECTS['folder']}")
    classes, files, problems = image_folder_listing(root)
    if problems:
        raise DataFormatError(problems[0])
    first: tuple[Path, tuple[int, int]] | None = None
    pixels: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for _, file in files[split]:
            image = _read_image(file)
            size = (image.shape[1], image.shape[0])
            if first is None:
                first = (file, size)
            elif size != first[1]:
                raise DataFormatError(f"{file}: image is {size[0]}x{size[1]} pixels (width x height) but the first "
                                      f"image, {first[0]}, is {first[1][0]}x{first[1][1]}; all images must have one "
                                      "size, resize them")
            pixels[split].append(image)
    colour = any(image.ndim == 3 for split in pixels.values() for image in split)
    splits = {}
    for split in ("train", "test"):
        if colour:
            images = np.stack([image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
                               for image in pixels[split]]).transpose(0, 3, 1, 2)
        else:
            images = np.stack(pixels[split])[:, None, :, :]
        labels = np.array([label for label, _ in files[split]], dtype=np.int64)
        splits[split] = Split(np.ascontiguousarray(images), labels)
    dataset = Dataset(name, splits["train"], splits["test"], classes, source=str(root))
    validate_dataset(dataset, str(root), fix="fix the images")
    return dataset


# --------------------------------------------------------------------------- locate / load / write


def load_raw(name: str, settings: dict[str, Any] | None = None, seed: int = 0) -> Dataset:
    """Read dataset ``name`` from its raw files (or generate it), as configured in ``settings``. Settings with a
    ``format`` (:data:`advflow.workflow.catalog.CUSTOM_FORMATS`) name a dataset of the user's own, read from its
    resolved ``path`` (:func:`read_npz`, :func:`read_image_folder`); a built-in name is refused for one (ValueError),
    a missing path raises DatasetMissingError."""
    settings = dict(settings or {})
    if is_custom(settings):
        path = locate_dataset(name, settings)  # ValueError (built-in name, unknown format), DatasetMissingError
        return read_npz(path, name) if settings["format"] == "npz" else read_image_folder(path, name)
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
    fix = ("fix the files it was read from" if is_custom(settings) else
           "change its settings in the config" if name == "synthetic" else "fix the source or fetch it again")
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
