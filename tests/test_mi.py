"""Feature-map mutual information and information paths: sklearn's mutual_info_score on the same bucket
ids (random maps, maps of different sizes, constant maps, ties at vmin, other bucket counts), the method's (docs/method.md)
bucket formula, entropy, symmetry, invariance to positive affine rescaling, and the path distance.

References are computed independently of advflow: pooling by numpy reshape-max, bucket ids by the
formula ceil(B (v - vmin) / (vmax - vmin)) clamped to 1..B in numpy float64, MI by sklearn."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_h5
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from advflow.information.mi import bucketize, layer_mi, mi_matrix
from advflow.information.paths import path_distance

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5


def spec_ids(maps: np.ndarray, buckets: int) -> np.ndarray:
    """0-based bucket ids of maps (..., P), each on its own range, by the method's (docs/method.md) formula in float64."""
    v = np.asarray(maps, dtype=np.float64)
    vmin, vmax = v.min(axis=-1, keepdims=True), v.max(axis=-1, keepdims=True)
    span = np.where(vmax > vmin, vmax - vmin, 1.0)
    return (np.clip(np.ceil(buckets * (v - vmin) / span), 1, buckets) - 1).astype(np.int64)


def numpy_pool(maps: np.ndarray, size: int) -> np.ndarray:
    """Max-pool (N, n, H, H) maps down to (N, n, size, size) with non-overlapping windows."""
    n, c, h = maps.shape[:3]
    f = h // size
    return maps.reshape(n, c, size, f, size, f).max(axis=(3, 5))


def sklearn_matrix(a_ids: np.ndarray, b_ids: np.ndarray) -> np.ndarray:
    """(N, n_a, n_b) of mutual_info_score over every pair of id rows."""
    return np.array([[[mutual_info_score(a, b) for b in b_row] for a in a_row] for a_row, b_row in zip(a_ids, b_ids)])


