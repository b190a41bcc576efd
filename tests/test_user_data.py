"""Datasets of the user's own (``datasets: NAME: {format: npz | folder, path: ...}``): the npz and image-folder
readers, their cheap checks in the catalog (custom_dataset_problems, image_shape, split_sizes), and every bad input's
message (the file, the problem, the fix)."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from advflow.data import (
    DataFormatError, load_prepared, load_raw, make_synthetic, prepare, read_image_folder, read_npz,
)
from advflow.workflow.catalog import (
    CUSTOM_FORMATS, SYNTHETIC_DEFAULTS, DatasetMissingError, custom_dataset_problems, image_layout, image_shape,
    locate_dataset, split_sizes,
)
from user_fixtures import class_names, make_image_dataset, write_image_folder, write_npz

REPO = Path(__file__).resolve().parents[1]
CLASSES = class_names(3)


@pytest.fixture(scope="module")
def arrays():
    """(x_train, y_train, x_test, y_test): NHWC uint8 RGB 16x16, 3 classes."""
    return make_image_dataset(n_train=24, n_test=12, size=16, channels=3, num_classes=3, seed=0)


def nchw(images):
    return images.transpose(0, 3, 1, 2)


def by_class(images, labels):
    """Images and labels ordered as a folder dataset orders them: by label, then by position (file name)."""
    order = np.lexsort((np.arange(len(labels)), labels))
    return images[order], labels[order]


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_in_either_layout_loads_as_the_arrays_in_nchw_uint8(tmp_path, arrays, layout):
    x_train, y_train, x_test, y_test = arrays
    path = write_npz(tmp_path / "mine.npz", *arrays, layout=layout)
    dataset = load_raw("mine", {"format": "npz", "path": str(path)})
    assert dataset.train.images.dtype == np.uint8 and dataset.train.images.shape == (24, 3, 16, 16)
    np.testing.assert_array_equal(dataset.train.images, nchw(x_train))
    np.testing.assert_array_equal(dataset.test.images, nchw(x_test))
    np.testing.assert_array_equal(dataset.train.labels, y_train)
    np.testing.assert_array_equal(dataset.test.labels, y_test)
    assert dataset.train.labels.dtype == np.int64
    assert dataset.name == "mine" and dataset.source == str(path.resolve())


def test_npz_of_grey_images_without_a_channel_axis_gives_one_channel(tmp_path):
    x_train, y_train, x_test, y_test = make_image_dataset(n_train=10, n_test=5, channels=1, num_classes=2)
    path = tmp_path / "grey.npz"
    np.savez(path, x_train=x_train[..., 0], y_train=y_train, x_test=x_test[..., 0], y_test=y_test)
    dataset = read_npz(path, "grey")
    assert dataset.shape == (1, 16, 16)
    np.testing.assert_array_equal(dataset.train.images[:, 0], x_train[..., 0])


def test_image_layout_rule_prefers_nchw_only_when_the_last_axis_is_not_a_channel_count():
    assert image_layout((5, 3, 16, 16)) == "NCHW"
    assert image_layout((5, 1, 16, 16)) == "NCHW"
    assert image_layout((5, 16, 16, 3)) == "NHWC"
    assert image_layout((5, 16, 16, 1)) == "NHWC"
    assert image_layout((5, 3, 16, 3)) == "NHWC"  # ambiguous: NHWC
    assert image_layout((5, 16, 16)) == "NHW"
    assert image_layout((5, 2, 16, 16)) is None and image_layout((5, 16, 16, 2)) is None
    assert image_layout((5, 256)) is None


def test_npz_class_names_come_from_its_classes_array(tmp_path, arrays):
    path = write_npz(tmp_path / "named.npz", *arrays, classes=["cat", "dog", "emu"])
    assert read_npz(path).classes == ["cat", "dog", "emu"]


def test_npz_without_classes_names_them_0_to_the_largest_label_of_either_split(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    y_test = y_test.copy()
    y_test[0] = 5  # the largest label only in the test split: 6 classes
    path = write_npz(tmp_path / "unnamed.npz", x_train, y_train, x_test, y_test)
    assert read_npz(path).classes == ["0", "1", "2", "3", "4", "5"]


def test_npz_integer_pixels_of_another_dtype_in_0_255_are_converted_exactly(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    path = tmp_path / "int64.npz"
    np.savez(path, x_train=x_train.astype(np.int64), y_train=y_train.astype(np.int32),
             x_test=x_test.astype(np.uint16), y_test=y_test.astype(np.uint8))
    dataset = read_npz(path)
    assert dataset.train.images.dtype == np.uint8
    np.testing.assert_array_equal(dataset.train.images, nchw(x_train))
    np.testing.assert_array_equal(dataset.test.labels, y_test)


def test_compressed_npz_loads_too(tmp_path, arrays):
    path = write_npz(tmp_path / "small.npz", *arrays, compressed=True)
    np.testing.assert_array_equal(read_npz(path).train.images, nchw(arrays[0]))


# --------------------------------------------------------------------------- image folder


def test_image_folder_loads_the_same_images_and_labels_as_the_npz_ordered_by_class_then_file(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    write_npz(tmp_path / "mine.npz", *arrays)
    write_image_folder(tmp_path / "mine", *arrays, classes=CLASSES)
    from_npz = load_raw("mine", {"format": "npz", "path": str(tmp_path / "mine.npz")})
    from_folder = load_raw("mine", {"format": "folder", "path": str(tmp_path / "mine")})
    assert from_folder.classes == CLASSES and from_folder.shape == (3, 16, 16)
    for split in ("train", "test"):
        npz_split, folder_split = getattr(from_npz, split), getattr(from_folder, split)
        images, labels = by_class(npz_split.images, npz_split.labels)
        np.testing.assert_array_equal(folder_split.images, images)
        np.testing.assert_array_equal(folder_split.labels, labels)
    assert from_folder.source == str((tmp_path / "mine").resolve())


def test_folder_of_grey_images_gives_one_channel(tmp_path):
    x_train, y_train, x_test, y_test = make_image_dataset(n_train=9, n_test=6, channels=1, num_classes=3)
    root = write_image_folder(tmp_path / "grey", x_train, y_train, x_test, y_test, classes=CLASSES)
    dataset = read_image_folder(root)
    assert dataset.shape == (1, 16, 16)
    np.testing.assert_array_equal(dataset.train.images, by_class(nchw(x_train), y_train)[0])


def test_folder_mixing_grey_and_colour_is_read_as_rgb_with_grey_replicated(tmp_path, arrays):
    root = write_image_folder(tmp_path / "mixed", *arrays, classes=CLASSES)
    grey_file = root / "train" / CLASSES[0] / "grey.png"
    grey = np.full((16, 16), 77, dtype=np.uint8)
    Image.fromarray(grey).save(grey_file)
    dataset = read_image_folder(root)
    assert dataset.shape == (3, 16, 16)
    # "grey.png" sorts after the numbered files of class 0: the last image of that class
    position = int((dataset.train.labels == 0).sum()) - 1
    np.testing.assert_array_equal(dataset.train.images[position], np.full((3, 16, 16), 77, dtype=np.uint8))


def test_folder_reads_jpeg_and_upper_case_extensions_and_ignores_other_files(tmp_path, arrays):
    root = write_image_folder(tmp_path / "ext", *arrays, classes=CLASSES)
    before = read_image_folder(root)
    Image.fromarray(arrays[0][0]).save(root / "train" / CLASSES[1] / "zz_extra.JPG", format="JPEG")
    Image.fromarray(arrays[0][0]).save(root / "train" / CLASSES[1] / "zz_extra2.Jpeg", format="JPEG")
    (root / "train" / CLASSES[1] / "notes.txt").write_text("not an image")
    after = read_image_folder(root)
    assert len(after.train.labels) == len(before.train.labels) + 2
    assert (after.train.labels == 1).sum() == (before.train.labels == 1).sum() + 2


def test_folder_test_split_may_lack_a_class(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    keep = y_test != 2
    root = write_image_folder(tmp_path / "partial", x_train, y_train, x_test[keep], y_test[keep], classes=CLASSES)
    dataset = read_image_folder(root)
    assert dataset.classes == CLASSES and set(dataset.test.labels.tolist()) == {0, 1}


# --------------------------------------------------------------------------- prepare


@pytest.mark.parametrize("fmt", ["npz", "folder"])
def test_prepare_writes_a_file_that_load_prepared_reads_back_equal(tmp_path, arrays, fmt):
    path = (write_npz(tmp_path / "mine.npz", *arrays, classes=CLASSES) if fmt == "npz"
            else write_image_folder(tmp_path / "mine", *arrays, classes=CLASSES))
    out = tmp_path / "data" / "mine.h5"
    prepared = prepare("mine", {"format": fmt, "path": str(path)}, out)
    back = load_prepared(out, "mine")
    assert back.name == "mine" and back.classes == CLASSES and back.source == str(path.resolve())
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(back, split).images, getattr(prepared, split).images)
        np.testing.assert_array_equal(getattr(back, split).labels, getattr(prepared, split).labels)
    assert sorted(back.train.images.reshape(len(back.train.images), -1).tolist()) == sorted(
        nchw(arrays[0]).reshape(len(arrays[0]), -1).tolist())


def test_prepare_writes_nothing_for_a_bad_file(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=x_train / 255.0, y_train=y_train, x_test=x_test, y_test=y_test)
    out = tmp_path / "bad.h5"
    with pytest.raises(DataFormatError):
        prepare("bad", {"format": "npz", "path": str(path)}, out)
    assert not out.exists()


# --------------------------------------------------------------------------- image_shape and split_sizes


def test_image_shape_of_npz_folder_and_built_ins(tmp_path, arrays):
    npz = write_npz(tmp_path / "mine.npz", *arrays, layout="NCHW")
    folder = write_image_folder(tmp_path / "mine", *arrays, classes=CLASSES)
    grey = write_image_folder(tmp_path / "grey", *make_image_dataset(n_train=6, n_test=3, size=20, channels=1),
                              classes=CLASSES)
    assert image_shape("mine", {"format": "npz", "path": str(npz)}) == (3, 16, 16, 3)
    assert image_shape("mine", {"format": "folder", "path": str(folder)}) == (3, 16, 16, 3)
    assert image_shape("grey", {"format": "folder", "path": str(grey)}) == (1, 20, 20, 3)
    assert image_shape("fashion_mnist", {}) == (1, 28, 28, 10)
    assert image_shape("mnist", None) == (1, 28, 28, 10)
    assert image_shape("cifar10", {}) == (3, 32, 32, 10)
    assert image_shape("synthetic", {}) == (1, 12, 12, 10)
    assert image_shape("synthetic", {"channels": 3, "size": 16, "num_classes": 4}) == (3, 16, 16, 4)


def test_image_shape_of_npz_counts_classes_from_the_names_or_the_labels(tmp_path, arrays):
    named = write_npz(tmp_path / "named.npz", *arrays, classes=["a", "b", "c", "d", "e"])
    assert image_shape("named", {"format": "npz", "path": str(named)}) == (3, 16, 16, 5)
    x_train, y_train, x_test, y_test = arrays
    grey = tmp_path / "grey.npz"
    np.savez(grey, x_train=x_train[..., 0], y_train=y_train, x_test=x_test[..., 0], y_test=np.full_like(y_test, 6))
    assert image_shape("grey", {"format": "npz", "path": str(grey)}) == (1, 16, 16, 7)


def test_image_shape_reads_the_prepared_file_when_there_is_one(tmp_path, arrays):
    out = tmp_path / "mnist.h5"
    prepare("mine", {"format": "npz", "path": str(write_npz(tmp_path / "mine.npz", *arrays))}, out)
    assert image_shape("mnist", {}, prepared=out) == (3, 16, 16, 3)  # the file, not MNIST's published shape
    assert image_shape("mnist", {}, prepared=tmp_path / "absent.h5") == (1, 28, 28, 10)


def test_image_shape_is_none_when_it_cannot_be_known(tmp_path):
    assert image_shape("mine", {"format": "npz", "path": str(tmp_path / "absent.npz")}) is None
    assert image_shape("mine", {}) is None
    (tmp_path / "empty").mkdir()
    assert image_shape("mine", {"format": "folder", "path": str(tmp_path / "empty")}) is None


def test_split_sizes_of_custom_datasets_come_from_their_files(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    per_class = np.bincount(y_test, minlength=3).tolist()
    npz = write_npz(tmp_path / "mine.npz", *arrays)
    folder = write_image_folder(tmp_path / "mine", *arrays, classes=CLASSES)
    assert split_sizes("mine", {"format": "npz", "path": str(npz)}) == {
        "train": 24, "test": 12, "test_per_class": per_class, "where": str(npz.resolve())}
    assert split_sizes("mine", {"format": "folder", "path": str(folder)}) == {
        "train": 24, "test": 12, "test_per_class": per_class, "where": str(folder.resolve())}
    keep = y_test != 0
    partial = write_image_folder(tmp_path / "partial", x_train, y_train, x_test[keep], y_test[keep], classes=CLASSES)
    assert split_sizes("mine", {"format": "folder", "path": str(partial)})["test_per_class"] == [0, *per_class[1:]]
    assert split_sizes("mine", {"format": "npz", "path": str(tmp_path / "absent.npz")}) is None


def test_split_sizes_of_built_ins_are_unchanged():
    assert split_sizes("fashion_mnist", {})["train"] == 60000
    assert split_sizes("cifar10", None)["test_per_class"] == [1000] * 10
    assert split_sizes("synthetic", {"n_test": 7, "num_classes": 3})["test_per_class"] == [3, 2, 2]


def test_synthetic_defaults_of_the_catalog_are_make_synthetics():
    defaults = {k: v.default for k, v in inspect.signature(make_synthetic).parameters.items()}
    assert SYNTHETIC_DEFAULTS == {k: defaults[k] for k in SYNTHETIC_DEFAULTS}
    assert set(SYNTHETIC_DEFAULTS) == {"n_train", "n_test", "num_classes", "size", "channels"}


# --------------------------------------------------------------------------- locate_dataset and the catalog's imports


def test_locate_dataset_returns_a_custom_datasets_resolved_path(tmp_path, arrays):
    npz = write_npz(tmp_path / "mine.npz", *arrays)
    assert locate_dataset("mine", {"format": "npz", "path": str(npz)}) == npz.resolve()
    with pytest.raises(ValueError, match=r"unknown dataset 'mine'.*datasets\.mine\.format"):
        locate_dataset("mine", {"path": str(npz)})


def test_catalog_imports_no_numpy_torch_or_pillow():
    code = ("import sys; import advflow.workflow.catalog; "
            "print(sorted(m for m in ('numpy', 'torch', 'PIL', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src")})
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- bad inputs

def _mark_unpickled(marker: str) -> str:
    """Called only if a pickle in a test file is ever loaded: leaves a marker file."""
    Path(marker).write_text("unpickled")
    return "label"


class _Trap:
    """Unpickles into a call of _mark_unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _mark_unpickled, (self.marker,)


