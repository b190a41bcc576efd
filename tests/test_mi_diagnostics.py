"""Estimator diagnostics of the MI stage: the share of dead (constant) maps, the MI of position-shuffled
maps (the estimator's bias) and the optional bias correction of the paths (config `mi.bias_correction`).

References are computed independently of advflow where it matters: constant maps counted with numpy,
the shuffled MI from numpy pooling, numpy permutations, the method's (docs/method.md) bucket formula and sklearn."""

from __future__ import annotations

import csv
import json
import math

import h5py
import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import mutual_info_score

from advflow.information.aggregate import read_paths_csv
from advflow.config import config_errors, load_schema
from advflow.information.stage import measure_set
from advflow.information.mi import mi_against, seeded_permutations
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

N = 5
# conv1 (4 maps, 8x8), conv2 (6 maps, 4x4), conv3 (5 maps, 2x2: the target maps); 1 input channel, 8x8.
SHAPES = {"conv1": (4, 8, 8), "conv2": (6, 4, 4), "conv3": (5, 2, 2)}


def hand_made_features(path, seed: int = 0) -> dict[str, np.ndarray]:
    """A features file with the layout the features stage writes; some maps constant (zero, as after a
    dead ReLU, or another constant), one map constant in every input. Returns the layers' maps."""
    rng = np.random.default_rng(seed)
    layers = {name: rng.normal(size=(N, *shape)).astype(np.float32) for name, shape in SHAPES.items()}
    layers["conv1"][0, 1] = 0.0
    layers["conv1"][2, [0, 3]] = 1.5
    layers["conv2"][:, 5] = 0.0  # dead for every input
    layers["conv2"][1, :3] = -2.0
    layers["conv3"][3, 4] = 0.0
    layers["conv3"][4] = 0.25  # every target map of input 4
    layers["conv1"][1, 2, 0, 0] += 1.0  # differs at one position only: not constant
    with h5py.File(path, "w") as h5:
        h5["input"] = rng.normal(size=(N, 1, 8, 8)).astype(np.float32)
        for name, maps in layers.items():
            h5[f"layers/{name}"] = maps.astype(np.float16)  # stored as the features stage does
        h5["labels"], h5["predictions"] = np.arange(N) % 3, np.arange(N) % 2
        h5.attrs.update({"layers": json.dumps(list(SHAPES)), "model": "hand_made", "set": "normal_test"})
    return {name: maps.astype(np.float16).astype(np.float32) for name, maps in layers.items()}


def rows_of(path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path)))


def column(rows, name) -> np.ndarray:
    return np.array([float(r[name]) for r in rows])


def spec_ids(maps: np.ndarray, buckets: int = 8) -> np.ndarray:
    """0-based bucket ids of maps (..., P), each on its own range, by the method's (docs/method.md) formula in float64."""
    v = np.asarray(maps, dtype=np.float64)
    vmin, vmax = v.min(axis=-1, keepdims=True), v.max(axis=-1, keepdims=True)
    span = np.where(vmax > vmin, vmax - vmin, 1.0)
    return (np.clip(np.ceil(buckets * (v - vmin) / span), 1, buckets) - 1).astype(np.int64)