def random_maps(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("max_elements", [None, 1000])
def test_mi_equals_sklearn_mutual_info_score_on_the_same_bucket_ids_for_random_maps(max_elements):
    a_ids, b_ids = bucketize(random_maps(3, 6, 64, seed=0)), bucketize(random_maps(3, 5, 64, seed=1))
    b_ids[1, 2] = (a_ids[1, 3] + 1) % 8  # one dependent pair: its MI is the entropy of a_ids[1, 3]
    ours = mi_matrix(a_ids, b_ids, max_elements=max_elements)
    np.testing.assert_allclose(ours.numpy(), sklearn_matrix(a_ids.numpy(), b_ids.numpy()), rtol=0, atol=TOL)


@pytest.mark.parametrize("image, layer, channels", [(32, 32, 3), (32, 16, 3), (32, 8, 3), (28, 14, 1), (28, 7, 1)])
def test_layer_mi_equals_sklearn_on_the_bucket_ids_of_independently_pooled_maps_of_different_sizes(image, layer,
                                                                                                   channels):
    target_size = image // 4
    source = random_maps(2, channels, image, image, seed=2)
    maps = random_maps(2, 4, layer, layer, seed=3).relu()
    target = random_maps(2, 5, target_size, target_size, seed=4).relu()
    S, T = layer_mi(maps, source, target)
    assert S.shape == (2, 4, channels) and T.shape == (2, 4, 5)

    # S: the input is pooled down to the layer's size; T: the layer down to the target's size.
    source_ids = spec_ids(numpy_pool(source.numpy(), layer).reshape(2, channels, -1), 8)
    np.testing.assert_allclose(S.numpy(), sklearn_matrix(spec_ids(maps.flatten(2).numpy(), 8), source_ids),
                               rtol=0, atol=TOL)
    layer_ids = spec_ids(numpy_pool(maps.numpy(), target_size).reshape(2, 4, -1), 8)
    np.testing.assert_allclose(T.numpy(), sklearn_matrix(layer_ids, spec_ids(target.flatten(2).numpy(), 8)),
                               rtol=0, atol=TOL)


def test_constant_maps_have_mi_zero_and_never_nan():
    maps = random_maps(2, 4, 8, 8, seed=5)
    maps[0, 1] = 0.0  # a dead ReLU map
    maps[1, 2] = 3.5
    source = random_maps(2, 3, 16, 16, seed=6)
    source[1] = -1.0  # every channel of the second input constant
    target = maps.clone()
    S, T = layer_mi(maps, source, target)
    assert not S.isnan().any() and not T.isnan().any()
    for matrix in (S, T):
        assert torch.all(matrix[0, 1] == 0) and torch.all(matrix[1, 2] == 0)
    assert torch.all(T[0, :, 1] == 0) and torch.all(S[1] == 0)
    ids = spec_ids(maps.flatten(2).numpy(), 8)
    np.testing.assert_allclose(T.numpy(), sklearn_matrix(ids, ids), rtol=0, atol=TOL)


def test_ties_at_vmin_join_bucket_one_and_mi_matches_sklearn():
    maps = random_maps(2, 5, 256, seed=7).relu()  # about half of every map ties at vmin = 0
    maps[1, 4, :200] = maps[1, 4].min()  # and one map mostly at its minimum
    ids = bucketize(maps)
    assert torch.all(ids[maps == maps.amin(dim=-1, keepdim=True)] == 0)
    np.testing.assert_array_equal(ids.numpy(), spec_ids(maps.numpy(), 8))
    other = bucketize(random_maps(2, 3, 256, seed=8).relu())
    np.testing.assert_allclose(mi_matrix(ids, other).numpy(), sklearn_matrix(ids.numpy(), other.numpy()),
                               rtol=0, atol=TOL)


@pytest.mark.parametrize("buckets", [2, 5, 16])
def test_mi_matches_sklearn_for_bucket_counts_other_than_8(buckets):
    a_ids = bucketize(random_maps(2, 4, 1024, seed=9), buckets)
    b_ids = bucketize(random_maps(2, 3, 1024, seed=10) + random_maps(2, 3, 1024, seed=9)[:, :3], buckets)
    assert int(a_ids.max()) == buckets - 1
    np.testing.assert_allclose(mi_matrix(a_ids, b_ids, buckets).numpy(),
                               sklearn_matrix(a_ids.numpy(), b_ids.numpy()), rtol=0, atol=TOL)


@pytest.mark.parametrize("buckets", [2, 5, 8, 16])
def test_bucketize_matches_the_spec_formula_computed_with_numpy_including_values_on_bucket_edges(buckets):
    # vmin = -1, vmax = 3: the edges vmin + 4 j / B. Those exact in float32 (all of them for B = 2, 8, 16;
    # vmin and vmax for B = 5) must land in bucket j (1-based), vmin in bucket 1; every value must match
    # the formula evaluated in numpy on the same float32 values.
    edges = -1.0 + 4.0 * torch.arange(buckets + 1, dtype=torch.float64) / buckets
    maps = torch.cat([edges.float(), torch.rand(200, generator=torch.Generator().manual_seed(11)) * 4 - 1])
    ids = bucketize(maps, buckets)
    np.testing.assert_array_equal(ids.numpy(), spec_ids(maps.numpy(), buckets))
    exact = torch.isclose(edges.float().double(), edges, rtol=0, atol=0)
    expected_edge_ids = torch.cat([torch.tensor([0]), torch.arange(buckets)])
    assert torch.equal(ids[:buckets + 1][exact], expected_edge_ids[exact])
    # Float64 maps, a batch of them, and values a hair above an edge (which must go up one bucket).
    batch = torch.rand(3, 4, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    batch[0, 0, :3] = torch.tensor([0.0, 1.0, 0.5 + 1e-12], dtype=torch.float64)
    batch[0, 0, 3:] = batch[0, 0, 3:].clamp(0.01, 0.99)
    ids = bucketize(batch, buckets)
    np.testing.assert_array_equal(ids.numpy(), spec_ids(batch.numpy(), buckets))
    if buckets % 2 == 0:
        assert int(ids[0, 0, 2]) == buckets // 2  # 0.5 is the edge after bucket B/2; above it is B/2 + 1


def test_mi_of_a_map_with_itself_is_its_entropy():
    ids = bucketize(random_maps(2, 6, 64, seed=13).relu())
    ours = mi_matrix(ids, ids).diagonal(dim1=1, dim2=2)
    expected = [[entropy(np.bincount(row, minlength=8)) for row in maps] for maps in ids.numpy()]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=TOL)


def test_mi_is_symmetric():
    a_ids, b_ids = bucketize(random_maps(2, 5, 100, seed=14)), bucketize(random_maps(2, 7, 100, seed=15))
    torch.testing.assert_close(mi_matrix(a_ids, b_ids), mi_matrix(b_ids, a_ids).transpose(1, 2), rtol=0, atol=1e-6)


def test_mi_is_unchanged_when_a_map_is_rescaled_as_a_m_plus_b_with_a_positive():
    maps = random_maps(2, 4, 16, 16, seed=16)
    source, target = random_maps(2, 3, 32, 32, seed=17), random_maps(2, 5, 8, 8, seed=18)
    S, T = layer_mi(maps, source, target)
    S2, T2 = layer_mi(2.5 * maps - 0.75, 0.5 * source + 4.0, 3.0 * target + 1.0)
    torch.testing.assert_close(S2, S, rtol=0, atol=1e-6)
    torch.testing.assert_close(T2, T, rtol=0, atol=1e-6)


def test_path_distance_is_the_mean_absolute_difference_over_layers():
    assert float(path_distance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 1.0]))) == 1.0
    mu1 = random_maps(4, 15, seed=19)
    mu2 = random_maps(15, seed=20)
    expected = np.abs(mu1.numpy() - mu2.numpy()).mean(axis=1)
    np.testing.assert_allclose(path_distance(mu1, mu2).numpy(), expected, rtol=1e-6)


