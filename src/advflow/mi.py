"""Mutual information between feature maps (SPEC, "Information flow"), batched on the maps' device.

The MI of two maps m, m' (2-D arrays) treats their positions as samples. If the maps differ in size,
the larger is max-pooled down to the smaller (:func:`pool_to`). Each map is then bucketized on its own
range, bid(v) = ceil(B (v - vmin) / (vmax - vmin)) clamped to 1..B, so vmin joins bucket 1 and a
constant map is a single bucket (:func:`bucketize`, which returns the 0-based ids bid - 1). The MI of
the two id sequences, from their B x B joint histogram, in nats, is what
``sklearn.metrics.mutual_info_score`` returns on the same ids.

All pairs of two sets of maps are computed at once (:func:`mi_matrix`): one-hot encoding the ids as
(N, n_a B, P) and (N, n_b B, P) tensors, one batched matrix product gives every joint histogram, and

    I = log P + (sum_xy c_xy log c_xy - sum_x c_x log c_x - sum_y c_y log c_y) / P,

which is sum_xy p_xy log(p_xy / (p_x p_y)) with 0 log 0 = 0 written in counts (P = number of
positions). The product runs in float32, where counts are exact integers up to 2^24 (TF32 on a GPU
keeps the 0/1 codes exact too). The c log c of the joint cells are looked up in a float32 table of
the P + 1 possible counts and summed per pair (an embedding bag: one pass, no logarithm per cell); the
marginal terms and the combination are float64. The work goes in chunks of inputs (and of maps, for
very wide layers) whose working tensors stay under ``max_elements`` elements, so memory is bounded
for any batch.

For one input and a conv layer k with maps (n_k, H_k, W_k), the SPEC's matrices are
S^(k)(i, j) = I(m_i^(k), input channel j) and T^(k)(i, j) = I(m_i^(k), m_j^target), the target maps
being the last conv layer's output maps: :func:`layer_mi` for one layer, :func:`mi_against` for many
layers against one reference at a time (one matrix product per map size, not per layer).

The estimator's bias: ``mi_against(..., permutation=...)`` permutes the positions of each layer's maps
(after pooling them to the size they are compared at; one permutation per input and layer, shared by
all of that layer's maps) before comparing them with the unshuffled reference. This keeps each map's
histogram but breaks its spatial alignment with the reference, so the result is the MI that the
estimator reports for maps with those marginals and no dependence (plug-in MI is > 0 at few
positions). :func:`seeded_permutations` draws those permutations from (seed, input index, layer
index), so they do not depend on how inputs are batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_BUCKETS = 8

# Elements of one chunk's working tensors (one-hot codes, joint counts in float32 and in int32). On the
# CPU 2^21 (about 8 MiB in all) keeps a chunk in cache; on a GPU larger chunks amortise kernel launches.
_CPU_CHUNK_ELEMENTS = 2 ** 21
_GPU_CHUNK_ELEMENTS = 2 ** 26


def _check_buckets(buckets: int) -> None:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive integer; got {buckets!r}")


def bucketize(maps: torch.Tensor, buckets: int = DEFAULT_BUCKETS) -> torch.Tensor:
    """0-based bucket ids (int64, same shape) of maps flattened to ``(..., P)``, each map (last
    dimension) on its own range: ceil(B (v - vmin) / (vmax - vmin)) clamped to 1..B, minus 1.

    The formula is evaluated in float64 in this order. For float32 (or narrower) maps the
    subtractions and the product by B are then exact (barring values more than 2^29 apart in
    magnitude within one map), so the only rounding is the division's: a value exactly on a bucket
    edge, (v - vmin) / (vmax - vmin) = j / B, gets bucket j, as the formula says. A constant map is
    bucket 0 throughout.
    """
    _check_buckets(buckets)
    if maps.dim() < 1 or maps.shape[-1] == 0:
        raise ValueError(f"maps must have shape (..., P) with P >= 1 positions; got {tuple(maps.shape)}")
    if maps.is_complex():
        raise ValueError(f"maps must be real; got dtype {maps.dtype}")
    values = maps.detach().to(torch.float64)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("maps contain NaN or infinite values; bucket ranges would be undefined")
    low = values.amin(dim=-1, keepdim=True)
    span = values.amax(dim=-1, keepdim=True) - low
    # A constant map has span 0 and v - vmin = 0 everywhere: dividing by 1 instead puts it in bucket 1.
    scaled = (buckets * (values - low)) / torch.where(span > 0, span, torch.ones_like(span))
    return scaled.ceil_().clamp_(1, buckets).to(torch.int64) - 1


def pool_to(maps: torch.Tensor, size: tuple[int, int] | Sequence[int]) -> torch.Tensor:
    """Max-pool maps ``(N, n, H, W)`` down to ``size = (h, w)``: non-overlapping (H/h, W/w) windows
    when the ratios are integers, ``adaptive_max_pool2d`` otherwise; unchanged when already that size."""
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape (N, n, H, W); got {tuple(maps.shape)}")
    h, w = (int(s) for s in size)
    height, width = maps.shape[-2:]
    if not (1 <= h <= height and 1 <= w <= width):
        raise ValueError(f"can only pool down: target size {(h, w)} must lie between (1, 1) and the maps' "
                         f"size {(height, width)}")
    if (h, w) == (height, width):
        return maps
    if height % h == 0 and width % w == 0:
        return F.max_pool2d(maps, kernel_size=(height // h, width // w))
    return F.adaptive_max_pool2d(maps, (h, w))


def _check_ids(name: str, ids: torch.Tensor, buckets: int) -> None:
    if ids.dim() != 3:
        raise ValueError(f"{name} must have shape (N, n, P); got {tuple(ids.shape)}")
    if ids.dtype != torch.int64:
        raise ValueError(f"{name} must be int64 bucket ids (see bucketize); got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= buckets):
        raise ValueError(f"{name} must hold bucket ids in 0..{buckets - 1}; "
                         f"got values in [{int(ids.min())}, {int(ids.max())}]")


def _marginal_terms(ids: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per map of ``ids (N, n, P)``: sum_x c_x log c_x (float64) and whether it is a single bucket."""
    counts = torch.zeros(*ids.shape[:2], buckets, dtype=torch.float64, device=ids.device)
    counts.scatter_add_(2, ids, torch.ones(ids.shape, dtype=torch.float64, device=ids.device))
    return torch.xlogy(counts, counts).sum(dim=2), counts.amax(dim=2) == ids.shape[2]


