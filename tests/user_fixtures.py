"""Datasets of a user's own, written to disk as the formats advflow reads (advflow.data's docstring): an .npz file
or a folder of images. Shared by the tests of the readers and of the workflow on such a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advflow.data import make_synthetic


def class_names(num_classes: int) -> list[str]:
    """Names that sort in label order (a folder dataset's classes are its sorted folder names)."""
    return [f"class_{i:02d}" for i in range(num_classes)]


def make_image_dataset(n_train: int = 60, n_test: int = 30, size: int = 16, channels: int = 3,
                       num_classes: int = 3, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, H, W, C) and int64 labels of a learnable dataset
    (advflow.data.make_synthetic's class patterns, transposed to NHWC)."""
    data = make_synthetic(n_train=n_train, n_test=n_test, size=size, channels=channels, num_classes=num_classes,
                          seed=seed)
    nhwc = [np.ascontiguousarray(split.images.transpose(0, 2, 3, 1)) for split in (data.train, data.test)]
    return nhwc[0], data.train.labels.copy(), nhwc[1], data.test.labels.copy()


def write_npz(path: str | Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              layout: str = "NHWC", classes: list[str] | None = None, compressed: bool = False) -> Path:
    """Write NHWC images as an npz dataset, laid out as ``layout`` ("NHWC" or "NCHW"), with a ``classes`` array
    when given."""
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout is NHWC or NCHW, not {layout!r}")
    order = (0, 1, 2, 3) if layout == "NHWC" else (0, 3, 1, 2)
    arrays = {"x_train": np.ascontiguousarray(x_train.transpose(order)), "y_train": y_train,
              "x_test": np.ascontiguousarray(x_test.transpose(order)), "y_test": y_test}
    if classes is not None:
        arrays["classes"] = np.array(classes, dtype=str)
    path = Path(path)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_image_folder(root: str | Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                       y_test: np.ndarray, classes: list[str]) -> Path:
    """Write NHWC uint8 images (C 1 or 3) as a folder dataset: ``root/{train,test}/<class>/{index:05d}.png``, index
    the image's position in its split. Every class gets a train folder (it may stay empty)."""
    from PIL import Image

    root = Path(root)
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        for name in classes if split == "train" else []:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = image[:, :, 0] if image.shape[2] == 1 else image
            Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{index:05d}.png")
    return root