def test_path_distance_with_mismatched_layer_counts_raises():
    with pytest.raises(ValueError, match="same number of layers K; got 15 and 14"):
        path_distance(torch.zeros(15), torch.zeros(14))
    with pytest.raises(ValueError, match="same number of layers K"):
        path_distance(torch.zeros(3, 15), torch.zeros(3, 14))


def test_iip_oip_and_ioc_are_the_layer_means_of_s_and_t():
    from advflow.information.paths import iip, information_paths, ioc, oip

    gen = torch.Generator().manual_seed(0)
    S = [torch.rand(3, n, 1, generator=gen) for n in (4, 6)]
    T = [torch.rand(3, n, 5, generator=gen) for n in (4, 6)]
    mu_s, mu_t = information_paths(S, T)
    assert torch.allclose(mu_s, torch.stack([s.mean(dim=(1, 2)) for s in S], dim=1))
    assert torch.allclose(mu_t, torch.stack([t.mean(dim=(1, 2)) for t in T], dim=1))
    assert torch.equal(iip(mu_s)[..., 0], torch.tensor([[1.0, 2.0]] * 3)) and torch.equal(iip(mu_s)[..., 1], mu_s)
    assert torch.equal(oip(mu_t)[..., 1], mu_t)
    assert torch.equal(ioc(mu_s, mu_t), torch.stack([mu_s, mu_t], dim=-1))
    with pytest.raises(ValueError, match="same layers"):
        information_paths(S, T[:1])


# ------------------------------------- the MI stage on a real features file, against sklearn directly

STAGE_N, STAGE_BATCH, B = 5, 2, 8


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    """A features file of deep_conv (conv1..conv6 at 28, 14, 14, 7, 7, 3 px) on 5 random 1x28x28
    inputs, recorded in batches of 2: every size ratio of the MI stage, integer (28 -> 14, 28 -> 7) and
    not (28 -> 3, 14 -> 3, 7 -> 3)."""
    from advflow.information.features import record_features
    from advflow.models.architectures import ConvNet, architecture, save_checkpoint

    folder = tmp_path_factory.mktemp("mi_stage")
    torch.manual_seed(3)
    save_checkpoint(ConvNet(architecture("deep_conv", 1, (28, 28), 10)).eval(), folder / "deep_conv.pt")
    x = torch.rand(STAGE_N, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with h5py.File(folder / "set.h5", "w") as h5:
        h5["adversarial"], h5["labels"] = x.numpy(), np.arange(STAGE_N) % 10
    record_features(folder / "deep_conv.pt", folder / "set.h5", folder / "features.h5", set_name="stage",
                    batch_size=STAGE_BATCH)
    return folder, folder / "features.h5"


def sklearn_mi(a: np.ndarray, b: np.ndarray, buckets: int = B) -> float:
    """The docs/method.md's MI of two 2-D maps: the larger max-pooled down to the smaller (torch's adaptive max
    pool: non-overlapping windows when the ratio is an integer), each bucketized on its own range,
    then sklearn's mutual_info_score on the ids."""
    size = (min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1]))

    def ids(m: np.ndarray) -> np.ndarray:
        pooled = F.adaptive_max_pool2d(torch.as_tensor(m, dtype=torch.float32)[None, None], size)
        return spec_ids(pooled.flatten().numpy(), buckets)

    return mutual_info_score(ids(a), ids(b))


