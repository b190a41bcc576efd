"""A differentiable surrogate of the bucketized MI of :mod:`advflow.information.mi`: **soft histograms**.

:func:`advflow.information.mi.mi_against` pools each pair of maps to a common size, bucketizes every pooled map on
its own range into B equal-width buckets and takes the plug-in MI of the joint histogram of bucket ids over the
positions. Every step but the bucketing is differentiable; the bucket ids are piecewise constant in the maps, so the
MI has no useful gradient. :func:`soft_mi_against` keeps the same pooling, the same per-map ranges and the same bins,
and replaces each value's bucket by a **soft assignment** to the B bins:

    u = B (v - vmin) / (vmax - vmin)   (the bucket coordinate: bin j, 0-based, is u in (j, j + 1]),
    a_j(v) = softmax_j( -(u - (j + 1/2))^2 / (2 h^2) ),

a Gaussian kernel of ``bandwidth`` h (in bucket widths) around the bin centres, normalised over the bins. The joint
histogram of two maps becomes the batched matrix product of their assignments over positions,
``p_xy = (1/P) sum_p a_x(v_p) b_y(w_p)``, whose marginals are exactly ``p_x = (1/P) sum_p a_x(v_p)`` and ``p_y``; the
MI is the plug-in MI of that soft joint distribution, ``sum p_xy log p_xy - sum p_x log p_x - sum p_y log p_y`` (a
Kullback-Leibler divergence of the soft joint from the product of its marginals, so >= 0; clamped at 0 against
rounding, as ``mi_against`` does).

**The limit.** As h -> 0 the softmax puts all mass on the nearest bin centre, which is the bucket ``bucketize``
gives (``ceil(u)`` clamped to 1..B, minus 1) for every value off the bucket edges: the map's minimum (u = 0) is nearest
bin 0's centre, its maximum (u = B) bin B - 1's, and a constant map (span 0, u = 0) is bin 0 throughout, as in
``bucketize``. A value at distance d (in bucket widths) from an edge puts about ``exp(-d / h^2)`` of its mass on the
wrong side (2e-9 at h = 0.01 and d = 0.002), so on maps with no value near an edge the soft MI equals the bucketized
one to float precision at h = 0.01 (``tests/test_infopath_surrogate.py``). A value exactly on an edge (8-bit pixels
often are) is split in two at every h. At larger h the soft MI is smoothed (and lower: blurring the bins loses
information) but its gradient reaches every value, not only those near an edge.

**The range is kept differentiable**: vmin and vmax are the pooled map's own min and max (``amin``/``amax``, whose
gradient goes to the extreme positions), as the bucket edges of the real estimator move with them; ``detach_range``
treats them as constants instead.

**Memory.** The soft joint of one input is ``(n_a B) x (n_b B)`` dense (the one-hot product of ``mi_against`` is
sparse in effect; this one is not), so the work goes in chunks of inputs whose joint and assignments stay under
``max_elements`` elements, and when gradients are recorded each chunk runs under activation checkpointing
(:func:`torch.utils.checkpoint.checkpoint`): only the pooled maps are kept for the backward pass, which recomputes a
chunk's soft histograms, so the memory of the soft joints is one chunk's whatever the batch. A comparison at a single
position (1x1 maps) is 0 without computing (every map is constant, as in ``mi_against``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from advflow.information.mi import DEFAULT_BUCKETS, Permutation, _check_buckets, comparison_groups, pool_to

#: The soft histograms' kernel bandwidth, in bucket widths, of :func:`soft_mi_against` (and of the information-path
#: detector's surrogate, :meth:`advflow.defenses.infopath.InfoPathDetector.differentiable_score`).
DEFAULT_BANDWIDTH = 0.25

# Elements of one chunk's working tensors (the soft joint and the assignments, each a few times over in the
# forward and the recomputed backward).
_CPU_CHUNK_ELEMENTS = 2 ** 22
_GPU_CHUNK_ELEMENTS = 2 ** 27


def _check_bandwidth(bandwidth: float) -> float:
    try:
        value = float(bandwidth)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bandwidth must be a positive number (bucket widths); got {bandwidth!r}") from error
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth must be a positive number (bucket widths); got {bandwidth!r}")
    return value


def soft_assign(maps: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *, bandwidth: float = DEFAULT_BANDWIDTH,
                detach_range: bool = False) -> torch.Tensor:
    """``(..., P, B)``: each value of maps flattened to ``(..., P)`` softly assigned to the B bins of
    :func:`advflow.information.mi.bucketize` on its map's own range (the module's docstring); rows sum to 1."""
    _check_buckets(buckets)
    h = _check_bandwidth(bandwidth)
    if maps.dim() < 1 or maps.shape[-1] == 0:
        raise ValueError(f"maps must have shape (..., P) with P >= 1 positions; got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point; got dtype {maps.dtype}")
    low, high = maps.amin(dim=-1, keepdim=True), maps.amax(dim=-1, keepdim=True)
    if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()):
        raise ValueError("maps contain NaN or infinite values; bucket ranges would be undefined")
    if detach_range:
        low, high = low.detach(), high.detach()
    span = high - low
    # A constant map has span 0 and v - vmin = 0 everywhere: dividing by 1 instead puts it in bin 0, as bucketize does.
    span = torch.where(span > 0, span, torch.ones_like(span))
    u = (maps - low) * (buckets / span)
    centres = torch.arange(buckets, dtype=maps.dtype, device=maps.device) + 0.5
    return torch.softmax(-(u.unsqueeze(-1) - centres).square() / (2.0 * h * h), dim=-1)


def _plogp(p: torch.Tensor) -> torch.Tensor:
    """``p log p`` with 0 log 0 = 0 and a finite gradient at 0 (where a bin's mass underflowed)."""
    return p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def _soft_mi(a: torch.Tensor, b: torch.Tensor, buckets: int, bandwidth: float, detach_range: bool) -> torch.Tensor:
    """``(N, n_a, n_b)`` soft-histogram MI of pooled, flattened maps ``a (N, n_a, P)`` and ``b (N, n_b, P)``."""
    n, n_a, positions = a.shape
    n_b = b.shape[1]
    soft_a = soft_assign(a, buckets, bandwidth=bandwidth, detach_range=detach_range)  # (N, n_a, P, B)
    soft_b = soft_assign(b, buckets, bandwidth=bandwidth, detach_range=detach_range)
    joint = torch.bmm(soft_a.permute(0, 1, 3, 2).reshape(n, n_a * buckets, positions),
                      soft_b.permute(0, 2, 1, 3).reshape(n, positions, n_b * buckets)) / positions
    joint_terms = _plogp(joint).view(n, n_a, buckets, n_b, buckets).sum(dim=(2, 4))
    marginal_a = _plogp(soft_a.mean(dim=2)).sum(dim=2)  # (N, n_a)
    marginal_b = _plogp(soft_b.mean(dim=2)).sum(dim=2)  # (N, n_b)
    return (joint_terms - marginal_a[:, :, None] - marginal_b[:, None, :]).clamp(min=0)


def soft_mi_matrix(a: torch.Tensor, b: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *,
                   bandwidth: float = DEFAULT_BANDWIDTH, detach_range: bool = False,
                   max_elements: int | None = None) -> torch.Tensor:
    """The soft-histogram MI, nats, of every pair of maps of ``a (N, n_a, P)`` and ``b (N, n_b, P)`` (maps of the
    same P positions, each binned on its own range): ``(N, n_a, n_b)`` in the maps' dtype, differentiable with respect
    to both. ``max_elements``: the chunk bound (the module's docstring); the result does not depend on it."""
    _check_buckets(buckets)
    bandwidth = _check_bandwidth(bandwidth)
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"a and b must have shapes (N, n_a, P) and (N, n_b, P); got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"max_elements must be positive; got {max_elements}")
    n, n_a, positions = a.shape
    n_b = b.shape[1]
    if n * n_a * n_b == 0 or positions == 1:  # one position: every map is constant, a single bin, and MI is 0
        return a.new_zeros(n, n_a, n_b)
    limit = max_elements or (_GPU_CHUNK_ELEMENTS if a.device.type == "cuda" else _CPU_CHUNK_ELEMENTS)
    per_input = 2 * n_a * buckets * n_b * buckets + 2 * (n_a + n_b) * positions * buckets
    step = max(1, min(n, limit // per_input))
    record = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    parts = []
    for start in range(0, n, step):
        args = (a[start:start + step], b[start:start + step], buckets, bandwidth, detach_range)
        parts.append(checkpoint(_soft_mi, *args, use_reentrant=False) if record and step < n else _soft_mi(*args))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def soft_mi_against(layers: Sequence[torch.Tensor], reference: torch.Tensor, buckets: int = DEFAULT_BUCKETS, *,
                    bandwidth: float = DEFAULT_BANDWIDTH, detach_range: bool = False, max_elements: int | None = None,
                    permutation: Permutation | None = None) -> list[torch.Tensor]:
    """:func:`advflow.information.mi.mi_against` with soft histograms: for each layer's maps ``(N, n_k, H_k, W_k)``
    the ``(N, n_k, n_r)`` soft MI against the reference maps ``(N, n_r, H_r, W_r)``, each pair compared at the smaller
    of the two sizes (the larger max-pooled down), each pooled map binned on its own range. Differentiable with
    respect to the maps and the reference; equal to ``mi_against`` as ``bandwidth`` (bucket widths) -> 0 for maps with
    no value on a bucket edge. ``permutation``: as in ``mi_against`` (the estimator's bias)."""
    _check_buckets(buckets)
    bandwidth = _check_bandwidth(bandwidth)
    groups = comparison_groups(layers, reference)
    result: list[torch.Tensor | None] = [None] * len(layers)
    for size, members in groups.items():
        pooled = []
        for k in members:
            part = pool_to(layers[k], size).flatten(2)
            if permutation is not None:
                order = torch.as_tensor(permutation(k, part.shape[2]), device=part.device)
                if order.shape != part.shape[::2] or order.dtype != torch.int64:
                    raise ValueError(f"permutation({k}, {part.shape[2]}) must be an int64 tensor of shape "
                                     f"{tuple(part.shape[::2])}; got {order.dtype} {tuple(order.shape)}")
                part = part.gather(2, order[:, None, :].expand_as(part))
            pooled.append(part)
        a = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)
        b = pool_to(reference, size).flatten(2).to(a.dtype)
        matrix = soft_mi_matrix(a, b, buckets, bandwidth=bandwidth, detach_range=detach_range,
                                max_elements=max_elements)
        for k, part in zip(members, matrix.split([layers[k].shape[1] for k in members], dim=1)):
            result[k] = part
    return result  # type: ignore[return-value]
