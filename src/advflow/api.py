"""The Python API: information paths of any ``torch.nn.Module``, MI of feature maps, and readers for the
files the workflow writes. ``import advflow`` exposes every name here (loaded on first use).

Example (the README's; ``tests/test_api.py`` runs it)::

    import torch, advflow
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU())
    x = torch.rand(4, 1, 28, 28) * 2 - 1                     # a batch in the model's input space
    paths = advflow.information_paths(model, x, layers=["1", "4"])  # the ReLU after each conv
    paths.layers, paths.mu_s.shape, paths.mu_t.shape         # ['1', '4'], (4, 2), (4, 2)
    advflow.mutual_information(x[0, 0], x[0, 0])             # MI of a map with itself, in nats

Conventions (docs/method.md, "Information flow"): a conv layer's maps are its output after the ReLU and the
max-pool that directly follows it; S^(k) is the MI of each map of layer k with each input channel and
T^(k) with each map of the last measured layer (the target); mu_s^(k) and mu_t^(k) are their means
(the input and output information paths, IIP and OIP). MI is the plug-in estimate over positions with
B equal-width buckets per map (:mod:`advflow.information.mi`), in nats; two maps of different sizes are compared
at the smaller size (the larger one max-pooled down).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from advflow.workflow.io import open_h5
from advflow.information.mi import DEFAULT_BUCKETS, mi_against
from advflow.information.paths import information_paths as _paths_of

__all__ = ["Paths", "conv_layer_maps", "information_paths", "mutual_information", "Features", "read_features",
           "MIFile", "read_mi", "AdversarialSet", "read_set"]


def _default_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the conv layers' maps: an advflow ConvNet's blocks (conv, ReLU,
    pool), or else every ``nn.Conv2d`` (whose output is before any activation: pass ``layers`` to
    measure after it)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and all(hasattr(b, "output_maps") for b in blocks):
        return [(f"conv{i + 1}", b) for i, b in enumerate(blocks)]
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d; pass layers= the names of the modules whose "
                         "outputs are the maps to measure")
    return convs


@torch.no_grad()
def _as_input(x: torch.Tensor | np.ndarray, model: nn.Module) -> torch.Tensor:
    """``x`` (a tensor, a NumPy array or anything ``np.asarray`` takes) as a tensor on the model's device, in its
    parameters' floating dtype; the values are not rescaled (pass them in the model's input space)."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is not None:
        return x.to(device=parameter.device, dtype=parameter.dtype)
    return x if x.is_floating_point() else x.float()