def test_S_and_T_entries_equal_sklearn_from_stored_maps(features_file):
    from advflow.information.stage import measure_set

    folder, features = features_file
    measure_set(features, folder / "mi.h5", folder / "paths.csv", buckets=B, batch_size=STAGE_BATCH)
    rng = np.random.default_rng(5)
    checked = nonzero = differs_from_second_to_last = 0
    with h5py.File(features) as h5, h5py.File(folder / "mi.h5") as mi:
        names = sorted(h5["layers"], key=lambda name: int(name.removeprefix("conv")))
        assert len(names) == 6
        layers = {name: h5[f"layers/{name}"][:].astype(np.float32) for name in names}
        source = h5["input"][:]
        last, second_to_last = layers[names[-1]], layers[names[-2]]
        for n in range(STAGE_N):  # every input: all three batches of 2, 2 and 1
            for name in names:
                maps = layers[name][n]
                S, T = mi[f"S/{name}"][n], mi[f"T/{name}"][n]
                assert S.shape == (maps.shape[0], source.shape[1]) and T.shape == (maps.shape[0], last.shape[1])
                for i in rng.choice(maps.shape[0], 3, replace=False):
                    for j in range(source.shape[1]):
                        assert S[i, j] == pytest.approx(sklearn_mi(maps[i], source[n, j]), abs=1e-5), (n, name, i, j)
                        checked += 1
                pairs = [tuple(rng.integers(0, T.shape)) for _ in range(3)]
                pairs.append(np.unravel_index(np.argmax(T), T.shape))  # the largest stored T: MI > 0
                for i, j in pairs:
                    expected = sklearn_mi(maps[i], last[n, j])
                    assert T[i, j] == pytest.approx(expected, abs=1e-5), (n, name, i, j)
                    checked += 1
                    nonzero += expected > 1e-3
                    differs_from_second_to_last += abs(sklearn_mi(maps[i], second_to_last[n, j]) - expected) > 1e-3
    assert checked > 100 and nonzero > 20, f"the test needs entries with MI > 0; {nonzero} of {checked}"
    assert differs_from_second_to_last > 0, "the entries must tell the last conv layer from the one before"


def test_measure_set_does_not_depend_on_batch_size(features_file):
    from advflow.information.stage import measure_set

    folder, features = features_file
    for batch_size in (1, STAGE_N):
        measure_set(features, folder / f"mi{batch_size}.h5", folder / f"paths{batch_size}.csv", buckets=B,
                    batch_size=batch_size)
    assert_same_h5(folder / "mi1.h5", folder / f"mi{STAGE_N}.h5")
    with h5py.File(folder / "mi1.h5") as h5:
        assert {"S", "T"} <= set(h5) and len(h5["S"]) == len(h5["T"]) == 6
    paths = (folder / "paths1.csv").read_text()
    assert paths == (folder / f"paths{STAGE_N}.csv").read_text()
    assert len(paths.splitlines()) == 1 + STAGE_N * 6


# ------------------------------------- the packed product and the c log c table (advflow.information.mi internals)


def direct_mi(a_ids: np.ndarray, b_ids: np.ndarray, buckets: int) -> np.ndarray:
    """(N, n_a, n_b) MI from each pair's B x B joint histogram (numpy bincount), c log c computed directly
    in float64 with 0 log 0 = 0: the formula that the table lookup replaces."""
    n, n_a, positions = a_ids.shape
    out = np.zeros((n, n_a, b_ids.shape[1]))
    xlogx = lambda c: np.where(c > 0, c * np.log(np.maximum(c, 1)), 0.0)  # noqa: E731
    for i in range(n):
        for r, a in enumerate(a_ids[i]):
            for c, b in enumerate(b_ids[i]):
                joint = np.bincount(a * buckets + b, minlength=buckets * buckets).astype(np.float64)
                ca, cb = np.bincount(a, minlength=buckets), np.bincount(b, minlength=buckets)
                out[i, r, c] = max(0.0, math.log(positions) + (xlogx(joint).sum() - xlogx(ca).sum()
                                                              - xlogx(cb).sum()) / positions)
    return out


