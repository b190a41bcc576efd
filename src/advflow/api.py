"""The Python API: information paths of any ``torch.nn.Module``, MI of feature maps, the aggregates, shifts and
verdicts the report decides its findings with, and readers for the files the workflow writes. ``import advflow``
exposes every name here (loaded on first use).

Example (the README's; ``tests/test_api.py`` runs it)::

    import torch, advflow
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU())
    x = torch.rand(4, 1, 28, 28) * 2 - 1                     # a batch in the model's input space
    paths = advflow.information_paths(model, x, layers=["1", "4"])  # the ReLU after each conv
    paths.layers, paths.mu_s.shape, paths.mu_t.shape         # ['1', '4'], (4, 2), (4, 2)
    advflow.mutual_information(x[0, 0], x[0, 0])             # MI of a map with itself, in nats

From paths to a verdict (the README's second example; ``tests/test_api_layers.py`` runs it as a doctest): the
paths of clean inputs, of their adversarial versions (here a stand-in: each input blurred) and of the random
control (each input plus noise of the same L2 size), with the default layers; the GP aggregate of a set; the
paired, standardized OIP shift with its 95 % bootstrap interval; the attack's shift beyond its control's and the
verdict on "the attack shifts the OIP more than random noise of its size does":

>>> import torch, advflow
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Sequential(
...     torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
...     torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU()).eval()
>>> x = torch.rand(32, 1, 16, 16) * 2 - 1                      # clean inputs, in the model's input space
>>> adversarial = torch.nn.functional.avg_pool2d(x, 3, 1, 1)    # a stand-in for an attack's outputs, paired with x
>>> noise = torch.randn_like(x)                                # the control: random noise of the same size per input
>>> size = (adversarial - x).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
>>> control = x + noise * size.view(-1, 1, 1, 1)
>>> clean, adv, ctrl = (advflow.information_paths(model, v) for v in (x, adversarial, control))
>>> clean.layers                                               # the default layers: conv + BN + ReLU (+ pool) each
['3', '6']
>>> oip = advflow.aggregate(clean)["oip"]                      # GP aggregate: oip.mean, oip.lower, oip.upper (K,)
>>> shift = advflow.path_shift(adv, clean)                     # standardized paired OIP shift [95 % interval]
>>> beyond = advflow.shift_difference(adv, ctrl, clean)        # the attack's shift minus its control's
>>> advflow.verdict(beyond)                                    # holds: the interval lies above 0
'holds'

Conventions (docs/method.md, "Information flow"): a conv layer's maps are the output of the convolution with the
normalization, activation and pooling that directly follow it, or of a residual block (after its addition);
:func:`default_layers` says which modules they are for a model and warns where it cannot tell (pass ``layers=``
to choose). S^(k) is the MI of each map of layer k with each input channel and T^(k) with each map of the last
measured layer (the target); mu_s^(k) and mu_t^(k) are their means (the input and output information paths, IIP
and OIP). MI is the plug-in estimate over positions with B equal-width buckets per map
(:mod:`advflow.information.mi`), in nats; two maps of different sizes are compared at the smaller size (the larger
one max-pooled down). Shifts and verdicts: docs/method.md, "How a finding is decided".
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from advflow.workflow.io import open_h5
from advflow.information import shifts as _shifts
from advflow.models.layers import LayerChoice, LayerChoiceWarning, capture_maps
from advflow.models.layers import default_layers as _layer_rule
from advflow.information.mi import DEFAULT_BUCKETS, mi_against
from advflow.information.paths import information_paths as _paths_of
from advflow.information.shifts import Interval

if TYPE_CHECKING:
    from advflow.information.aggregate import AggregatedPath

__all__ = ["Paths", "conv_layer_maps", "information_paths", "mutual_information", "default_layers", "LayerChoice",
           "LayerChoiceWarning", "aggregate", "AggregatedPath", "path_shift", "shift_difference", "verdict",
           "Interval", "Features", "read_features", "MIFile", "read_mi", "AdversarialSet", "read_set"]

_log = logging.getLogger(__name__)

#: Fewest inputs a shift's bootstrap interval means something on (as the report's, advflow.report.evidence.MIN_INPUTS).
MIN_INPUTS = 5
PATHS = ("iip", "oip")


def __getattr__(name: str) -> Any:
    # The GP aggregate pulls in GPyTorch: loaded when first used, not with the API.
    if name == "AggregatedPath":
        from advflow.information.aggregate import AggregatedPath

        return AggregatedPath
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_layers(model: nn.Module, x: torch.Tensor | np.ndarray | None = None) -> LayerChoice:
    """Which modules' outputs the API measures as ``model``'s conv layers when not given ``layers=``
    (:mod:`advflow.models.layers`): ``names``, ``module_names``, ``modules``, a ``reasons`` line each, the
    ``warnings`` (also issued as :class:`LayerChoiceWarning`) and ``describe()``. ``x``: an input ``(C, H, W)`` or
    a batch (its first item is traced), in the model's input space; not needed for an advflow ConvNet.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
    ...                       nn.Conv2d(4, 8, 3), nn.ReLU())
    >>> default_layers(model, torch.zeros(1, 1, 12, 12)).names   # each conv's run up to its pool or ReLU
    ['3', '5']
    """
    if x is not None:
        x = _as_input(x, model)
        x = x.unsqueeze(0) if x.dim() == 3 else x
    return _choice(model, x, stacklevel=3)


def _choice(model: nn.Module, x: torch.Tensor | None, stacklevel: int = 4) -> LayerChoice:
    """The default layers, their warnings issued at the API's caller (``stacklevel``: frames up from here)."""
    choice = _layer_rule(model, None if x is None else x[:1], warn=False)
    for text in choice.warnings:
        warnings.warn(LayerChoiceWarning(text), stacklevel=stacklevel)
    return choice


