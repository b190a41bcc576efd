"""Data stage: the IDX (MNIST, Fashion-MNIST) and CIFAR-10 readers, the prepared HDF5 file, errors."""

import gzip
import pickle
import struct

import h5py
import numpy as np
import pytest

from advflow.workflow.catalog import DatasetMissingError, locate_dataset
from advflow.data import (
    Dataset, DataFormatError, Split, load_prepared, load_raw, make_synthetic, prepare, read_cifar10, read_idx,
    to_model_space, validate_dataset, write_prepared,
)
from advflow.workflow.io import CorruptFileError, DamagedFileError

IDX_TYPES = {np.uint8: (0x08, np.uint8), np.float32: (0x0D, ">f4")}


def write_idx(path, array, gz, dtype=np.uint8):
    code, stored = IDX_TYPES[dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(stored).tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_folder(folder, rng, gz=True, n_train=7, n_test=5):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": (rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train)),
            "t10k": (rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test))}
    suffix = ".gz" if gz else ""
    for prefix, (images, labels) in data.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader_reads_idx_files_written_in_the_format(tmp_path, gz):
    data = write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0), gz=gz)
    dataset = load_raw("mnist", {"path": str(tmp_path / "mnist")})
    assert dataset.train.images.shape == (7, 1, 28, 28) and dataset.train.images.dtype == np.uint8
    np.testing.assert_array_equal(dataset.train.images[:, 0], data["train"][0])
    np.testing.assert_array_equal(dataset.test.labels, data["t10k"][1])
    assert dataset.classes == [str(i) for i in range(10)]


def test_fashion_mnist_reader_uses_its_class_names(tmp_path):
    write_mnist_folder(tmp_path / "fm", np.random.default_rng(1))
    dataset = load_raw("fashion_mnist", {"path": str(tmp_path / "fm")})
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"


def test_truncated_idx_file_is_reported_with_its_name(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte: truncated IDX file"):
        read_idx(path)


def test_cifar10_reader_reads_pickled_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    dataset = read_cifar10(tmp_path)  # the parent folder works too
    assert dataset.train.images.shape == (20, 3, 32, 32)
    # CIFAR stores each row as 1024 red, 1024 green, 1024 blue values, row-major.
    np.testing.assert_array_equal(dataset.train.images[0, 1, 0, :], batches["data_batch_1"][0][0, 1024:1056])
    np.testing.assert_array_equal(dataset.test.labels, batches["test_batch"][1])
    assert dataset.classes[3] == "c3"


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        locate_dataset("fashion_mnist", {"path": str(tmp_path / "nowhere")})
    message = str(err.value)
    assert "Dataset 'fashion_mnist' not found" in message
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(DatasetMissingError, match="cifar-10-batches-py"):
        locate_dataset("cifar10", {"path": str(tmp_path)})


def test_prepared_file_round_trips_and_names_a_truncated_copy(tmp_path):
    dataset = make_synthetic(n_train=40, n_test=20, size=8, seed=0)
    path = tmp_path / "synthetic.h5"
    write_prepared(dataset, path)
    with h5py.File(path) as h5:
        assert h5["train/images"].dtype == np.uint8 and h5.attrs["name"] == "synthetic"
    again = load_prepared(path)
    np.testing.assert_array_equal(again.train.images, dataset.train.images)
    assert again.classes == dataset.classes and again.source == dataset.source
    path.write_bytes(path.read_bytes()[:2000])
    truncated = path.read_bytes()
    with pytest.raises(CorruptFileError) as err:
        load_prepared(path)
    assert isinstance(err.value, DamagedFileError)
    message = str(err.value)
    assert f"{path}: damaged (cannot be read as HDF5" in message and "Run snakemake again" in message
    assert not path.exists() and (tmp_path / "synthetic.h5.damaged").read_bytes() == truncated


def test_synthetic_dataset_is_seeded_and_models_see_minus_one_to_one():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    x = to_model_space(a.train.images)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert to_model_space(np.array([0, 255], dtype=np.uint8)).tolist() == [-1.0, 1.0]


# --------------------------------------------------------------------------- validation (issue 16)


def small_dataset(n_train=6, n_test=4, size=8, channels=1, classes=3, seed=0):
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8), np.arange(n) % classes)

    return Dataset("small", split(n_train), split(n_test), [f"c{i}" for i in range(classes)], source="here")


def test_a_usable_dataset_passes_validation():
    validate_dataset(small_dataset(), "here")
    validate_dataset(small_dataset(channels=3, size=32), "here")


def _nan_pixels(d):
    d.train.images = d.train.images.astype(np.float32)
    d.train.images[0, 0, :3, 0] = np.nan


def _labels_over(d):
    d.train.labels = d.train.labels.copy()
    d.train.labels[[1, 2]] = [12, -1]