def conv_layer_maps(model: nn.Module, x: torch.Tensor | np.ndarray, *,
                    layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The maps ``(N, n_k, H_k, W_k)`` of each conv layer for the batch ``x (N, C, H, W)``, in network
    order, captured by forward hooks in one forward pass (the model in eval mode: dropout off; its mode
    is restored). ``layers``: names (as in ``model.named_modules()``) of the modules whose outputs are
    the maps; default: an advflow ConvNet's conv blocks (``conv1``, ``conv2``, ...), else every
    ``nn.Conv2d``.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> [tuple(m.shape) for m in conv_layer_maps(model, torch.zeros(2, 1, 8, 8), layers=["1"]).values()]
    [(2, 4, 6, 6)]
    """
    x = _as_input(x, model)
    if layers is None:
        chosen = _default_layers(model)
    else:
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise ValueError(f"no module named {', '.join(map(repr, unknown))} in {type(model).__name__}; names are "
                             f"those of model.named_modules(), e.g. {', '.join(list(modules)[1:6])}")
        chosen = [(name, modules[name]) for name in layers]
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in captured:
                raise ValueError(f"module {name!r} runs more than once in a forward pass; its maps are ambiguous. "
                                 "Pass layers= modules that each run once")
            captured[name] = output.detach()
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in chosen]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in chosen if name not in captured]
    if missing:
        raise ValueError(f"module(s) {', '.join(missing)} did not run in the forward pass")
    for name, maps in captured.items():
        if maps.dim() != 4:
            raise ValueError(f"module {name!r} outputs shape {tuple(maps.shape)}; maps must be (N, n, H, W)")
    return dict(captured)  # hooks fire, and so insert, in the order the network runs the layers


@dataclass(frozen=True)
class Paths:
    """Per-input information paths: ``mu_s``, ``mu_t`` ``(N, K)`` float64 (nats), layer k of ``layers``."""

    layers: list[str]
    mu_s: np.ndarray
    mu_t: np.ndarray


def information_paths(model: nn.Module, x: torch.Tensor | np.ndarray, *, layers: Sequence[str] | None = None,
                      buckets: int = DEFAULT_BUCKETS, batch_size: int = 64) -> Paths:
    """The IIP and OIP of each input of ``x (N, C, H, W)`` (in the model's input space) through
    ``model``'s conv layers (:func:`conv_layer_maps`; the last one is the target), in batches.

    The workflow's MI stage computes the same numbers from stored maps (tests/test_api.py checks it).
    """
    x = _as_input(x, model)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x must be a batch (N, C, H, W) with N >= 1; got shape {tuple(x.shape)}")
    names, mu_s, mu_t = None, [], []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        maps = conv_layer_maps(model, batch, layers=layers)
        names = list(maps)
        stacks = [m.float() for m in maps.values()]
        s, t = _paths_of(mi_against(stacks, batch.float(), buckets), mi_against(stacks, stacks[-1], buckets))
        mu_s.append(s.double().cpu().numpy())
        mu_t.append(t.double().cpu().numpy())
    return Paths(names or [], np.concatenate(mu_s), np.concatenate(mu_t))


def mutual_information(a: torch.Tensor, b: torch.Tensor, *, buckets: int = DEFAULT_BUCKETS) -> torch.Tensor:
    """MI in nats between feature maps, each bucketized into ``buckets`` equal-width bins over its own
    range: two maps ``(H, W)`` give a scalar; two stacks ``(n_a, H, W)``, ``(n_b, H', W')`` the
    ``(n_a, n_b)`` matrix; two batches ``(N, n_a, H, W)``, ``(N, n_b, H', W')`` ``(N, n_a, n_b)``. Maps
    of different sizes are compared at the smaller (the larger max-pooled down).

    >>> m = torch.arange(16.0).reshape(4, 4)
    >>> round(float(mutual_information(m, m, buckets=4)), 4)  # log 4: each bucket holds 4 positions
    1.3863
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.dim() != b.dim() or a.dim() not in (2, 3, 4):
        raise ValueError(f"a and b must both be maps (H, W), stacks (n, H, W) or batches (N, n, H, W); got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    dims = a.dim()
    while a.dim() < 4:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    (matrix,) = mi_against([a.float()], b.float().to(a.device), buckets)
    return matrix[0, 0, 0] if dims == 2 else matrix[0] if dims == 3 else matrix


#: The workflow's HDF5 files, told apart by what they hold: (kind, the datasets or groups that mark it, its reader).
_KINDS = (("an adversarial set", ("adversarial",), "read_set"),
          ("an MI file", ("S", "T"), "read_mi"),
          ("a features file", ("layers", "input"), "read_features"),
          ("an input profile", ("images", "labels"), None),
          ("a prepared dataset", ("train", "test"), None))


def _file_kind(h5) -> tuple[str, str | None]:
    for kind, marks, reader in _KINDS:
        if all(mark in h5 for mark in marks):
            return kind, reader
    return "not a file of the workflow", None


def _expect(h5, path: str | Path, reader: str) -> None:
    """A one-line error when ``path`` holds another kind of file than ``reader`` reads, naming what it holds and
    the function that reads it."""
    kind, right = _file_kind(h5)
    if right != reader:
        wanted = next(k for k, _, r in _KINDS if r == reader)
        use = f"; read it with advflow.{right}" if right else ""
        raise ValueError(f"{path}: this is {kind}, not {wanted}{use}")


def _layers_in_order(h5, group: str) -> list[str]:
    names = json.loads(h5.attrs["layers"])
    missing = [n for n in names if f"{group}/{n}" not in h5]
    if missing:
        raise ValueError(f"{h5.filename}: layers {', '.join(missing)} are listed but not stored; the file is damaged")
    return names


@dataclass(frozen=True)
class Features:
    """A features file: ``maps`` {layer: (N, n_k, H_k, W_k)} in network order (conv1, conv2, ..., not
    the alphabetical conv1, conv10, ...), the ``input`` (N, C, H, W), ``labels``, ``predictions`` and
    the file's attributes (``model``, ``set``)."""

    maps: dict[str, np.ndarray]
    input: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    attrs: dict = field(default_factory=dict)


def read_features(path: str | Path, *, layers: Sequence[str] | None = None) -> Features:
    """Read ``features/{model}/{set}.h5`` (all layers, or those named in ``layers``)."""
    with open_h5(path) as h5:
        _expect(h5, path, "read_features")
        names = _layers_in_order(h5, "layers")
        wanted = list(layers) if layers is not None else names
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"{path}: no layer {', '.join(unknown)}; it has {', '.join(names)}")
        return Features({n: h5[f"layers/{n}"][:] for n in wanted}, h5["input"][:], h5["labels"][:],
                        h5["predictions"][:], {k: h5.attrs[k] for k in ("model", "set") if k in h5.attrs})


@dataclass(frozen=True)
class MIFile:
    """An MI file: ``S`` and ``T`` {layer: (N, n_k, n_s or n_t)} float32 nats, ``dead`` {layer: (N,)}, in
    network order; ``labels``, ``predictions``; attributes (``model``, ``set``, ``buckets``, ...)."""

    S: dict[str, np.ndarray]
    T: dict[str, np.ndarray]
    dead: dict[str, np.ndarray]
    labels: np.ndarray
    predictions: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.S)


def read_mi(path: str | Path) -> MIFile:
    """Read ``mi/{model}/{set}.h5``."""
    with open_h5(path) as h5:
        _expect(h5, path, "read_mi")
        names = _layers_in_order(h5, "S")
        attrs = {k: (json.loads(v) if k == "layers" else v) for k, v in h5.attrs.items()}
        return MIFile({n: h5[f"S/{n}"][:] for n in names}, {n: h5[f"T/{n}"][:] for n in names},
                      {n: h5[f"dead/{n}"][:] for n in names if f"dead/{n}" in h5}, h5["labels"][:],
                      h5["predictions"][:], attrs)


@dataclass(frozen=True)
class AdversarialSet:
    """An adversarial set ``adv/{target}/{attack}.h5``: ``adversarial`` (N, C, H, W) in [-1, 1],
    ``labels``, ``indices`` (test indices of the seeds), ``pred_before``, ``pred_after``, ``success``,
    ``confidence``, norms of the perturbation ``norms_r`` and of the seed ``norms_x`` ({l0, l1, l2, linf}:
    (N,)), and the attributes (``attack``, ``target``, ``norm``, ``settings`` as a dict, ``seed``)."""

    adversarial: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    success: np.ndarray
    confidence: np.ndarray
    norms_r: dict[str, np.ndarray]
    norms_x: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else float("nan")


def read_set(path: str | Path) -> AdversarialSet:
    """Read an adversarial (or control) set file of the attack stage."""
    with open_h5(path) as h5:
        _expect(h5, path, "read_set")
        attrs = {k: h5.attrs[k] for k in h5.attrs}
        if "settings" in attrs:
            attrs["settings"] = json.loads(attrs["settings"])
        return AdversarialSet(
            h5["adversarial"][:], h5["labels"][:], h5["indices"][:], h5["pred_before"][:], h5["pred_after"][:],
            h5["success"][:].astype(bool), h5["confidence"][:],
            {k: h5[f"norms_r/{k}"][:] for k in h5["norms_r"]}, {k: h5[f"norms_x/{k}"][:] for k in h5["norms_x"]},
            attrs)