def _npz(tmp_path, arrays, **changes):
    x_train, y_train, x_test, y_test = arrays
    content = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **changes}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in content.items() if v is not None})
    return {"format": "npz", "path": str(path)}


def _folder(tmp_path, arrays, change):
    root = write_image_folder(tmp_path / "bad", *arrays, classes=CLASSES)
    change(root)
    return {"format": "folder", "path": str(root)}


def _text_file(path):
    path.write_text("x_train,y_train\n")
    return {"format": "npz", "path": str(path)}


def _resize_one(root):
    file = root / "test" / CLASSES[1] / sorted(p.name for p in (root / "test" / CLASSES[1]).iterdir())[0]
    Image.open(file).resize((20, 16)).save(file)


def _garble_one(root):
    (root / "train" / CLASSES[2] / "00000_broken.png").write_bytes(b"\x89PNG not really")


def _strip_test(root):
    for file in (root / "test").rglob("*.png"):
        file.unlink()
    for folder in (root / "test").iterdir():
        folder.rmdir()
    (root / "test").rmdir()


BAD = {
    # id: (settings(tmp_path, arrays), what the loader raises, text of its message, text of the cheap check's)
    "float pixels": (lambda t, a: _npz(t, a, x_train=a[0].astype(np.float32) / 255),
                     DataFormatError, "x_train pixels are float32 (values 0 to 1); write uint8 pixels",
                     "x_train pixels are float32; write uint8 pixels"),
    "int pixels beyond 255": (lambda t, a: _npz(t, a, x_test=a[2].astype(np.int16) * 2),
                              DataFormatError, "x_test pixels are int16 with values", None),
    "wrong ndim": (lambda t, a: _npz(t, a, x_train=a[0].reshape(24, -1)),
                   DataFormatError, "x_train has shape (24, 768); expected images (N, H, W) grey", None),
    "two channels": (lambda t, a: _npz(t, a, x_test=a[2][..., :2]),
                     DataFormatError, "x_test has shape (12, 16, 16, 2): neither axis 1 (N, C, H, W) nor axis 3", None),
    "too small": (lambda t, a: _npz(t, a, x_train=a[0][:, :4, :4], x_test=a[2][:, :4, :4]),
                  DataFormatError, "x_train images are 4x4 pixels", None),
    "labels beyond the classes": (lambda t, a: _npz(t, a, classes=np.array(["a", "b"])),
                                  DataFormatError, "y_train labels must lie in [0, 1] (2 classes named in 'classes')",
                                  None),
    "negative labels": (lambda t, a: _npz(t, a, y_test=a[3] - 1),
                        DataFormatError, "y_test labels must lie in [0, 2]", None),
    "float labels": (lambda t, a: _npz(t, a, y_train=a[1].astype(np.float64)),
                     DataFormatError, "y_train labels are float64; write integer labels", None),
    "one-hot labels": (lambda t, a: _npz(t, a, y_test=np.eye(3, dtype=np.int64)[a[3]]),
                       DataFormatError, "y_test has shape (12, 3); write one integer label per image", None),
    "missing array": (lambda t, a: _npz(t, a, x_test=None),
                      DataFormatError, "missing array x_test (the file holds x_train, y_test, y_train)", None),
    "length mismatch": (lambda t, a: _npz(t, a, y_train=a[1][:-1]),
                        DataFormatError, "x_train holds 24 images but y_train holds 23 labels", None),
    "split shapes differ": (lambda t, a: _npz(t, a, x_test=a[2][:, :12, :12]),
                            DataFormatError, "x_train images are 3x16x16 but x_test images are 3x12x12", None),
    "repeated class names": (lambda t, a: _npz(t, a, classes=np.array(["a", "b", "a"])),
                             DataFormatError, "class names repeat: 'a'", None),
    "not an npz": (lambda t, a: _text_file(t / "notes.npz"), DataFormatError, "notes.npz: not an .npz file", None),
    "missing path": (lambda t, a: {"format": "npz", "path": str(t / "nowhere.npz")},
                     DatasetMissingError, "nowhere.npz not found; format npz expects an .npz file", None),
    "folder for npz": (lambda t, a: {"format": "npz", "path": str(t)},
                       DatasetMissingError, "is a folder; format npz expects", None),
    "no path": (lambda t, a: {"format": "folder"}, DatasetMissingError, "datasets.mine.path is not set", None),
    "unknown format": (lambda t, a: {"format": "csv", "path": str(t)},
                       ValueError, "datasets.mine.format is 'csv'; allowed: npz, folder", None),
    "mismatched sizes": (lambda t, a: _folder(t, a, _resize_one),
                         DataFormatError, "image is 20x16 pixels (width x height) but the first image", None),
    "unreadable image": (lambda t, a: _folder(t, a, _garble_one),
                         DataFormatError, "00000_broken.png: cannot be read as an image", None),
    "test class not in train": (lambda t, a: _folder(t, a, lambda r: (r / "test" / "extra").mkdir()),
                                DataFormatError, "class 'extra' has no folder in train/", "class 'extra' has no folder"),
    "empty train class": (lambda t, a: _folder(t, a, lambda r: (r / "train" / "zz_empty").mkdir()),
                          DataFormatError, "zz_empty: no images", None),
    "no test folder": (lambda t, a: _folder(t, a, _strip_test), DataFormatError, "no test/ folder", None),
    "images outside class folders": (
        lambda t, a: _folder(t, a, lambda r: Image.fromarray(a[0][0]).save(r / "train" / "loose.png")),
        DataFormatError, "1 image outside the class folders (loose.png); move them into train/<class>/", None),
}
# Config problems: no file to name.
CONFIG_ONLY = {"no path", "unknown format"}
# Problems the cheap check leaves to prepare (they need the pixels): their message comes from the loader only.
NEEDS_PIXELS = {"int pixels beyond 255", "mismatched sizes", "unreadable image"}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_input_gives_a_message_naming_the_file_the_problem_and_the_fix(tmp_path, arrays, case):
    make, error, text, _ = BAD[case]
    settings = make(tmp_path, arrays)
    with pytest.raises(error) as raised:
        load_raw("mine", settings)
    message = str(raised.value)
    assert text in message
    if case not in CONFIG_ONLY:
        assert str(Path(settings["path"]).resolve()) in message  # the file (or folder) is named