def _chosen(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None
            ) -> tuple[list[tuple[str, nn.Module]], list[str], list[str]]:
    """(layer name, module) of each layer to measure, the modules' names and the choice's warnings; logged."""
    if layers is None:
        choice = _choice(model, x)
        chosen, names, doubts = choice.pairs(), choice.module_names, choice.warnings
    else:
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise ValueError(f"no module named {', '.join(map(repr, unknown))} in {type(model).__name__}; names are "
                             f"those of model.named_modules(), e.g. {', '.join(list(modules)[1:6])}")
        chosen, names, doubts = [(name, modules[name]) for name in layers], list(layers), []
    labels = [name for name, _ in chosen]
    _log.info("measuring layers: %s%s%s", ", ".join(labels),
              f" (modules {', '.join(names)})" if names != labels else "",
              "" if layers is not None else " (default rule)")
    return chosen, names, doubts


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
    the maps; default: :func:`default_layers` (an advflow ConvNet's conv blocks ``conv1``, ``conv2``, ...;
    for any other model each conv with the normalization, activation and pooling after it, and each residual
    block's output), logged at INFO.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> [tuple(m.shape) for m in conv_layer_maps(model, torch.zeros(2, 1, 8, 8), layers=["1"]).values()]
    [(2, 4, 6, 6)]
    """
    x = _as_input(x, model)
    chosen, _, _ = _chosen(model, x, layers)
    return dict(capture_maps(model, x, chosen))


@dataclass(frozen=True)
class Paths:
    """Per-input information paths: ``mu_s``, ``mu_t`` ``(N, K)`` float64 (nats), layer k of ``layers``;
    ``modules``: the names (in ``model.named_modules()``) of the modules measured, and ``warnings``: the
    default choice's doubts (:func:`default_layers`; empty when ``layers=`` was given)."""

    layers: list[str]
    mu_s: np.ndarray
    mu_t: np.ndarray
    modules: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def information_paths(model: nn.Module, x: torch.Tensor | np.ndarray, *, layers: Sequence[str] | None = None,
                      buckets: int = DEFAULT_BUCKETS, batch_size: int = 64) -> Paths:
    """The IIP and OIP of each input of ``x (N, C, H, W)`` (in the model's input space) through
    ``model``'s conv layers (:func:`conv_layer_maps`; the last one is the target), in batches.

    The workflow's MI stage computes the same numbers from stored maps (tests/test_api.py checks it).
    """
    x = _as_input(x, model)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x must be a batch (N, C, H, W) with N >= 1; got shape {tuple(x.shape)}")
    chosen, modules, doubts = _chosen(model, x, layers)
    names, mu_s, mu_t = None, [], []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        maps = capture_maps(model, batch, chosen)
        names = list(maps)
        stacks = [m.float() for m in maps.values()]
        s, t = _paths_of(mi_against(stacks, batch.float(), buckets), mi_against(stacks, stacks[-1], buckets))
        mu_s.append(s.double().cpu().numpy())
        mu_t.append(t.double().cpu().numpy())
    order = {label: module for (label, _), module in zip(chosen, modules)}
    return Paths(names or [], np.concatenate(mu_s), np.concatenate(mu_t), [order[n] for n in names or []],
                 list(doubts))


# ---------------------------------------------------------------------------------------------------------
# Aggregates, shifts and verdicts (docs/method.md, "Aggregated paths" and "How a finding is decided")


def _mu(paths: Any, path: str, what: str) -> np.ndarray:
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}; got {path!r}")
    mu = getattr(paths, "mu_s" if path == "iip" else "mu_t", None)
    if mu is None:
        raise TypeError(f"{what} must be paths with mu_s and mu_t (N, K) (advflow.information_paths); got "
                        f"{type(paths).__name__}")
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] == 0 or mu.shape[1] == 0:
        raise ValueError(f"{what}: paths must have shape (N, K) with N, K >= 1; got {mu.shape}")
    return mu