@pytest.mark.parametrize("damage, expected", [
    (lambda d: setattr(d.train, "images", d.train.images[:, 0]),
     "train images have shape (6, 8, 8); expected 4 dimensions (N, C, H, W)"),
    (lambda d: setattr(d.train, "images", np.concatenate([d.train.images] * 2, axis=1)),
     "train images have 2 channels"),
    (lambda d: setattr(d.test, "images", d.test.images[:, :, :5, :]), "test images are 5x8 pixels"),
    (_nan_pixels, "train pixels must be uint8 in [0, 255]; found float32 with 3 NaN"),
    (lambda d: setattr(d.test, "images", d.test.images.astype(np.float64)),
     "test pixels must be uint8 in [0, 255]; found float64 (values"),
    (lambda d: setattr(d, "test", Split(d.test.images[:0], d.test.labels[:0])), "test split is empty (0 images)"),
    (lambda d: setattr(d.train, "labels", d.train.labels[:, None]), "train labels have shape (6, 1)"),
    (lambda d: setattr(d.train, "labels", d.train.labels.astype(np.float32)),
     "train labels are float32; expected integers"),
    (lambda d: setattr(d.test, "labels", d.test.labels[:3]), "test has 4 images but 3 labels"),
    (_labels_over, "train labels must lie in [0, 2] (3 classes); found smallest -1, largest 12"),
    (lambda d: setattr(d, "test", small_dataset(size=9).test),
     "train images are 1x8x8 but test images are 1x9x9"),
    (lambda d: setattr(d, "classes", []), "no class names (the classes list is empty)"),
    (lambda d: setattr(d, "classes", ["a", "b", "a"]), "class names repeat: 'a'"),
], ids=["not-4d", "channels", "too-small", "nan-pixels", "float-pixels", "empty-split", "labels-2d",
        "float-labels", "count-mismatch", "labels-out-of-range", "shape-mismatch", "no-classes", "duplicates"])
def test_validation_names_the_source_and_what_is_wrong(damage, expected):
    dataset = small_dataset()
    damage(dataset)
    with pytest.raises(DataFormatError) as err:
        validate_dataset(dataset, "/raw/small")
    assert str(err.value).startswith("/raw/small: ") and expected in str(err.value)


def test_prepare_refuses_an_idx_label_outside_the_classes_and_writes_nothing(tmp_path):
    write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0))
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.array([0, 3, 12, 9, 1, 2, 5]), gz=True)
    out = tmp_path / "data" / "mnist.h5"
    with pytest.raises(DataFormatError) as err:
        prepare("mnist", {"path": str(tmp_path / "mnist")}, out)
    message = str(err.value)
    assert message.startswith(f"{labels}: ") and "found smallest 0, largest 12" in message
    assert "(10 classes)" in message and "fetch the file again" in message
    assert not out.exists() and not out.parent.exists()


def test_prepare_refuses_float_idx_pixels_with_nan_naming_the_file(tmp_path):
    write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0))
    images = np.full((5, 28, 28), 0.5)
    images[0, 0, :4] = np.nan
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    write_idx(path, images, gz=True, dtype=np.float32)
    out = tmp_path / "mnist.h5"
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz: pixels must be uint8 in \[0, 255\]; "
                                              r"found float32 with 4 NaN"):
        prepare("mnist", {"path": str(tmp_path / "mnist")}, out)
    assert not out.exists()


def test_idx_images_and_labels_of_different_lengths_name_both_files(tmp_path):
    write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0))
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(6), gz=True)
    with pytest.raises(DataFormatError) as err:
        load_raw("mnist", {"path": str(tmp_path / "mnist")})
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'mnist'}: ")
    assert "train-images-idx3-ubyte.gz holds 7 images but train-labels-idx1-ubyte.gz holds 6 labels" in message


def test_idx_images_too_small_or_of_two_shapes_name_the_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, rng)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 20, 20)), gz=True)
    with pytest.raises(DataFormatError, match=rf"{folder}: train images are 1x28x28 but test images are 1x20x20"):
        load_raw("mnist", {"path": str(folder)})
    for prefix, n in (("train", 7), ("t10k", 5)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4)), gz=True)
    with pytest.raises(DataFormatError, match=rf"{folder}: train images are 4x4 pixels .* at least 8"):
        load_raw("mnist", {"path": str(folder)})


def test_an_empty_idx_split_is_refused(tmp_path):
    write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0), n_test=0)
    with pytest.raises(DataFormatError, match=rf"{tmp_path / 'mnist'}: test split is empty"):
        load_raw("mnist", {"path": str(tmp_path / "mnist")})


def write_cifar_folder(folder, labels_of=None, data_of=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = (data_of or {}).get(name, rng.integers(0, 256, (4, 3072), dtype=np.uint8))
        labels = (labels_of or {}).get(name, rng.integers(0, 10, 4).tolist())
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)


