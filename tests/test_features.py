"""The features stage (every conv layer's maps, streamed to HDF5) and the MI stage around it: layout,
values, the information paths it writes, and what a damaged features file does."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from advflow.features import conv_maps, load_set, record_features
from advflow.information import FeaturesCorruptError, measure_set
from advflow.models import ConvNet, architecture, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# good_init on CIFAR-10 shapes (SPEC; paper Table X): 32,32,32,48,48 / pool / 80 x 5 / pool / 128 x 5.
GOOD_INIT_CIFAR = ([[32, 32, 32]] * 3 + [[48, 32, 32], [48, 16, 16]] + [[80, 16, 16]] * 4 + [[80, 8, 8]]
                   + [[128, 8, 8]] * 5)


@pytest.fixture(scope="module")
def cifar_good_init(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    model = ConvNet(architecture("good_init", 3, (32, 32), 10)).eval()
    save_checkpoint(model, folder / "good_init.pt")
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with h5py.File(folder / "fgsm.h5", "w") as h5:
        h5["adversarial"], h5["labels"] = x.numpy(), np.arange(5) % 10
    return folder, model, x


def record(folder, name="fgsm@good_init", **kwargs):
    out = folder / "features" / f"{name}.h5"
    record_features(folder / "good_init.pt", folder / "fgsm.h5", out, set_name=name, batch_size=2, **kwargs)
    return out


def test_good_init_records_its_15_conv_layers_with_the_shapes_spec_implies(cifar_good_init):
    folder, model, x = cifar_good_init
    out = record(folder)
    with h5py.File(out) as h5:
        names = json.loads(h5.attrs["layers"])
        assert names == [f"conv{i}" for i in range(1, 16)]
        assert [h5[f"layers/{n}"].shape[1:] for n in names] == [tuple(s) for s in GOOD_INIT_CIFAR]
        assert json.loads(h5.attrs["shapes"]) == dict(zip(names, GOOD_INIT_CIFAR))
        assert h5["layers/conv15"].shape == (5, 128, 8, 8)  # the target maps
        assert h5["layers/conv1"].chunks == (1, 32, 32, 32) and h5["layers/conv1"].compression == "gzip"
        assert h5["layers/conv1"].dtype == np.float16
        with torch.no_grad():
            prediction = model(x).argmax(1).numpy()
        assert np.array_equal(h5["predictions"][:], prediction) and np.array_equal(h5.attrs["predictions"], prediction)
        assert np.array_equal(h5.attrs["labels"], np.arange(5) % 10)
        # Streamed in batches of 2 (5 inputs), the maps equal the model's own, to float16 precision.
        for name, maps in zip(names, conv_maps(model, x)):
            np.testing.assert_allclose(h5[f"layers/{name}"][:].astype(np.float32), maps.numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(h5["input"][:], x.numpy())


def test_storage_precision_and_compression_come_from_the_settings(cifar_good_init):
    folder, model, x = cifar_good_init
    out = record(folder, name="float32", dtype="float32", compression="none")
    with h5py.File(out) as h5:
        assert h5["layers/conv1"].dtype == np.float32 and h5["layers/conv1"].compression is None
        with torch.no_grad():
            first = next(conv_maps(model, x))
        np.testing.assert_allclose(h5["layers/conv1"][:], first.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dtype 'int8' is not supported; allowed: float16, float32"):
        record(folder, name="bad", dtype="int8")


def test_mi_stage_writes_s_and_t_of_every_layer_and_paths_equal_to_their_means(cifar_good_init):
    folder, _, _ = cifar_good_init
    features = record(folder, name="paths")
    measure_set(features, folder / "mi.h5", folder / "paths.csv", buckets=8, batch_size=3)
    rows = list(csv.DictReader(open(folder / "paths.csv")))
    assert len(rows) == 5 * 15
    with h5py.File(folder / "mi.h5") as h5:
        assert h5.attrs["buckets"] == 8 and h5.attrs["units"] == "nats"
        for row in rows:
            i, k = int(row["input"]), int(row["layer"])
            s, t = h5[f"S/conv{k}"][i], h5[f"T/conv{k}"][i]
            assert s.shape == (GOOD_INIT_CIFAR[k - 1][0], 3) and t.shape == (GOOD_INIT_CIFAR[k - 1][0], 128)
            assert float(row["mu_s"]) == pytest.approx(float(s.astype(np.float64).mean()), abs=1e-6)
            assert float(row["mu_t"]) == pytest.approx(float(t.astype(np.float64).mean()), abs=1e-6)
            assert np.isfinite(s).all() and (s >= -1e-6).all() and (t >= -1e-6).all()


def test_a_truncated_features_file_fails_the_mi_step_naming_it_and_is_moved_aside(cifar_good_init):
    folder, _, _ = cifar_good_init
    features = record(folder, name="truncated")
    size = features.stat().st_size
    with open(features, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(FeaturesCorruptError, match=r"truncated\.h5: features file is truncated or corrupted.*"
                       r"Run snakemake again"):
        measure_set(features, folder / "mi_t.h5", folder / "paths_t.csv")
    assert not features.exists() and features.with_name("truncated.h5.corrupt").exists()
    assert not (folder / "mi_t.h5").exists() and not (folder / "paths_t.csv").exists()


def test_trajectory_sets_carry_seed_and_step(tmp_path):
    steps = [np.zeros((3, 1, 4, 4), np.float32), np.ones((2, 1, 4, 4), np.float32)]
    with h5py.File(tmp_path / "jsma.h5", "w") as h5:
        for i, s in enumerate(steps):
            h5[f"steps/{i}"] = s
        h5["labels"] = np.array([4, 7])
    data = load_set(tmp_path / "jsma.h5")
    assert data.x.shape == (5, 1, 4, 4)
    assert data.extra["seed"].tolist() == [0, 0, 0, 1, 1] and data.extra["step"].tolist() == [0, 1, 2, 0, 1]
    assert data.labels.tolist() == [4, 4, 4, 7, 7]
