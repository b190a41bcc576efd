"""Data stage: the IDX (MNIST, Fashion-MNIST) and CIFAR-10 readers, the prepared HDF5 file, errors."""

import gzip
import pickle
import struct

import h5py
import numpy as np
import pytest

from advflow.catalog import DatasetMissingError, locate_dataset
from advflow.data import (
    DataFormatError, load_prepared, load_raw, make_synthetic, read_cifar10, read_idx, to_model_space,
    write_prepared,
)
from advflow.io import CorruptFileError


def write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
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
    with pytest.raises(CorruptFileError, match=r"synthetic\.h5: cannot be read as HDF5 .* rerun"):
        load_prepared(path)


def test_synthetic_dataset_is_seeded_and_models_see_minus_one_to_one():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    x = to_model_space(a.train.images)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert to_model_space(np.array([0, 255], dtype=np.uint8)).tolist() == [-1.0, 1.0]
