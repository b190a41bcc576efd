"""The features stage (every conv layer's maps, streamed to HDF5) and the MI stage around it: layout,
values, the information paths it writes, and what a damaged features file does."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from advflow.information.features import conv_maps, load_set, record_features
from advflow.information.stage import FeaturesCorruptError, measure_set
from advflow.models.architectures import ConvNet, architecture, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# good_init on CIFAR-10 shapes (docs/method.md; paper Table X): 32,32,32,48,48 / pool / 80 x 5 / pool / 128 x 5.
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
    with pytest.raises(FeaturesCorruptError, match=r"truncated\.h5: damaged \(features file: .*"
                       r"Run snakemake again"):
        measure_set(features, folder / "mi_t.h5", folder / "paths_t.csv")
    assert not features.exists() and features.with_name("truncated.h5.damaged").exists()
    assert not (folder / "mi_t.h5").exists() and not (folder / "paths_t.csv").exists()


def test_a_features_file_of_another_set_is_moved_aside_not_measured(cifar_good_init):
    folder, _, _ = cifar_good_init
    features = record(folder, name="other")
    with pytest.raises(FeaturesCorruptError, match=r"other\.h5: damaged \(features file: written for set .* this job "
                       r"measures 'fgsm@good_init'\).*Run snakemake again"):
        measure_set(features, folder / "mi_o.h5", folder / "paths_o.csv",
                    expect={"model": "good_init", "set": "fgsm@good_init"})
    assert not features.exists() and features.with_name("other.h5.damaged").exists()
    assert not (folder / "mi_o.h5").exists()


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


# ------------------------------------------------ stored maps against the model itself, independently

SMALL_N = 5


@pytest.fixture(scope="module")
def small_deep_conv(tmp_path_factory):
    """deep_conv (6 conv layers, pools after conv2, conv4, conv6) on 5 random 1x28x28 inputs: a
    checkpoint and a set file."""
    folder = tmp_path_factory.mktemp("small_features")
    torch.manual_seed(1)
    model = ConvNet(architecture("deep_conv", 1, (28, 28), 10)).eval()
    save_checkpoint(model, folder / "deep_conv.pt")
    x = torch.rand(SMALL_N, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with h5py.File(folder / "set.h5", "w") as h5:
        h5["adversarial"], h5["labels"] = x.numpy(), np.arange(SMALL_N) % 10
    return folder, model, x


def hooked_conv_outputs(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Each conv layer's output (conv -> ReLU -> the max-pool right after it, if any), read with forward
    hooks on the model's modules in the order they run, from one forward pass over all of ``x``."""
    events: list[tuple[nn.Module, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda mod, _inp, out: events.append((mod, out.detach().clone())))
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ReLU, nn.MaxPool2d))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    outputs = []
    for i, (module, _) in enumerate(events):
        if isinstance(module, nn.Conv2d):
            assert isinstance(events[i + 1][0], nn.ReLU), "every convolution is followed by a ReLU"
            end = i + 2 if i + 2 < len(events) and isinstance(events[i + 2][0], nn.MaxPool2d) else i + 1
            outputs.append(events[end][1].numpy())
    return outputs


def stored_layer_names(h5: h5py.File) -> list[str]:
    return sorted(h5["layers"], key=lambda name: int(name.removeprefix("conv")))


def test_stored_maps_equal_forward_hooks(small_deep_conv):
    folder, model, x = small_deep_conv
    out = folder / "hooked.h5"
    record_features(folder / "deep_conv.pt", folder / "set.h5", out, set_name="hooked", batch_size=2)
    expected = hooked_conv_outputs(model, x)
    assert [m.shape[1:] for m in expected] == [(32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (128, 7, 7),
                                               (128, 3, 3)]
    with h5py.File(out) as h5:
        names = stored_layer_names(h5)
        assert names == [f"conv{k}" for k in range(1, len(expected) + 1)]
        assert h5["layers/conv1"].dtype == np.float16
        for name, maps in zip(names, expected):
            stored = h5[f"layers/{name}"][:]
            assert stored.shape == maps.shape, name
            assert (stored >= 0).all(), f"{name}: maps are post-ReLU"
            assert (stored > 0).any(), f"{name}: the test needs live maps"
            # float16 storage: half an ulp of float16 relative, and its subnormal spacing near zero.
            np.testing.assert_allclose(stored.astype(np.float32), maps, rtol=2 ** -10, atol=1e-4, err_msg=name)


def test_record_features_does_not_depend_on_batch_size(small_deep_conv):
    folder, _, _ = small_deep_conv
    outputs = {}
    for batch_size in (1, SMALL_N):
        outputs[batch_size] = folder / f"batch{batch_size}.h5"
        record_features(folder / "deep_conv.pt", folder / "set.h5", outputs[batch_size], set_name="batched",
                        batch_size=batch_size)
    with h5py.File(outputs[1]) as one, h5py.File(outputs[SMALL_N]) as full:
        names = stored_layer_names(one)
        assert len(names) == 6 and stored_layer_names(full) == names
        for key in ("input", "labels", "predictions"):
            np.testing.assert_array_equal(one[key][:], full[key][:], err_msg=key)
        for name in names:
            a, b = one[f"layers/{name}"][:], full[f"layers/{name}"][:]
            assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
            # PyTorch's CPU convolution rounds differently at different batch sizes (float32 ulps), which
            # can move a value across a float16 rounding edge: at most one float16 step apart, rarely.
            ulp = np.spacing(np.maximum(np.abs(a), np.abs(b)))
            assert (np.abs(a.astype(np.float32) - b.astype(np.float32)) <= ulp.astype(np.float32)).all(), name
            assert (a != b).mean() < 1e-2, name