def aggregate(paths: Any, *, seed: int = 0, grid_step: float = 0.05) -> dict[str, AggregatedPath]:
    """The GP aggregates of a set's paths (docs/method.md, "Aggregated paths"), as the workflow's aggregate stage
    fits them (:func:`advflow.information.aggregate.aggregate_frame`, layers numbered 1 ... K): ``{"iip": ...,
    "oip": ...}``, each an ``AggregatedPath`` with ``layers``, ``mean``, ``lower``, ``upper`` (the 95 % band of
    the aggregated path) and the same on a fine ``grid``. ``paths``: a :class:`Paths` (or anything with
    ``mu_s``, ``mu_t`` (N, K), e.g. :func:`advflow.information.paths.read_input_paths`)."""
    from advflow.information.aggregate import aggregate_frame

    mu_s, mu_t = _mu(paths, "iip", "paths"), _mu(paths, "oip", "paths")
    n, k = mu_s.shape
    layers = np.tile(np.arange(1, k + 1, dtype=np.float64), n)
    return aggregate_frame(layers, mu_s.reshape(-1), mu_t.reshape(-1), seed=seed, grid_step=grid_step)


def _deltas(changed: Any, clean: Any, normal: Any, path: str, what: str) -> np.ndarray:
    """(N, K) standardized paired differences of ``changed`` against ``clean`` (the report's
    :func:`advflow.information.shifts.standardized` over :func:`~advflow.information.shifts.layer_scale`)."""
    a, c = _mu(changed, path, what), _mu(clean, path, "clean")
    if a.shape != c.shape:
        raise ValueError(f"{what} and clean must be paired: the same inputs, in the same order, through the same "
                         f"layers; got paths of shapes {a.shape} and {c.shape}")
    for other, name in ((changed, what), (normal, "normal")):
        theirs, ours = getattr(other, "layers", None), getattr(clean, "layers", None)
        if other is not None and theirs is not None and ours is not None and list(theirs) != list(ours):
            raise ValueError(f"{name} and clean went through different layers: {list(theirs)} and {list(ours)}")
    reference = c if normal is None else np.concatenate([_mu(normal, path, "normal"), c])
    if reference.shape[1] != c.shape[1]:
        raise ValueError(f"normal has {reference.shape[1]} layers where clean has {c.shape[1]}")
    scale = _shifts.layer_scale(reference)
    if not np.isfinite(scale).any():
        warnings.warn(f"the {path.upper()} does not vary over the normal inputs at any layer (no information): its "
                      f"shift is NaN and every verdict on it inconclusive", UserWarning, stacklevel=3)
    return _shifts.standardized(a, c, scale)