@pytest.mark.parametrize("positions, buckets", [(1, 8), (4, 8), (64, 8), (64, 5), (100, 8), (256, 16), (1024, 8)])
def test_packing_keeps_counts_exact_and_decodable(positions, buckets):
    from advflow.information.mi import _packing

    for cap in (2 ** 19, 2 ** 22):
        m, base = _packing(positions, buckets, cap)
        assert 1 <= m <= buckets and base > positions
        assert m == 1 or base ** m <= min(cap, 2 ** 24)
        odd = base >> ((base & -base).bit_length() - 1)
        assert m == 1 or odd ** (m - 1) < 2 ** 8  # every weight base^t has <= 8 significant bits
    assert _packing(64, 8, 2 ** 19)[0] == 3  # the benchmark's 8 x 8 maps pack three buckets per column


@pytest.mark.parametrize("m_base", [(2, 65), (3, 72)])
def test_the_table_lookup_of_packed_cells_equals_c_log_c_of_their_counts(m_base):
    from advflow.information.mi import _xlogx_table

    m, base = m_base
    positions = 64
    table = _xlogx_table(m, base, positions, torch.device("cpu")).double()
    rng = np.random.default_rng(21)
    digits = rng.integers(0, positions + 1, size=(500, m))
    digits[:4] = [[0] * m, [positions] + [0] * (m - 1), [0] * (m - 1) + [positions], [1] * m]
    values = (digits * base ** np.arange(m)).sum(axis=1)
    expected = np.where(digits > 0, digits * np.log(np.maximum(digits, 1)), 0.0).sum(axis=1) / positions
    np.testing.assert_allclose(table[torch.as_tensor(values)].numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("positions, buckets", [(64, 8), (64, 5), (49, 8), (196, 8), (7, 3)])
@pytest.mark.parametrize("max_elements", [None, 500, 20000])
def test_packed_and_unpacked_products_give_the_direct_formula(positions, buckets, max_elements):
    from advflow.information.mi import _mi_chunks, _packing

    gen = torch.Generator().manual_seed(positions * buckets)
    a_ids = torch.randint(0, buckets, (3, 5, positions), generator=gen)
    b_ids = torch.randint(0, buckets, (3, 4, positions), generator=gen)
    b_ids[0, 1] = a_ids[0, 2]  # a dependent pair
    b_ids[1, 0] = 0  # a single-bucket map: exactly 0
    a_ids[2, 3] = buckets - 1
    expected = direct_mi(a_ids.numpy(), b_ids.numpy(), buckets)
    limit = max_elements or 2 ** 21
    packed = _packing(positions, buckets, 2 ** 19)
    for m, base in {packed, (1, positions + 1)}:
        ours = _mi_chunks(a_ids, b_ids, buckets, m, base, limit)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=TOL)
        assert torch.all(ours[1, :, 0] == 0) and torch.all(ours[2, 3] == 0)
    np.testing.assert_allclose(mi_matrix(a_ids, b_ids, buckets, max_elements=max_elements).numpy(), expected,
                               rtol=0, atol=TOL)


def test_mi_matrix_does_not_depend_on_the_thread_count():
    a_ids, b_ids = bucketize(random_maps(4, 30, 64, seed=22)), bucketize(random_maps(4, 20, 64, seed=23))
    one = mi_matrix(a_ids, b_ids)  # one thread (the module's fixture): 2^21-element chunks
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = mi_matrix(a_ids, b_ids)  # 2^26-element chunks
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("shape, size", [((2, 3, 32, 32), (8, 8)), ((2, 3, 16, 8), (4, 2)), ((1, 2, 28, 28), (7, 7)),
                                         ((2, 2, 28, 28), (3, 3)), ((1, 1, 6, 9), (6, 3))])
def test_pool_to_equals_max_pool2d(shape, size):
    from advflow.information.mi import pool_to

    maps = random_maps(*shape, seed=24)
    maps[..., 0, :] = maps.amax()  # ties, and a window's max repeated
    expected = F.adaptive_max_pool2d(maps, size)  # non-overlapping windows when the ratios are integers
    assert torch.equal(pool_to(maps, size), expected)
    assert torch.equal(pool_to(maps.half(), size), expected.half())