def numpy_pool(maps: np.ndarray, size: int) -> np.ndarray:
    """Max-pool (n, H, H) maps down to (n, size, size) with non-overlapping windows."""
    n, h = maps.shape[:2]
    f = h // size
    return maps.reshape(n, size, f, size, f).max(axis=(2, 4))


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The hand-made features measured with the defaults (no correction, seed 0) and batches of 2."""
    folder = tmp_path_factory.mktemp("diagnostics")
    maps = hand_made_features(folder / "features.h5")
    measure_set(folder / "features.h5", folder / "mi.h5", folder / "paths.csv", batch_size=2)
    return folder, maps


def test_dead_share_equals_an_independent_count_of_constant_maps(measured):
    folder, maps = measured
    rows = rows_of(folder / "paths.csv")
    with h5py.File(folder / "features.h5") as h5, h5py.File(folder / "mi.h5") as mi:
        for k, name in enumerate(SHAPES):
            stored = h5[f"layers/{name}"][:].astype(np.float64)
            constant = np.array([[np.ptp(m) == 0 for m in per_input] for per_input in stored])  # (N, n_k)
            expected = constant.sum(axis=1) / constant.shape[1]
            assert mi[f"dead/{name}"].shape == (N,) and mi[f"dead/{name}"].dtype == np.float32
            np.testing.assert_array_equal(mi[f"dead/{name}"][:], expected.astype(np.float32))
            ours = np.array([float(r["dead"]) for r in rows if int(r["layer"]) == k + 1])
            np.testing.assert_array_equal(ours, expected)
    by_key = {(int(r["input"]), r["layer_name"]): float(r["dead"]) for r in rows}
    assert by_key[(0, "conv1")] == 0.25 and by_key[(1, "conv1")] == 0.0 and by_key[(2, "conv1")] == 0.5
    assert by_key[(1, "conv2")] == 4 / 6 and by_key[(0, "conv2")] == 1 / 6 and by_key[(4, "conv3")] == 1.0


def test_bias_columns_equal_sklearn_on_independently_pooled_and_permuted_maps(measured):
    folder, maps = measured
    rows = {(int(r["input"]), int(r["layer"])): r for r in rows_of(folder / "paths.csv")}
    with h5py.File(folder / "features.h5") as h5:
        source = h5["input"][:].astype(np.float64)
    target = maps["conv3"]
    for k, name in enumerate(SHAPES):
        for i in range(N):
            layer = maps[name][i]
            means = []
            for reference in (source[i], target[i]):
                size = min(layer.shape[-1], reference.shape[-1])
                pooled = numpy_pool(layer, size).reshape(layer.shape[0], -1)
                order = np.random.default_rng([0, i, k]).permutation(size * size)  # (seed, input, layer)
                a = spec_ids(pooled[:, order])
                b = spec_ids(numpy_pool(reference, size).reshape(reference.shape[0], -1))
                means.append(np.mean([[mutual_info_score(x, y) for y in b] for x in a]))
            row = rows[(i, k + 1)]
            assert float(row["mu_s_bias"]) == pytest.approx(means[0], abs=1e-6)
            assert float(row["mu_t_bias"]) == pytest.approx(means[1], abs=1e-6)


def test_shuffled_mi_is_far_below_the_mi_of_dependent_maps_and_close_to_that_of_independent_ones():
    generator = torch.Generator().manual_seed(0)

    def shuffle(k, positions):
        return seeded_permutations(0, range(4), k, positions)

    # Maps that are deterministic (affine) functions of the reference: the diagonal pairs share all
    # their information, which shuffling the positions destroys.
    reference = torch.randn(4, 3, 16, 16, generator=generator)
    dependent = torch.cat([3 * reference - 1, -reference], dim=1)
    (raw,), (shuffled,) = mi_against([dependent], reference), mi_against([dependent], reference, permutation=shuffle)
    pairs = (slice(None), [0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2])
    assert raw[pairs].mean() > 1.5  # about the entropy of the reference's bucket ids
    assert shuffled[pairs].mean() < 0.1 * raw[pairs].mean()
    assert shuffled.mean() < 0.2 * raw.mean()

    # Maps independent of the reference: at 64 positions the estimator still gives them about
    # 0.3 nats, and the shuffled maps estimate that bias.
    reference = torch.randn(4, 3, 8, 8, generator=generator)
    independent = torch.randn(4, 16, 8, 8, generator=generator).relu()
    (raw,), (shuffled,) = (mi_against([independent], reference),
                           mi_against([independent], reference, permutation=shuffle))
    assert 0.1 < raw.mean() < 0.25 * math.log(8) and 0.1 < shuffled.mean() < 0.25 * math.log(8)
    assert abs(float(shuffled.mean() - raw.mean())) < 0.05 * float(raw.mean())


def test_mi_against_without_a_permutation_is_unchanged_and_with_the_identity_equals_it():
    generator = torch.Generator().manual_seed(1)
    layers = [torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 2, 4, 4, generator=generator)]
    reference = torch.randn(3, 5, 4, 4, generator=generator)

    def identity(k, positions):
        return torch.arange(positions).expand(3, positions).clone()

    for plain, same in zip(mi_against(layers, reference), mi_against(layers, reference, permutation=identity)):
        assert torch.equal(plain, same)
    with pytest.raises(ValueError, match="must hold a permutation"):
        mi_against(layers, reference, permutation=lambda k, p: torch.zeros(3, p, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"must be an int64 tensor of shape \(3, 16\)"):
        mi_against(layers, reference, permutation=lambda k, p: torch.arange(p).expand(2, p).clone())


def test_bias_columns_do_not_depend_on_the_batch_size_and_follow_the_seed(measured, tmp_path):
    folder, _ = measured
    features = folder / "features.h5"
    reference = rows_of(folder / "paths.csv")  # batches of 2, seed 0
    measure_set(features, tmp_path / "one.h5", tmp_path / "one.csv", batch_size=1)
    measure_set(features, tmp_path / "all.h5", tmp_path / "all.csv", batch_size=N)
    measure_set(features, tmp_path / "other.h5", tmp_path / "other.csv", batch_size=N, seed=1)
    one, everything, other = (rows_of(tmp_path / f"{n}.csv") for n in ("one", "all", "other"))
    for name in ("mu_s_bias", "mu_t_bias", "dead", "mu_s", "mu_t"):
        np.testing.assert_array_equal(column(one, name), column(everything, name))
        np.testing.assert_array_equal(column(reference, name), column(everything, name))  # repeatable
    for name in ("mu_s_bias", "mu_t_bias"):
        assert not np.array_equal(column(other, name), column(everything, name))
    for name in ("mu_s", "mu_t", "dead"):
        np.testing.assert_array_equal(column(other, name), column(everything, name))  # the raw means
    with h5py.File(tmp_path / "other.h5") as h5:
        assert h5.attrs["bias_seed"] == 1 and not h5.attrs["bias_correction"]


def test_bias_correction_subtracts_the_shuffled_mi_exactly(measured, tmp_path):
    folder, _ = measured
    measure_set(folder / "features.h5", tmp_path / "on.h5", tmp_path / "on.csv", batch_size=2,
                bias_correction=True)
    off, on = rows_of(folder / "paths.csv"), rows_of(tmp_path / "on.csv")
    for name in ("mu_s_bias", "mu_t_bias", "dead", "input", "layer", "label", "prediction"):
        assert [r[name] for r in on] == [r[name] for r in off]
    for mu in ("mu_s", "mu_t"):
        assert np.array_equal(column(on, mu), column(off, mu) - column(off, f"{mu}_bias"))
        assert not np.array_equal(column(on, mu), column(off, mu))
    with h5py.File(tmp_path / "on.h5") as h5_on, h5py.File(folder / "mi.h5") as h5_off:
        assert h5_on.attrs["bias_correction"] and not h5_off.attrs["bias_correction"]
        assert h5_on.attrs["bias_seed"] == 0 == h5_off.attrs["bias_seed"]
        for name in SHAPES:  # the matrices stay the raw estimator's
            assert np.array_equal(h5_on[f"S/{name}"][:], h5_off[f"S/{name}"][:])
            assert np.array_equal(h5_on[f"T/{name}"][:], h5_off[f"T/{name}"][:])
    with pytest.raises(ValueError, match="bias_correction must be true or false; got str 'yes'"):
        measure_set(folder / "features.h5", tmp_path / "x.h5", tmp_path / "x.csv", bias_correction="yes")


def test_read_paths_csv_parses_the_diagnostic_columns_as_floats_and_reads_older_csvs(measured, tmp_path):
    folder, _ = measured
    columns = read_paths_csv(folder / "paths.csv")
    for name in ("dead", "mu_s_bias", "mu_t_bias", "mu_s", "mu_t", "layer"):
        assert columns[name].dtype == np.float64 and columns[name].shape == (N * len(SHAPES),)
    assert columns["layer_name"].dtype.kind == "U"
    older = tmp_path / "older.csv"
    older.write_text("input,layer,layer_name,mu_s,mu_t,label,prediction\n0,1,conv1,0.5,0.25,3,3\n")
    columns = read_paths_csv(older)
    assert columns["mu_s"].tolist() == [0.5] and "dead" not in columns and "mu_s_bias" not in columns


def test_config_key_mi_bias_correction_is_a_boolean_off_by_default():
    schema = load_schema(REPO / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["mi"]["bias_correction"] is False and config_errors(config, schema) == []
    assert schema["properties"]["mi"]["properties"]["bias_correction"]["default"] is False
    config["mi"]["bias_correction"] = "yes"
    assert config_errors(config, schema) == ["config key 'mi.bias_correction' must be true or false; got str 'yes'"]