def _few(n: int) -> None:
    if n < MIN_INPUTS:
        warnings.warn(f"{n} paired input(s): with fewer than {MIN_INPUTS}, a bootstrap interval means little (the "
                      f"report calls such a case 'premise not met')", UserWarning, stacklevel=3)


def path_shift(adversarial: Any, clean: Any, normal: Any = None, *, path: str = "oip", resamples: int = 1000,
               seed: int = 0) -> Interval:
    """The standardized paired shift of ``adversarial``'s paths from ``clean``'s (each input against its own
    seed: the same inputs in the same order), with its 95 % paired-bootstrap interval, as the report computes it
    (docs/method.md, "How a finding is decided"): (1/K') sum_k |mean_i (mu_k(adv_i) - mu_k(clean_i)) / sigma_k|,
    sigma_k the spread of mu_k over the normal inputs, ``normal`` (e.g. clean training inputs) together with
    ``clean`` (``clean`` alone when ``normal`` is None), layers without spread left out. ``path``: "oip" or
    "iip". Returns an ``Interval`` (``estimate``, ``lower``, ``upper``, ``text()``), in normal spreads."""
    deltas = _deltas(adversarial, clean, normal, path, "adversarial")
    _few(len(deltas))
    return _shifts.paired_bootstrap(lambda i: {"shift": _shifts.shift(deltas[i])}, len(deltas),
                                    resamples=resamples, seed=seed)["shift"]


def shift_difference(a: Any, b: Any, clean: Any, normal: Any = None, *, path: str = "oip", path_b: str | None = None,
                     resamples: int = 1000, seed: int = 0) -> Interval:
    """The shift of ``a`` minus the shift of ``b`` (each as :func:`path_shift`, both paired with ``clean``) with
    its 95 % interval from one paired bootstrap (one resample of the inputs serves both, which keeps the
    pairing). An attack against its random control: ``shift_difference(adversarial, control, clean)``; OIP
    against IIP: ``shift_difference(adversarial, adversarial, clean, path="oip", path_b="iip")``. The claim
    "a shifts more than b" is :func:`verdict` of it."""
    deltas_a = _deltas(a, clean, normal, path, "a")
    deltas_b = _deltas(b, clean, normal, path_b or path, "b")
    _few(len(deltas_a))
    return _shifts.paired_bootstrap(
        lambda i: {"difference": _shifts.shift(deltas_a[i]) - _shifts.shift(deltas_b[i])}, len(deltas_a),
        resamples=resamples, seed=seed)["difference"]


def verdict(interval: Interval, *more: Interval) -> str:
    """The verdict on the claim "the quantity is > 0" (docs/method.md, "How a finding is decided"): "holds" when
    the interval lies above 0, "fails" when below, "inconclusive" when it contains 0 (or is not finite). Several
    intervals: a claim of parts, which holds when every part holds and fails when any fails.

    >>> verdict(Interval(0.4, 0.1, 0.7)), verdict(Interval(0.1, -0.2, 0.4)), verdict(Interval(-0.3, -0.5, -0.1))
    ('holds', 'inconclusive', 'fails')
    """
    for item in (interval, *more):
        if not isinstance(item, Interval):
            raise TypeError(f"verdict takes Interval(s) (path_shift, shift_difference); got {type(item).__name__}")
    if not more:
        return _shifts.decide(interval)
    return _shifts.combine([_shifts.decide(i) for i in (interval, *more)])


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
