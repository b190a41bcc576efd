"""Information paths of inputs (SPEC, "Information flow"), from the MI matrices of :mod:`advflow.mi`.

For one input and conv layers k = 1..K, mu_s^(k) is the mean of S^(k) (layer k's maps against the
input's channels) and mu_t^(k) the mean of T^(k) (against the last conv layer's maps). The paths are

    IIP = {(k, mu_s^(k))},  OIP = {(k, mu_t^(k))},  IOC = {(mu_s^(k), mu_t^(k))},

and the distance of two paths is (1/K) sum_k |mu_1^(k) - mu_2^(k)|. Layers are numbered from 1, as in
the paper. Every function works on batches: the layer axis is the last one of a ``mu`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def path_means(matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, K)``: the mean of each layer's MI matrix ``(N, n_k, n_x)`` over its n_k * n_x entries."""
    if len(matrices) == 0:
        raise ValueError("path_means needs the MI matrices of at least one layer; got none")
    for k, matrix in enumerate(matrices):
        if matrix.dim() != 3:
            raise ValueError(f"matrices[{k}] must have shape (N, n_k, n_x); got {tuple(matrix.shape)}")
        if matrix.shape[1] * matrix.shape[2] == 0:
            raise ValueError(f"matrices[{k}] has no entries to average; got shape {tuple(matrix.shape)}")
        if matrix.shape[0] != matrices[0].shape[0]:
            raise ValueError(f"matrices[{k}] has {matrix.shape[0]} inputs but matrices[0] has {matrices[0].shape[0]}")
    return torch.stack([matrix.mean(dim=(1, 2)) for matrix in matrices], dim=1)


def information_paths(S: Sequence[torch.Tensor], T: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu_s, mu_t)``, each ``(N, K)``: the layer means of the S^(k) and T^(k) matrices."""
    if len(S) != len(T):
        raise ValueError(f"S and T must cover the same layers; got {len(S)} S matrices and {len(T)} T matrices")
    mu_s, mu_t = path_means(S), path_means(T)
    if mu_s.shape[0] != mu_t.shape[0]:
        raise ValueError(f"S and T must cover the same inputs; got {mu_s.shape[0]} and {mu_t.shape[0]}")
    return mu_s, mu_t


def _check_path(name: str, mu: torch.Tensor) -> None:
    if mu.dim() < 1 or mu.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., K) with K >= 1 layers; got {tuple(mu.shape)}")


def _with_layer_numbers(mu: torch.Tensor) -> torch.Tensor:
    layers = torch.arange(1, mu.shape[-1] + 1, dtype=mu.dtype, device=mu.device).expand_as(mu)
    return torch.stack([layers, mu], dim=-1)


def iip(mu_s: torch.Tensor) -> torch.Tensor:
    """The input information path: points ``(k, mu_s^(k))`` as ``(..., K, 2)``, k = 1..K."""
    _check_path("mu_s", mu_s)
    return _with_layer_numbers(mu_s)


def oip(mu_t: torch.Tensor) -> torch.Tensor:
    """The output information path: points ``(k, mu_t^(k))`` as ``(..., K, 2)``, k = 1..K."""
    _check_path("mu_t", mu_t)
    return _with_layer_numbers(mu_t)


def ioc(mu_s: torch.Tensor, mu_t: torch.Tensor) -> torch.Tensor:
    """The input-output curve: points ``(mu_s^(k), mu_t^(k))`` as ``(..., K, 2)``."""
    _check_path("mu_s", mu_s)
    _check_path("mu_t", mu_t)
    if mu_s.shape != mu_t.shape:
        raise ValueError(f"mu_s and mu_t must have the same shape (..., K); got {tuple(mu_s.shape)} "
                         f"and {tuple(mu_t.shape)}")
    return torch.stack([mu_s, mu_t], dim=-1)


def path_distance(mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
    """(1/K) sum_k |mu1^(k) - mu2^(k)| over the last (layer) axis; leading axes broadcast, so a batch
    of paths ``(N, K)`` can be compared with one path ``(K,)``. Returns shape ``broadcast(...)``."""
    _check_path("mu1", mu1)
    _check_path("mu2", mu2)
    if mu1.shape[-1] != mu2.shape[-1]:
        raise ValueError(f"paths must have the same number of layers K; got {mu1.shape[-1]} and {mu2.shape[-1]}")
    try:
        torch.broadcast_shapes(mu1.shape, mu2.shape)
    except RuntimeError as error:
        raise ValueError(f"the leading axes of mu1 {tuple(mu1.shape)} and mu2 {tuple(mu2.shape)} do not "
                         f"broadcast") from error
    return (mu1 - mu2).abs().mean(dim=-1)