@pytest.mark.parametrize("case", list(BAD))
def test_custom_dataset_problems_reports_each_bad_input_without_raising(tmp_path, arrays, case):
    make, _, text, cheap_text = BAD[case]
    problems = custom_dataset_problems("mine", make(tmp_path, arrays))
    if case in NEEDS_PIXELS:
        assert problems == []
        return
    assert problems and all(p.startswith("datasets.mine") for p in problems)
    assert any((cheap_text or text) in p for p in problems), problems


def test_custom_dataset_problems_is_empty_for_good_files(tmp_path, arrays):
    npz = write_npz(tmp_path / "mine.npz", *arrays, layout="NCHW", classes=CLASSES)
    folder = write_image_folder(tmp_path / "mine", *arrays, classes=CLASSES)
    assert custom_dataset_problems("mine", {"format": "npz", "path": str(npz)}) == []
    assert custom_dataset_problems("mine", {"format": "folder", "path": str(folder)}) == []
    assert custom_dataset_problems("mnist", {}) == custom_dataset_problems("synthetic", None) == []


def test_custom_dataset_problems_reports_configs_that_name_no_dataset(tmp_path):
    assert custom_dataset_problems("mine", {}) == [
        "datasets.mine.format is not set; set it to one of npz, folder (or use a built-in dataset: fashion_mnist, "
        "mnist, cifar10, synthetic)"]
    assert custom_dataset_problems("mine", "data/mine.npz")[0].startswith("datasets.mine: expected a mapping")
    assert CUSTOM_FORMATS == ("npz", "folder")