def _one_hot(ids: torch.Tensor, buckets: int, out: torch.Tensor) -> torch.Tensor:
    """``ids (g, k, P)`` as float32 one-hot codes (g, k B, P), written into the flat buffer ``out``."""
    g, k, positions = ids.shape
    codes = out[:g * k * buckets * positions].view(g, k, buckets, positions).zero_()
    codes.scatter_(2, ids.unsqueeze(2), 1.0)
    return codes.view(g, k * buckets, positions)


def _default_chunk(device: torch.device) -> int:
    return _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS


def mi_matrix(a_ids: torch.Tensor, b_ids: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *,
              max_elements: int | None = None) -> torch.Tensor:
    """I(a_i, b_j) in nats for every input and every pair of maps: ``(N, n_a, n_b)`` float32.

    ``a_ids (N, n_a, P)`` and ``b_ids (N, n_b, P)`` are 0-based bucket ids (:func:`bucketize`) of maps
    of the same P positions. Equal to ``sklearn.metrics.mutual_info_score`` on each pair of id rows;
    exactly 0 when either map is a single bucket. ``max_elements`` bounds the elements of the working
    tensors of one chunk (default: 2^21 on the CPU, 2^26 on a GPU); the result does not depend on it.
    """
    _check_buckets(buckets)
    _check_ids("a_ids", a_ids, buckets)
    _check_ids("b_ids", b_ids, buckets)
    if a_ids.shape[0] != b_ids.shape[0] or a_ids.shape[2] != b_ids.shape[2]:
        raise ValueError(f"a_ids and b_ids must share N inputs and P positions; got {tuple(a_ids.shape)} "
                         f"and {tuple(b_ids.shape)}")
    if a_ids.device != b_ids.device:
        raise ValueError(f"a_ids and b_ids must be on one device; got {a_ids.device} and {b_ids.device}")
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"max_elements must be positive; got {max_elements}")
    n, n_a, positions = a_ids.shape
    n_b = b_ids.shape[1]
    device = a_ids.device
    if n * n_a * n_b == 0:
        return torch.zeros(n, n_a, n_b, device=device)
    if not 1 <= positions <= 2 ** 24:
        raise ValueError(f"maps must have 1 to 2^24 positions (float32 counts are exact up to 2^24); "
                         f"got P = {positions}")

    B = buckets
    limit = max_elements or _default_chunk(device)
    # Per input: the b codes. Per map of a: its codes, its joint counts (float32 and int32), row sums.
    fixed = n_b * B * positions
    per_row = B * positions + 2 * B * n_b * B + B * n_b
    if fixed + n_a * per_row <= limit:
        inputs_per_chunk, rows_per_chunk = max(1, limit // (fixed + n_a * per_row)), n_a
    else:
        inputs_per_chunk, rows_per_chunk = 1, max(1, (limit - fixed) // per_row)
    inputs_per_chunk = min(inputs_per_chunk, n)
    rows_per_chunk = min(rows_per_chunk, n_a)
    joint_size = inputs_per_chunk * rows_per_chunk * B * n_b * B
    a_codes_buffer = torch.empty(inputs_per_chunk * rows_per_chunk * B * positions, device=device)
    b_codes_buffer = torch.empty(inputs_per_chunk * fixed, device=device)
    joint_buffer = torch.empty(joint_size, device=device)
    index_buffer = torch.empty(joint_size, dtype=torch.int32, device=device)
    # c log c of every possible count 0..P (0 log 0 = 0), looked up rather than computed per joint cell:
    # an embedding bag over the B cells of a row (x, b) sums their c log c in one pass.
    counts = torch.arange(positions + 1, dtype=torch.float64, device=device)
    xlogx = torch.xlogy(counts, counts).to(torch.float32).unsqueeze(1)

    joint_terms = torch.empty(n, n_a, n_b, device=device)  # sum_xy c_xy log c_xy, float32
    for i0 in range(0, n, inputs_per_chunk):
        i1 = min(n, i0 + inputs_per_chunk)
        b_codes = _one_hot(b_ids[i0:i1], B, b_codes_buffer).transpose(1, 2)  # (g, P, n_b B)
        for r0 in range(0, n_a, rows_per_chunk):
            r1 = min(n_a, r0 + rows_per_chunk)
            g, k = i1 - i0, r1 - r0
            a_codes = _one_hot(a_ids[i0:i1, r0:r1], B, a_codes_buffer)  # (g, k B, P)
            joint = joint_buffer[:g * k * B * n_b * B].view(g, k * B, n_b * B)
            torch.bmm(a_codes, b_codes, out=joint)
            index = index_buffer[:joint.numel()].copy_(joint.view(-1))  # exact: counts <= P <= 2^24
            row_terms = F.embedding_bag(index.view(-1, B), xlogx, mode="sum")  # (g k B n_b, 1)
            joint_terms[i0:i1, r0:r1] = row_terms.view(g, k, B, n_b).sum(dim=2)

    terms_a, single_a = _marginal_terms(a_ids, B)
    terms_b, single_b = _marginal_terms(b_ids, B)
    # In place: broadcast out-of-place arithmetic on (N, n_a, n_b) costs several times more on the CPU.
    mi = joint_terms.to(torch.float64).sub_(terms_a[:, :, None]).sub_(terms_b[:, None, :])
    mi.div_(positions).add_(math.log(positions)).clamp_(min=0)
    mi.masked_fill_(single_a[:, :, None] | single_b[:, None, :], 0.0)
    return mi.to(torch.float32)


def _check_maps(name: str, maps: torch.Tensor) -> None:
    if maps.dim() != 4:
        raise ValueError(f"{name} must have shape (N, n, H, W); got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{name} must be floating point; got dtype {maps.dtype}")


def _common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def _ids(maps: torch.Tensor, size: tuple[int, int], buckets: int) -> torch.Tensor:
    """Pool ``maps (N, n, H, W)`` to ``size``, then bucketize each pooled map on its own range."""
    return bucketize(pool_to(maps, size).flatten(2), buckets)


#: ``permutation(k, P)``: ``(N, P)`` int64, row i a permutation of 0..P-1 for input i of layer k.
Permutation = Callable[[int, int], torch.Tensor]


def seeded_permutations(seed: int, inputs: Sequence[int], layer: int, positions: int, *,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """``(len(inputs), positions)`` int64: for each input index i, a permutation of 0..positions-1 drawn
    from a generator seeded by ``(seed, i, layer)`` alone (numpy's SeedSequence; a negative seed is
    taken modulo 2^64), so an input's permutation does not depend on the inputs batched with it."""
    if positions < 1:
        raise ValueError(f"positions must be positive; got {positions}")
    if any(int(i) < 0 for i in inputs) or layer < 0:
        raise ValueError(f"input and layer indices must be non-negative; got layer {layer}, inputs {list(inputs)}")
    key = int(seed) % 2 ** 64
    rows = [np.random.default_rng([key, int(i), int(layer)]).permutation(positions) for i in inputs]
    table = np.stack(rows) if rows else np.zeros((0, positions), dtype=np.int64)
    return torch.as_tensor(table, dtype=torch.int64, device=device)


def _permuted(ids: torch.Tensor, permutation: Permutation, k: int) -> torch.Tensor:
    """Layer k's ids ``(N, n_k, P)`` with each input's positions reordered by ``permutation(k, P)``."""
    n, _, positions = ids.shape
    order = torch.as_tensor(permutation(k, positions), device=ids.device)
    if order.shape != (n, positions) or order.dtype != torch.int64:
        raise ValueError(f"permutation({k}, {positions}) must be an int64 tensor of shape {(n, positions)}; "
                         f"got {order.dtype} {tuple(order.shape)}")
    if not bool((order.sort(dim=1).values == torch.arange(positions, device=ids.device)).all()):
        raise ValueError(f"permutation({k}, {positions}) must hold a permutation of 0..{positions - 1} per input")
    return ids.gather(2, order[:, None, :].expand_as(ids))


def mi_against(layers: Sequence[torch.Tensor], reference: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *,
               max_elements: int | None = None, permutation: Permutation | None = None) -> list[torch.Tensor]:
    """For each layer's maps ``(N, n_k, H_k, W_k)``, the ``(N, n_k, n_r)`` MI matrix against the
    reference maps ``(N, n_r, H_r, W_r)`` (the input's channels for S, the target maps for T).

    Each pair is compared at the smaller of the two sizes (the larger max-pooled down, then both
    bucketized on their pooled ranges). Layers compared at the same size share one matrix product.

    ``permutation`` (default None: no shuffle) measures the estimator's bias: called as
    ``permutation(k, P)`` for layer k compared at P positions, it returns ``(N, P)`` int64 whose row i
    reorders the positions of every pooled map of layer k for input i (e.g. :func:`seeded_permutations`);
    the reference is not shuffled. Bucketizing is per map, so permuting ids equals permuting the maps.
    """
    _check_buckets(buckets)
    _check_maps("reference", reference)
    for k, maps in enumerate(layers):
        _check_maps(f"layers[{k}]", maps)
        if maps.shape[0] != reference.shape[0]:
            raise ValueError(f"layers[{k}] has {maps.shape[0]} inputs but reference has {reference.shape[0]}")
        if maps.device != reference.device:
            raise ValueError(f"layers[{k}] is on {maps.device} but reference is on {reference.device}")
    groups: dict[tuple[int, int], list[int]] = {}
    for k, maps in enumerate(layers):
        groups.setdefault(_common_size(maps, reference), []).append(k)
    result: list[torch.Tensor | None] = [None] * len(layers)
    for size, members in groups.items():
        if permutation is None:
            layer_ids = torch.cat([_ids(layers[k], size, buckets) for k in members], dim=1)
        else:
            layer_ids = torch.cat([_permuted(_ids(layers[k], size, buckets), permutation, k) for k in members], dim=1)
        matrix = mi_matrix(layer_ids, _ids(reference, size, buckets), buckets, max_elements=max_elements)
        for k, part in zip(members, matrix.split([layers[k].shape[1] for k in members], dim=1)):
            result[k] = part
    return result  # type: ignore[return-value]


def layer_mi(layer_maps: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
             buckets: int = DEFAULT_BUCKETS, *, max_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SPEC's S^(k) ``(N, n_k, n_s)`` against the input channels ``source (N, n_s, H_s, W_s)`` and
    T^(k) ``(N, n_k, n_t)`` against the target maps ``target (N, n_t, H_t, W_t)`` of one layer's maps
    ``(N, n_k, H_k, W_k)``, float32 nats."""
    (s,) = mi_against([layer_maps], source, buckets, max_elements=max_elements)
    (t,) = mi_against([layer_maps], target, buckets, max_elements=max_elements)
    return s, t
