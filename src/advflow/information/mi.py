"""Mutual information between feature maps (docs/method.md, "Information flow"), batched on the maps' device.

The MI of two maps m, m' (2-D arrays) treats their positions as samples. If the maps differ in size,
the larger is max-pooled down to the smaller (:func:`pool_to`). Each map is then bucketized on its own
range, bid(v) = ceil(B (v - vmin) / (vmax - vmin)) clamped to 1..B, so vmin joins bucket 1 and a
constant map is a single bucket (:func:`bucketize`, which returns the 0-based ids bid - 1). The MI of
the two id sequences, from their B x B joint histogram, in nats, is what
``sklearn.metrics.mutual_info_score`` returns on the same ids.

All pairs of two sets of maps are computed at once (:func:`mi_matrix`), from

    I = log P + (sum_xy c_xy log c_xy - sum_x c_x log c_x - sum_y c_y log c_y) / P,

which is sum_xy p_xy log(p_xy / (p_x p_y)) with 0 log 0 = 0 written in counts (P = number of
positions). One batched matrix product gives every joint count: the ids of a one-hot encoded as
(N, n_a B, P) times those of b as (N, P, n_b B / m), where b's codes are packed: m of a map's buckets
share a column, bucket y weighted base^(y mod m) with base > P, so each cell of the product holds m
joint counts as the digits of one number (:func:`_packing`: three for 8 x 8 maps and B = 8, which
makes the product 3/8 of the unpacked one). The product runs in float32, whose integers are exact up
to 2^24 >= base^m; the weights have at most 8 significant bits, so TF32 or bfloat16 matmuls (on a
GPU, or where torch is set to allow them) keep the counts exact too. Each cell, cast to int32, indexes
a float32 table of (the sum of c log c over its digits) / P (no logarithm, no 0 log 0 case); the
looked-up terms are summed per pair and the marginal terms (float64) added in float64. The work goes
in chunks of inputs (and of maps, for very wide layers) whose working tensors stay under
``max_elements`` elements, so memory is bounded for any batch.

For one input and a conv layer k with maps (n_k, H_k, W_k), the method's (docs/method.md) matrices are
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

# Elements of one chunk's working tensors (one-hot codes, packed joint cells in float32 and in int32).
# On one CPU thread 2^21 (about 8 MiB in all) keeps a chunk in cache. With several threads every
# operation is a parallel region, whose start costs up to milliseconds on a busy machine (a thread
# waits for a core): 2^26 (256 MiB) takes a few chunks per batch. On a GPU larger chunks amortise
# kernel launches.
_CPU_CHUNK_ELEMENTS = 2 ** 21
_CPU_THREADED_CHUNK_ELEMENTS = 2 ** 26
_GPU_CHUNK_ELEMENTS = 2 ** 26
# Entries of the table of c log c sums of packed joint cells (see _packing): on the CPU 2^19 (2 MiB)
# packs three of the 8 buckets of a b map per cell up to P = 79 (8 x 8 maps), two up to P = 723; on a
# GPU 2^22 (three up to P = 159, two up to P = 2047).
_CPU_TABLE_ENTRIES = 2 ** 19
_GPU_TABLE_ENTRIES = 2 ** 22


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
    values = maps.detach()
    if not values.is_floating_point():
        values = values.to(torch.float64)
    # vmin and vmax are values of the map, so float64 holds them exactly; a NaN or an infinity in a map
    # shows in its vmin or vmax (both propagate NaN), so checking those checks every value.
    low, high = (bound.to(torch.float64) for bound in torch.aminmax(values, dim=-1, keepdim=True))
    if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()):
        raise ValueError("maps contain NaN or infinite values; bucket ranges would be undefined")
    span = high - low
    # A constant map has span 0 and v - vmin = 0 everywhere: dividing by 1 instead puts it in bucket 1.
    span = torch.where(span > 0, span, torch.ones_like(span))
    # torch.sub promotes the maps to float64 as it reads them; then B (v - vmin) / span, in place.
    scaled = torch.sub(values, low).mul_(buckets).div_(span)
    # Through int32: float64 -> int64 has no vector instruction before AVX-512, float64 -> int32 has.
    return scaled.ceil_().clamp_(1, buckets).sub_(1).to(torch.int32).to(torch.int64)


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
        # The windows' maxima as two reductions of a view (over the window's rows, then its columns):
        # the same values as F.max_pool2d(maps, (H/h, W/w)), in a fraction of its time on the CPU.
        n, c = maps.shape[:2]
        rows = maps.reshape(n, c, h, height // h, width).amax(dim=3)
        return rows.view(n, c, h, w, width // w).amax(dim=4)
    return F.adaptive_max_pool2d(maps, (h, w))


def _check_ids(name: str, ids: torch.Tensor, buckets: int) -> None:
    if ids.dim() != 3:
        raise ValueError(f"{name} must have shape (N, n, P); got {tuple(ids.shape)}")
    if ids.dtype != torch.int64:
        raise ValueError(f"{name} must be int64 bucket ids (see bucketize); got dtype {ids.dtype}")
    if ids.numel():
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0 or high >= buckets:
            raise ValueError(f"{name} must hold bucket ids in 0..{buckets - 1}; got values in [{low}, {high}]")


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


def _packing(positions: int, buckets: int, max_entries: int) -> tuple[int, int]:
    """``(m, base)``: how many buckets of a b map share one column of the product, and the radix.

    Column (j, y // m) of the b codes holds base^(y % m) at the positions where map j is in bucket y, so
    the product's cell (x, (j, g)) is sum_t c_{x, g m + t} base^t, a number in base ``base`` whose
    digits are m joint counts. base > P makes the digits decodable; base^m <= 2^24 keeps every partial
    sum an exact float32 integer; base^m <= ``max_entries`` bounds the table of the c log c sums of
    every packed value. The odd part q of base has q^(m-1) < 2^8, so every weight base^t has at most 8
    significant bits and is exact in bfloat16 and TF32 too: the counts stay exact whatever float32
    matmul precision torch is set to. m = 1 (plain one-hot codes, base P + 1) when nothing packs.
    """
    best = (1, positions + 1)
    for m in range(2, buckets + 1):
        if (positions + 1) ** m > min(max_entries, 2 ** 24):
            break
        candidates = []
        for q in range(1, 256, 2):  # the smallest q 2^s > P with q^(m-1) < 2^8
            if q ** (m - 1) >= 2 ** 8:
                break
            base = q
            while base <= positions:
                base *= 2
            candidates.append(base)
        base = min(candidates)
        if base ** m > min(max_entries, 2 ** 24):
            break
        best = (m, base)
    return best


def _packed_codes(ids: torch.Tensor, buckets: int, m: int, base: int, out: torch.Tensor) -> torch.Tensor:
    """``ids (g, k, P)`` as float32 packed codes (g, ceil(B / m) k, P), written into the flat buffer
    ``out``: row (y // m, j) holds base^(y % m) where map j is in bucket y (see :func:`_packing`). The
    group of buckets is the outer index, so that sums over it run along whole rows of k maps."""
    g, k, positions = ids.shape
    groups = -(-buckets // m)
    weights = torch.tensor([float(base ** (y % m)) for y in range(buckets)], device=ids.device)
    codes = out[:g * groups * k * positions].view(g, groups, k, positions).zero_()
    codes.scatter_(1, torch.div(ids, m, rounding_mode="floor").unsqueeze(1), weights[ids].unsqueeze(1))
    return codes.view(g, groups * k, positions)


def _xlogx_table(m: int, base: int, positions: int, device: torch.device) -> torch.Tensor:
    """float32 ``(base^m,)``: entry v is (sum over the m base-``base`` digits d of v of d log d) / P, with
    0 log 0 = 0, computed in float64 and rounded once."""
    digits = torch.arange(base, dtype=torch.float64, device=device)
    terms = torch.xlogy(digits, digits)
    table = terms
    for _ in range(m - 1):
        table = (terms[:, None] + table[None, :]).flatten()
    return table.div_(positions).to(torch.float32)


def _default_chunk(device: torch.device) -> int:
    if device.type == "cuda":
        return _GPU_CHUNK_ELEMENTS
    return _CPU_CHUNK_ELEMENTS if torch.get_num_threads() == 1 else _CPU_THREADED_CHUNK_ELEMENTS


def _default_table(device: torch.device) -> int:
    return _GPU_TABLE_ENTRIES if device.type == "cuda" else _CPU_TABLE_ENTRIES


def mi_matrix(a_ids: torch.Tensor, b_ids: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *,
              max_elements: int | None = None) -> torch.Tensor:
    """I(a_i, b_j) in nats for every input and every pair of maps: ``(N, n_a, n_b)`` float32.

    ``a_ids (N, n_a, P)`` and ``b_ids (N, n_b, P)`` are 0-based bucket ids (:func:`bucketize`) of maps
    of the same P positions. Equal to ``sklearn.metrics.mutual_info_score`` on each pair of id rows;
    exactly 0 when either map is a single bucket. ``max_elements`` bounds the elements of the working
    tensors of one chunk (default: 2^21 on one CPU thread, 2^26 with several CPU threads or on a GPU);
    the result does not depend on it.
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
    m, base = _packing(positions, buckets, _default_table(device))
    return _mi_chunks(a_ids, b_ids, buckets, m, base, max_elements or _default_chunk(device))


def _mi_chunks(a_ids: torch.Tensor, b_ids: torch.Tensor, buckets: int, m: int, base: int,
               limit: int) -> torch.Tensor:
    """:func:`mi_matrix` with b's codes packed m buckets per row (:func:`_packing`), in chunks of
    inputs and of a's maps whose working tensors stay under ``limit`` elements.

    I = log P - sum_x c_x log c_x / P - sum_y c_y log c_y / P + sum_xy c_xy log c_xy / P: the first
    three terms are float64 vectors over a's maps (part_a) and b's maps (part_b); the last, per chunk,
    is one product (a's one-hot codes times b's packed codes), the packed cells cast to int32, the
    (sum of c log c) / P of each looked up in a table (exact counts as indices: no logarithm, no 0 log 0
    case), and summed over x and the groups of y, to which part_a and part_b are added in float64. A
    single-bucket map's part is -inf, which the final clamp at 0 turns into exactly 0.
    """
    n, n_a, positions = a_ids.shape
    n_b = b_ids.shape[1]
    device = a_ids.device
    B = buckets
    groups = -(-B // m)  # rows of packed b codes per b map
    columns = groups * n_b  # of the product, per input
    # b's packed codes for all inputs at once (at most 4 floats per element of b_ids when nothing packs);
    # then, per map of a: its codes, its packed joint cells (float32 and int32), its MI against each b
    # map in float64.
    b_codes_all = _packed_codes(b_ids, B, m, base, torch.empty(n * columns * positions, device=device))
    b_codes_all = b_codes_all.transpose(1, 2)  # (N, P, columns)
    per_row = B * positions + 2 * B * columns + 2 * n_b
    if n_a * per_row <= limit:
        inputs_per_chunk, rows_per_chunk = max(1, limit // (n_a * per_row)), n_a
    else:
        inputs_per_chunk, rows_per_chunk = 1, max(1, limit // per_row)
    inputs_per_chunk = min(inputs_per_chunk, n)
    rows_per_chunk = min(rows_per_chunk, n_a)
    cells = inputs_per_chunk * rows_per_chunk * B * columns
    a_codes_buffer = torch.empty(inputs_per_chunk * rows_per_chunk * B * positions, device=device)
    joint_buffer = torch.empty(cells, device=device)
    index_buffer = torch.empty(cells, dtype=torch.int32, device=device)
    mi_buffer = torch.empty(inputs_per_chunk * rows_per_chunk * n_b, dtype=torch.float64, device=device)
    table = _xlogx_table(m, base, positions, device)

    terms_a, single_a = _marginal_terms(a_ids, B)
    terms_b, single_b = _marginal_terms(b_ids, B)
    part_a = terms_a.div_(-positions).add_(math.log(positions)).masked_fill_(single_a, -math.inf)[:, :, None]
    part_b = terms_b.div_(-positions).masked_fill_(single_b, -math.inf)[:, None, :]

    mi = torch.empty(n, n_a, n_b, device=device)
    for i0 in range(0, n, inputs_per_chunk):
        i1 = min(n, i0 + inputs_per_chunk)
        b_codes = b_codes_all[i0:i1]
        for r0 in range(0, n_a, rows_per_chunk):
            r1 = min(n_a, r0 + rows_per_chunk)
            g, k = i1 - i0, r1 - r0
            a_codes = _one_hot(a_ids[i0:i1, r0:r1], B, a_codes_buffer)  # (g, k B, P)
            joint = joint_buffer[:g * k * B * columns]
            torch.bmm(a_codes, b_codes, out=joint.view(g, k * B, columns))  # cells (i, x, y // m, j)
            index = index_buffer[:joint.numel()].copy_(joint)  # exact: packed values < base^m <= 2^24
            terms = torch.index_select(table, 0, index, out=joint)
            # Over x and the groups of y at once (adjacent dimensions), along rows of n_b maps.
            joint_terms = torch.sum(terms.view(g, k, B * groups, n_b), dim=2, out=mi[i0:i1, r0:r1])
            chunk = torch.add(part_a[i0:i1, r0:r1], joint_terms, out=mi_buffer[:g * k * n_b].view(g, k, n_b))
            torch.add(chunk, part_b[i0:i1], out=joint_terms)
    return mi.clamp_(min=0)


def _check_maps(name: str, maps: torch.Tensor) -> None:
    if maps.dim() != 4:
        raise ValueError(f"{name} must have shape (N, n, H, W); got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{name} must be floating point; got dtype {maps.dtype}")


def _common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def _ids(layers: Sequence[torch.Tensor], size: tuple[int, int], buckets: int) -> torch.Tensor:
    """Pool each of ``layers`` (maps ``(N, n_k, H_k, W_k)``) to ``size``, then bucketize each pooled map
    on its own range: ``(N, sum_k n_k, h w)``, the layers' maps in order."""
    # Each layer pooled on its own (concatenating the raw maps of layers of one size first would save
    # operations but copies every raw map, which costs more on a busy machine), then one bucketize.
    pooled = [pool_to(maps, size).flatten(2) for maps in layers]
    return bucketize(pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1), buckets)


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


def comparison_groups(layers: Sequence[torch.Tensor], reference: torch.Tensor) -> dict[tuple[int, int], list[int]]:
    """The layers' indices grouped by the size each is compared with ``reference`` at (the smaller of the two), after
    checking that every layer's maps and the reference are maps of the same inputs on one device (ValueError)."""
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
    return groups


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
    groups = comparison_groups(layers, reference)
    result: list[torch.Tensor | None] = [None] * len(layers)
    for size, members in groups.items():
        # Bucketizing is per map: the maps of all the layers compared at this size, and the reference's,
        # are bucketized at once.
        ids = _ids([layers[k] for k in members] + [reference], size, buckets)
        layer_ids, reference_ids = ids.split([ids.shape[1] - reference.shape[1], reference.shape[1]], dim=1)
        if permutation is not None:
            parts = layer_ids.split([layers[k].shape[1] for k in members], dim=1)
            layer_ids = torch.cat([_permuted(part, permutation, k) for k, part in zip(members, parts)], dim=1)
        matrix = mi_matrix(layer_ids, reference_ids, buckets, max_elements=max_elements)
        for k, part in zip(members, matrix.split([layers[k].shape[1] for k in members], dim=1)):
            result[k] = part
    return result  # type: ignore[return-value]


def layer_mi(layer_maps: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
             buckets: int = DEFAULT_BUCKETS, *, max_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The docs/method.md's S^(k) ``(N, n_k, n_s)`` against the input channels ``source (N, n_s, H_s, W_s)`` and
    T^(k) ``(N, n_k, n_t)`` against the target maps ``target (N, n_t, H_t, W_t)`` of one layer's maps
    ``(N, n_k, H_k, W_k)``, float32 nats."""
    (s,) = mi_against([layer_maps], source, buckets, max_elements=max_elements)
    (t,) = mi_against([layer_maps], target, buckets, max_elements=max_elements)
    return s, t