def test_a_built_in_name_is_refused_for_a_dataset_of_ones_own(tmp_path, arrays):
    settings = {"format": "npz", "path": str(write_npz(tmp_path / "mine.npz", *arrays))}
    expected = "datasets.mnist: 'mnist' is a built-in dataset; give yours another name"
    with pytest.raises(ValueError) as raised:
        load_raw("mnist", settings)
    assert str(raised.value) == expected
    assert custom_dataset_problems("mnist", settings) == [expected]


def test_an_object_array_npz_is_refused_and_never_unpickled(tmp_path, arrays):
    marker = tmp_path / "unpickled"
    x_train, y_train, x_test, y_test = arrays
    trap = np.empty(len(y_train), dtype=object)
    trap[:] = [_Trap(marker)] * len(y_train)
    path = tmp_path / "trap.npz"
    np.savez(path, x_train=x_train, y_train=trap, x_test=x_test, y_test=y_test)
    settings = {"format": "npz", "path": str(path)}
    with pytest.raises(DataFormatError) as raised:
        load_raw("mine", settings)
    assert f"{path.resolve()}: y_train holds Python objects (dtype object), which are never read" in str(raised.value)
    problems = custom_dataset_problems("mine", settings)
    assert any("y_train holds Python objects" in p for p in problems)
    assert image_shape("mine", settings) is None and split_sizes("mine", settings) is None
    assert not marker.exists()
    # The trap works: loading with pickles allowed runs it, so the check above can fail.
    with np.load(path, allow_pickle=True) as npz:
        npz["y_train"]
    assert marker.read_text() == "unpickled"


def test_float_pixels_message_names_the_file_dtype_and_value_range(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    path = tmp_path / "floats.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=(x_test / 255.0) * 2 - 1, y_test=y_test)
    with pytest.raises(DataFormatError) as raised:
        read_npz(path)
    assert str(raised.value).startswith(f"{path.resolve()}: x_test pixels are float64 (values -1 to 1); write uint8")


def test_prepared_file_records_the_resolved_source(tmp_path, arrays, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "mine.npz", *arrays)
    prepare("mine", {"format": "npz", "path": "mine.npz"}, tmp_path / "mine.h5")
    with h5py.File(tmp_path / "mine.h5", "r") as h5:
        assert h5.attrs["source"] == str((tmp_path / "mine.npz").resolve())