def test_cifar_batch_with_a_label_outside_the_classes_is_named(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py", labels_of={"data_batch_3": [0, 10, 2, 3]})
    with pytest.raises(DataFormatError, match=r"data_batch_3: labels must lie in \[0, 9\] \(10 classes\); "
                                              r"found smallest 0, largest 10"):
        read_cifar10(tmp_path)


def test_cifar_batch_with_float_pixels_is_named(tmp_path):
    data = np.full((4, 3072), np.nan, dtype=np.float32)
    write_cifar_folder(tmp_path / "cifar-10-batches-py", data_of={"test_batch": data})
    with pytest.raises(DataFormatError, match=r"test_batch: pixels must be uint8 in \[0, 255\]; "
                                              r"found float32 with 12288 NaN"):
        read_cifar10(tmp_path)


def test_prepare_refuses_a_generated_dataset_too_small_and_writes_nothing(tmp_path):
    out = tmp_path / "synthetic.h5"
    with pytest.raises(DataFormatError) as err:
        prepare("synthetic", {"size": 4, "n_train": 20, "n_test": 10}, out, seed=3)
    message = str(err.value)
    assert "dataset 'synthetic' from generated (seed 3)" in message and "images are 4x4 pixels" in message
    assert "change its settings in the config" in message
    assert not out.exists()


def test_prepare_writes_a_valid_dataset(tmp_path):
    write_mnist_folder(tmp_path / "mnist", np.random.default_rng(0))
    prepare("mnist", {"path": str(tmp_path / "mnist")}, tmp_path / "mnist.h5")
    dataset = load_prepared(tmp_path / "mnist.h5", name="mnist")
    assert dataset.train.images.shape == (7, 1, 28, 28) and dataset.test.labels.dtype == np.int64


def write_h5(path, **changes):
    """A prepared file in the documented layout; ``changes`` replaces (or, with None, drops) a dataset
    ("train/images") or an attribute ("name", "classes", "source")."""
    rng = np.random.default_rng(0)
    content = {"train/images": rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8),
               "train/labels": np.arange(6) % 3,
               "test/images": rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8),
               "test/labels": np.arange(4) % 3,
               "name": "small", "classes": '["a", "b", "c"]', "source": "here"}
    content.update(changes)
    with h5py.File(path, "w") as h5:
        for key, value in content.items():
            if value is None:
                continue
            if "/" in key:
                h5[key] = value
            else:
                h5.attrs[key] = value


def nan_images():
    images = np.full((6, 1, 8, 8), 100.0, dtype=np.float32)
    images[2, 0, 0, :2] = np.nan
    return images


@pytest.mark.parametrize("changes, expected", [
    ({"test/labels": None}, "no dataset 'test/labels'"),
    ({"train/images": nan_images()}, "train pixels must be uint8 in [0, 255]; found float32 with 2 NaN"),
    ({"train/images": np.full((6, 1, 8, 8), 0.5)}, "train pixels must be uint8 in [0, 255]; found float64"),
    ({"test/images": np.zeros((4, 8, 8), dtype=np.uint8)},
     "test images have shape (4, 8, 8); expected 4 dimensions"),
    ({"test/labels": np.array([0, 1, 5, 2])},
     "test labels must lie in [0, 2] (3 classes); found smallest 0, largest 5"),
    ({"train/labels": np.arange(6) / 2}, "train labels are float64; expected integers"),
    ({"train/labels": np.arange(5) % 3}, "train has 6 images but 5 labels"),
    ({"classes": None}, "no attribute 'classes'"),
    ({"classes": "a, b, c"}, "attribute 'classes' is not a JSON list of names"),
], ids=["missing-key", "nan-pixels", "float-pixels", "not-4d", "labels-out-of-range", "float-labels",
        "count-mismatch", "no-classes", "classes-not-json"])
def test_a_damaged_prepared_file_is_moved_aside_and_not_used(tmp_path, changes, expected):
    path = tmp_path / "small.h5"
    write_h5(path, **changes)
    content = path.read_bytes()
    with pytest.raises(DamagedFileError) as err:
        load_prepared(path)
    message = str(err.value)
    assert message.startswith(f"{path}: damaged ({expected}") and "moved to small.h5.damaged" in message
    assert "Run snakemake again: it rebuilds the file with rule prepare_data" in message
    assert not path.exists() and (tmp_path / "small.h5.damaged").read_bytes() == content


def test_a_prepared_file_of_another_dataset_is_refused_only_when_the_name_is_given(tmp_path):
    path = tmp_path / "mnist.h5"
    write_h5(path)
    assert load_prepared(path).name == "small"
    with pytest.raises(DamagedFileError,
                       match=r"mnist\.h5: damaged \(it holds dataset 'small', expected 'mnist'\)"):
        load_prepared(path, name="mnist")
    assert not path.exists() and (tmp_path / "mnist.h5.damaged").exists()


def test_a_prepared_file_with_int32_labels_reads_as_int64(tmp_path):
    path = tmp_path / "small.h5"
    write_h5(path, **{"train/labels": (np.arange(6) % 3).astype(np.int32)})
    assert load_prepared(path).train.labels.dtype == np.int64
