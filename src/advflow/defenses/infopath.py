"""The information-path detector (docs/method.md, "Defenses and detectors", "Information-path detector"): an input is
suspicious when its IIP and OIP values lie far from those of clean inputs, layer by layer.

**Values.** For every input, each conv layer k's ``mu_s^(k)`` (IIP) and ``mu_t^(k)`` (OIP), computed exactly as
:func:`advflow.information_paths` computes them (the same hooks, the library's own bucketized MI,
:func:`advflow.information.mi.mi_against`, and layer means, :func:`advflow.information.paths.information_paths`, in
batches; a test checks the two agree column by column): :func:`path_values`, ``(N, 2K)`` with the columns
:func:`value_names` (``iip_conv1, oip_conv1, iip_conv2, ...``). The API itself is a floor above the defenses
(tests/test_layout.py), so the forward hooks are repeated here.

**Per-value tails** (:class:`TailCombiner`, pure NumPy). Fitted on clean training inputs only: per value column the
clean values (at most ``max_reference`` rows, evenly spaced over the fitted rows) are the reference, and an input's
value v gets the conformal two-sided tail probability

    p = min(1, 2 · min(#{ref <= v} + 1, #{ref >= v} + 1) / (R + 1)),

valid (P(p <= a) <= a for a clean input exchangeable with the reference), never 0 (at least 2 / (R + 1)) and
two-sided, since an attack may raise one layer's information and lower another's. A column that is constant on the
clean inputs (e.g. the OIP when the target maps are 1x1, where every MI is 0) carries no information: it gets p = 1
and is reported in ``informative``.

**Combining the layers.** The brief named Fisher's method, ``-2 Σ log p``, "or a better-founded rule justified
with a test". Fisher's sum is powerful when many layers shift a little, but one strongly shifted layer is diluted by
the 2K − 1 others, and correlated layers (adjacent layers' paths move together) inflate the sum's spread on clean
inputs, diluting it further; the minimum p (Tippett) is the reverse: best for a shift in one layer, weak for a
diffuse one. Our default, ``rule="omnibus"``, takes both: each statistic is calibrated against its own distribution
on the clean reference rows (leave-one-out tails, so a clean reference row is scored as a fresh clean input would
be) and the score is ``-log min(p_Fisher, p_Tippett)``. On synthetic values (``tests/test_infopath.py``,
``test_the_omnibus_rule_is_near_the_better_of_fisher_and_tippett``) it stays within a few hundredths of AUC of the
better of the two in each scenario (at most 0.04 below it over 30 seeds), where Fisher alone loses about 0.15 (one
layer shifted by 3 sd among 10 correlated ones) and Tippett alone about 0.13 (0.8 sd in each of 30 independent
layers). ``rule="fisher"`` and ``rule="tippett"`` remain
for comparison. Neither the χ² null of Fisher's sum (wrong under correlated layers) nor the Bonferroni null of the
minimum is ever used: the threshold is the clean **validation** scores' quantile (:func:`advflow.defenses.threshold`),
so only the ranking the score gives matters, and it is calibrated whatever the layers' dependence (tested).

**The adaptive surrogate** (:meth:`InfoPathDetector.differentiable_score`, what an adaptive attacker descends; its
docstring gives the choices and the measurements behind them). The bucketized MI has no useful gradient, so each
value keeps its real (bucketized) number but takes the gradient of its soft-histogram counterpart
(:mod:`advflow.information.soft_mi`; BPDA), and the tails and their combination are smoothed with logistic kernels,
without the conformal floor, so that an input beyond the clean range still has a direction back.
:func:`surrogate_agreement` gives the surrogate's correlation with the real score on any inputs.

**Per-layer view.** :meth:`InfoPathDetector.layer_scores` gives each value's ``-2 log p``; :func:`layer_separation`
gives each value column's ROC AUC of clean against adversarial inputs and :func:`layer_separation_figure` draws them
as a heat map, attacks × values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector
from advflow.models.layers import capture_maps, default_layers
from advflow.information.mi import DEFAULT_BUCKETS, mi_against
from advflow.information.paths import information_paths
from advflow.information.soft_mi import DEFAULT_BANDWIDTH, soft_mi_against

PATHS = ("iip", "oip")
RULES = ("omnibus", "fisher", "tippett")
#: Clean rows kept as the reference of the tails (evenly spaced over the fitted rows): the smallest p is 2 / (R + 1).
MAX_REFERENCE = 2000
STATE_FORMAT = "advflow.infopath/1"
STATE_KEYS = ("format", "layers", "buckets", "rule", "fitted_inputs", "reference", "informative", "null_fisher",
              "null_tippett")


def value_names(layers: Sequence[str]) -> list[str]:
    """The names of :func:`path_values`' columns: ``iip_<layer>, oip_<layer>`` for each layer in turn."""
    return [f"{path}_{layer}" for layer in layers for path in PATHS]


# ---------------------------------------------------------------------------------------------------------
# The values: each input's IIP and OIP per conv layer


def _as_input(x: torch.Tensor | np.ndarray, model: nn.Module) -> torch.Tensor:
    """``x`` as a tensor on the model's device in its parameters' floating dtype (values not rescaled)."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is not None:
        return x.detach().to(device=parameter.device, dtype=parameter.dtype)
    return x.detach() if x.is_floating_point() else x.detach().float()


def _chosen(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """(layer name, module) of each layer to measure: ``layers`` (module names) or the default rule's choice."""
    if layers is None:
        return default_layers(model, x[:1]).pairs()
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"no module named {', '.join(map(repr, unknown))} in {type(model).__name__}; names are "
                         f"those of model.named_modules(), e.g. {', '.join(list(modules)[1:6])}")
    return [(name, modules[name]) for name in layers]


def measure(classifier: nn.Module, x: torch.Tensor | np.ndarray, *, layers: Sequence[str] | None = None,
            buckets: int = DEFAULT_BUCKETS, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """(the layers' names, in network order; :func:`path_values`'s ``(N, 2K)`` values)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    x = _as_input(x, classifier)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x must be a batch (N, C, H, W) with N >= 1; got shape {tuple(x.shape)}")
    chosen = _chosen(classifier, x, layers)
    names: list[str] = []
    parts = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        maps = capture_maps(classifier, batch, chosen)
        names = list(maps)
        stacks = [m.float() for m in maps.values()]
        mu_s, mu_t = information_paths(mi_against(stacks, batch.float(), buckets),
                                       mi_against(stacks, stacks[-1], buckets))
        values = torch.stack([mu_s, mu_t], dim=2).flatten(1)  # (n, K, 2) -> iip_1, oip_1, iip_2, ...
        parts.append(values.double().cpu().numpy())
    return names, np.concatenate(parts)


def path_values(classifier: nn.Module, x: torch.Tensor | np.ndarray, *, layers: Sequence[str] | None = None,
                buckets: int = DEFAULT_BUCKETS, batch_size: int = 64) -> np.ndarray:
    """``(N, 2K)`` float64: each input's ``mu_s`` and ``mu_t`` (nats) of each conv layer, columns
    :func:`value_names` (``iip_conv1, oip_conv1, ...``); the numbers of :func:`advflow.information_paths` with the
    same arguments (``layers``: module names; default: :func:`advflow.models.layers.default_layers`, i.e.
    ``conv1 ... convK`` of an advflow ConvNet)."""
    return measure(classifier, x, layers=layers, buckets=buckets, batch_size=batch_size)[1]


# ---------------------------------------------------------------------------------------------------------
# Tails and their combination (pure NumPy)


def _check_values(values: Any, what: str, columns: int | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or (columns is not None and values.shape[1] != columns):
        want = f"(N, {columns})" if columns is not None else "(N, D)"
        raise ValueError(f"{what} must have shape {want}; got {values.shape}")
    if np.isnan(values).any():
        raise ValueError(f"{what}: {int(np.isnan(values).sum())} of {values.size} values are NaN; every value must "
                         f"be a number (check the inputs)")
    return values


def _counts(reference: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, #{ref <= v} and #{ref >= v}; ``reference`` sorted by column."""
    r = reference.shape[0]
    below = np.empty(values.shape, dtype=np.int64)
    above = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        below[:, j] = np.searchsorted(reference[:, j], values[:, j], side="right")
        above[:, j] = r - np.searchsorted(reference[:, j], values[:, j], side="left")
    return below, above


def fisher(tails: np.ndarray) -> np.ndarray:
    """Fisher's statistic of each row of tail probabilities: ``-2 Σ log p`` (p = 1 adds nothing)."""
    return -2.0 * np.log(tails).sum(axis=1)


def tippett(tails: np.ndarray) -> np.ndarray:
    """Tippett's statistic of each row: ``-log min p``."""
    return -np.log(tails.min(axis=1))


def _upper(null: np.ndarray, statistic: np.ndarray) -> np.ndarray:
    """Conformal upper-tail probability of each statistic against the sorted clean ``null``."""
    r = null.size
    return (r - np.searchsorted(null, statistic, side="left") + 1) / (r + 1)


class TailCombiner:
    """Per-column two-sided tail probabilities against clean values, combined into one score (the module's
    docstring: the rule and why). ``max_reference``: clean rows kept (the smallest p is 2 / (R + 1))."""

    def __init__(self, *, rule: str = "omnibus", max_reference: int = MAX_REFERENCE) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
        if isinstance(max_reference, bool) or not isinstance(max_reference, (int, np.integer)) or max_reference < 2:
            raise ValueError(f"max_reference must be an integer >= 2; got {max_reference!r}")
        self.rule, self.max_reference = rule, int(max_reference)
        self.reference: np.ndarray | None = None    # (R, D), each column sorted
        self.informative: np.ndarray | None = None  # (D,) bool
        self.null_fisher: np.ndarray | None = None  # (R,) sorted: the statistics of the clean reference rows
        self.null_tippett: np.ndarray | None = None
        self.fitted_inputs = 0

    @property
    def fitted(self) -> bool:
        return self.reference is not None

    def fit(self, values: Any) -> TailCombiner:
        """Fit on clean values ``(M, D)``, M >= 2: the reference rows (at most ``max_reference``, evenly spaced),
        which columns vary, and the null distributions of Fisher's and Tippett's statistics (each reference row's
        leave-one-out tails)."""
        values = _check_values(values, "clean values")
        m, d = values.shape
        if m < 2 or d < 1:
            raise ValueError(f"fitting needs at least 2 clean inputs and 1 value column; got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"clean values: {int((~np.isfinite(values)).sum())} are infinite; fit on finite values")
        spread = values.max(axis=0) - values.min(axis=0)
        informative = spread > 1e-12 * np.maximum(1.0, np.abs(values).max(axis=0))
        if not informative.any():
            raise ValueError(f"every one of the {d} value columns is constant on the {m} clean inputs: there is "
                             f"nothing to score an input by (check the layers and the number of buckets)")
        rows = values if m <= self.max_reference else \
            values[np.round(np.linspace(0, m - 1, self.max_reference)).astype(np.int64)]
        reference = np.sort(rows, axis=0)
        r = reference.shape[0]
        below, above = _counts(reference, rows)  # each row counted itself: leave-one-out p = 2 min(...) / R
        loo = np.where(informative, np.minimum(1.0, 2.0 * np.minimum(below, above) / r), 1.0)
        self.reference, self.informative, self.fitted_inputs = reference, informative, m
        self.null_fisher, self.null_tippett = np.sort(fisher(loo)), np.sort(tippett(loo))
        return self

    def _need(self) -> np.ndarray:
        if self.reference is None:
            raise RuntimeError("the tail combiner is not fitted: call fit(clean_values) first")
        return self.reference

    def tails(self, values: Any) -> np.ndarray:
        """``(N, D)`` two-sided tail probabilities in (0, 1] of ``values (N, D)`` (1 in the uninformative columns)."""
        reference = self._need()
        values = _check_values(values, "values", reference.shape[1])
        below, above = _counts(reference, values)
        p = np.minimum(1.0, 2.0 * np.minimum(below + 1, above + 1) / (reference.shape[0] + 1))
        return np.where(self.informative, p, 1.0)

    def combine(self, tails: Any) -> np.ndarray:
        """``(N,)`` scores of rows of tail probabilities, higher = more suspicious, by ``rule``: ``omnibus``
        ``-log min(p_Fisher, p_Tippett)``, each statistic's p against its clean null; ``fisher`` ``-2 Σ log p``;
        ``tippett`` ``-log min p``."""
        self._need()
        tails = _check_values(tails, "tails", self.reference.shape[1])
        if ((tails <= 0) | (tails > 1)).any():
            raise ValueError("tails must be probabilities in (0, 1] (TailCombiner.tails)")
        if self.rule == "fisher":
            return fisher(tails)
        if self.rule == "tippett":
            return tippett(tails)
        return -np.log(np.minimum(_upper(self.null_fisher, fisher(tails)), _upper(self.null_tippett, tippett(tails))))

    def score(self, values: Any) -> np.ndarray:
        """``combine(tails(values))``."""
        return self.combine(self.tails(values))

    def state(self) -> dict[str, Any]:
        """The fitted arrays and settings (NumPy arrays; :class:`InfoPathDetector` stores them as tensors)."""
        self._need()
        return {"rule": self.rule, "fitted_inputs": self.fitted_inputs, "reference": self.reference,
                "informative": self.informative, "null_fisher": self.null_fisher, "null_tippett": self.null_tippett}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`'s result (arrays or tensors), checked for shape."""
        def array(key: str, dtype: Any) -> np.ndarray:
            value = state[key]
            value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            return value.astype(dtype)

        rule = state["rule"]
        if rule not in RULES:
            raise ValueError(f"an infopath state's rule must be one of {', '.join(RULES)}; got {rule!r}")
        reference, informative = array("reference", np.float64), array("informative", bool)
        nulls = array("null_fisher", np.float64), array("null_tippett", np.float64)
        if reference.ndim != 2 or reference.shape[0] < 2 or informative.shape != (reference.shape[1],) or \
                any(null.shape != (reference.shape[0],) for null in nulls):
            raise ValueError(f"an infopath state's arrays do not fit together: reference {reference.shape}, "
                             f"informative {informative.shape}, nulls {[n.shape for n in nulls]} (want (R, D), (D,), "
                             f"(R,), (R,) with R >= 2)")
        self.rule, self.fitted_inputs = rule, int(state["fitted_inputs"])
        self.reference, self.informative = reference, informative
        self.null_fisher, self.null_tippett = nulls


# ---------------------------------------------------------------------------------------------------------
# Smooth tails and their combination (torch): the differentiable surrogate's second half


def kernel_scales(columns: np.ndarray) -> np.ndarray:
    """Per column of ``columns (R, D)``, the scale s of a logistic kernel for a smooth estimate of its distribution:
    Silverman's rule, ``0.9 min(sd, IQR / 1.349) R^(-1/5)`` (the sd where the IQR is 0), as the kernel's sd, which
    for a logistic is ``s π / √3``. A constant column gets s = 1 (it is left out of the score anyway)."""
    columns = np.asarray(columns, dtype=np.float64)
    r = columns.shape[0]
    sd = columns.std(axis=0, ddof=1) if r > 1 else np.zeros(columns.shape[1])
    q1, q3 = np.quantile(columns, [0.25, 0.75], axis=0)
    iqr = (q3 - q1) / 1.349
    spread = np.where(iqr > 0, np.minimum(sd, iqr), sd)
    spread = np.where(spread > 0, spread, 1.0)
    return 0.9 * spread * r ** -0.2 * math.sqrt(3.0) / math.pi


def _log_count(centres: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``log sum_i sigmoid((centres - reference_i) / scale)`` per column, computed in log space (so it stays finite
    and keeps its slope, -1/scale, far from the reference): a smooth log #{reference <= value}. ``centres (N, D)``,
    ``reference (R, D)``, ``scale (D,)`` -> ``(N, D)``."""
    z = (centres[:, None, :] - reference[None, :, :]) / scale
    return torch.logsumexp(torch.nn.functional.logsigmoid(z), dim=1)


class SmoothTails:
    """The differentiable counterpart of a fitted :class:`TailCombiner` (:meth:`InfoPathDetector.differentiable_score`
    gives the formulas and why): smooth two-sided tails of each informative value column against the clean reference
    (logistic kernels, no conformal floor) and the combiner's rule on them, each statistic calibrated against its clean
    null by a smooth upper tail; float64 tensors on ``device``."""

    def __init__(self, combiner: TailCombiner, *, device: torch.device | str = "cpu") -> None:
        reference = combiner._need()
        informative = np.asarray(combiner.informative, dtype=bool)
        as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=device)  # noqa: E731
        self.rule = combiner.rule
        self.columns = torch.as_tensor(np.flatnonzero(informative), device=device)
        self.reference = as_tensor(reference[:, informative])
        self.scale = as_tensor(kernel_scales(reference[:, informative]))
        self.size = reference.shape[0]
        nulls = np.stack([combiner.null_fisher, combiner.null_tippett], axis=1)
        self.nulls = as_tensor(nulls)
        self.null_scale = as_tensor(kernel_scales(nulls))

    def log_tails(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, D')`` log of the smooth two-sided tail of each informative value column."""
        v = values[:, self.columns]
        below = _log_count(v, self.reference, self.scale)
        above = _log_count(-v, -self.reference, self.scale)
        return math.log(2.0 / (self.size + 1)) + torch.minimum(below, above)

    @property
    def cap(self) -> float:
        """The real score's largest value under the rule (every tail at its floor 2 / (R + 1); the omnibus
        statistics above their whole null): where the surrogate turns logarithmic (:meth:`score`)."""
        floor = math.log((self.size + 1) / 2.0)
        return {"fisher": 2.0 * floor * len(self.columns), "tippett": floor}.get(self.rule, math.log(self.size + 1))

    def raw(self, values: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the smooth statistic of values ``(N, D)`` (float64), before :meth:`score` compresses it above the
        real score's cap."""
        minus_log = -self.log_tails(values)
        fisher_ = 2.0 * minus_log.sum(dim=1)
        tippett_ = minus_log.amax(dim=1)
        if self.rule == "fisher":
            return fisher_
        if self.rule == "tippett":
            return tippett_
        statistics = torch.stack([fisher_, tippett_], dim=1)
        upper = _log_count(-statistics, -self.nulls, self.null_scale)  # smooth log #{null >= statistic}
        return (math.log(self.size + 1) - upper).amax(dim=1)

    def score(self, values: torch.Tensor) -> torch.Tensor:
        """``(N,)`` :meth:`raw`, continued as ``c + log(1 + t - c)`` above the real score's cap ``c``: the same
        order and, for signed or normalised steps, the same direction, but on the real score's scale where the real
        score is capped (the raw statistic of an input far from the clean values runs to hundreds)."""
        raw, cap = self.raw(values), self.cap
        return torch.where(raw > cap, cap + torch.log1p((raw - cap).clamp(min=0)), raw)


def surrogate_agreement(detector: Detector, x: torch.Tensor | np.ndarray, *, batch_size: int = 64) -> dict[str, Any]:
    """How well ``detector``'s :meth:`~advflow.defenses.Detector.differentiable_score` tracks its real
    :meth:`~advflow.defenses.Detector.score` over the inputs ``x (N, C, H, W)`` (model space): ``pearson`` and
    ``spearman``, the correlations of the two scores (NaN when either is constant or N < 3), ``n`` = N, and
    ``real_tied_at_max``, the share of inputs whose real score equals the largest (a capped score, e.g. the
    information-path detector's ``log(R + 1)`` on inputs far from the clean values, ties there and lowers both
    correlations; on adversarial inputs it may leave little to correlate). The surrogate is computed without
    gradients, ``batch_size`` inputs at a time."""
    from scipy.stats import pearsonr, spearmanr

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.dim() != 4:
        raise ValueError(f"x must be a batch (N, C, H, W); got shape {tuple(x.shape)}")
    real = np.asarray(detector.score(x), dtype=np.float64).ravel()
    with torch.no_grad():
        surrogate = np.concatenate([detector.differentiable_score(x[start:start + batch_size]).detach().double().cpu()
                                    .numpy().ravel() for start in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros(0)
    if real.shape != surrogate.shape:
        raise ValueError(f"{detector.name}: score gave {real.shape} values and differentiable_score {surrogate.shape} "
                         f"for {len(x)} inputs")
    n = int(real.size)
    varies = n >= 3 and np.ptp(real) > 0 and np.ptp(surrogate) > 0 and np.isfinite(surrogate).all()
    return {"pearson": float(pearsonr(surrogate, real)[0]) if varies else math.nan,
            "spearman": float(spearmanr(surrogate, real)[0]) if varies else math.nan,
            "n": n, "real_tied_at_max": float((real == real.max()).mean()) if n else math.nan}


# ---------------------------------------------------------------------------------------------------------
# The detector


#: Channels per layer (and of the last layer, the OIP's reference) whose soft MI gives a value's gradient, drawn
#: at random at every call: an unbiased estimate of the gradient of the layer's mean MI, at a fraction of the cost.
SURROGATE_CHANNELS = 8


def surrogate_wording(bandwidth: float = DEFAULT_BANDWIDTH, channels: int | None = SURROGATE_CHANNELS) -> str:
    """:attr:`InfoPathDetector.adaptive_surrogate` for a soft-histogram ``bandwidth`` (bucket widths) and
    ``channels`` drawn per layer (None: all)."""
    drawn = f", {channels} random channels per layer and of the target per call" if channels else ""
    return (f"BPDA: real bucketized IIP/OIP values with soft-histogram MI gradients (Gaussian-kernel bins, bandwidth "
            f"{bandwidth:g} bucket widths{drawn}); logistic-kernel smooth tails without the conformal floor, Fisher "
            f"and Tippett each calibrated by a smooth clean-null tail, omnibus max")


class InfoPathDetector(Detector):
    """Scores ``(N, C, H, W)`` model-space inputs of ``classifier`` by how far their IIP and OIP values lie from
    the clean training inputs', layer by layer (the module's docstring). ``layers``: module names (default: the
    library's default layers); ``buckets``: of the MI estimate; ``rule``: how the layers' tails combine."""

    name = "infopath"
    adaptive_surrogate = surrogate_wording()

    def __init__(self, classifier: nn.Module, buckets: int = DEFAULT_BUCKETS, layers: Sequence[str] | None = None,
                 batch_size: int = 64, *, rule: str = "omnibus", max_reference: int = MAX_REFERENCE,
                 surrogate_bandwidth: float = DEFAULT_BANDWIDTH,
                 surrogate_channels: int | None = SURROGATE_CHANNELS) -> None:
        if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 2:
            raise ValueError(f"buckets must be an integer >= 2; got {buckets!r}")
        self.classifier, self.buckets, self.batch_size = classifier, int(buckets), batch_size
        self.requested = None if layers is None else [str(name) for name in layers]
        self.combiner = TailCombiner(rule=rule, max_reference=max_reference)
        self.layers: list[str] | None = None  # the measured layers, once fitted
        bandwidth = float(surrogate_bandwidth)
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"surrogate_bandwidth must be a positive number (bucket widths); got "
                             f"{surrogate_bandwidth!r}")
        self.surrogate_bandwidth = bandwidth
        if surrogate_channels is not None and (isinstance(surrogate_channels, bool) or
                                               not isinstance(surrogate_channels, int) or surrogate_channels < 1):
            raise ValueError(f"surrogate_channels must be a positive integer or None (all); got "
                             f"{surrogate_channels!r}")
        self.surrogate_channels = surrogate_channels
        if bandwidth != DEFAULT_BANDWIDTH or surrogate_channels != SURROGATE_CHANNELS:
            self.adaptive_surrogate = surrogate_wording(bandwidth, surrogate_channels)
        self._smooth: SmoothTails | None = None  # built from the fitted combiner on first use

    @property
    def value_names(self) -> list[str]:
        if self.layers is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(x_clean_train) first")
        return value_names(self.layers)

    @property
    def informative(self) -> np.ndarray:
        """``(2K,)`` bool: the value columns that vary on the clean training inputs (the others are left out)."""
        self.value_names  # noqa: B018  (raises when not fitted)
        return self.combiner.informative.copy()

    def _measure(self, x: torch.Tensor | np.ndarray) -> tuple[list[str], np.ndarray]:
        return measure(self.classifier, x, layers=self.requested, buckets=self.buckets, batch_size=self.batch_size)

    def fit(self, x_clean_train: torch.Tensor | np.ndarray) -> InfoPathDetector:
        """Fit on clean training inputs only."""
        names, values = self._measure(x_clean_train)
        self.combiner.fit(values)
        self.layers, self._smooth = names, None
        return self

    def layer_values(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(N, 2K)``: each input's IIP and OIP values, columns :attr:`value_names`."""
        expected = self.value_names
        names, values = self._measure(x)
        if value_names(names) != expected:
            raise ValueError(f"{self.name}: the classifier's measured layers ({', '.join(names)}) are not those it was "
                             f"fitted on ({', '.join(self.layers)}); refit the detector for this classifier")
        return values

    def layer_scores(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(N, 2K)``: each value's ``-2 log p`` (0 in the uninformative columns): the per-layer view."""
        return -2.0 * np.log(self.combiner.tails(self.layer_values(x)))

    def score(self, x: torch.Tensor) -> np.ndarray:
        return self.combiner.score(self.layer_values(x))

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the surrogate of :meth:`score` an adaptive attacker descends (:attr:`adaptive_surrogate`),
        differentiable with respect to ``x`` (model space), on the classifier's device, in ``x``'s float dtype.

        **Values: the real ones, with soft-histogram gradients.** Each informative IIP/OIP value is
        ``v + (ṽ - stop_grad(ṽ))``: its value is the real bucketized one ``v`` (:meth:`layer_values`) and its gradient
        that of the soft-histogram value ``ṽ`` (:func:`advflow.information.soft_mi.soft_mi_against`, Gaussian-kernel
        bins of ``surrogate_bandwidth`` bucket widths, on maps captured with their graph,
        :func:`~advflow.models.layers.capture_maps` with ``grad=True``): Athalye et al.'s (2018) BPDA, the standard way to attack a
        non-differentiable step. Why not the soft values themselves: at a bandwidth wide enough to give every
        pixel a gradient, blurring the bins lowers the MI of the first layers by one to two clean standard deviations
        (-1.7, -1.0, -1.2 sd at 0.25 bucket widths on the test model; still -0.3 sd at 0.1), so soft values compared
        with the real clean reference rank inputs wrongly (Spearman 0.0 with the real score at 0.25, -0.6 at 0.5,
        against 0.97 here); a soft reference would have to be measured on the clean inputs at fit time and stored.
        The bandwidth, 0.25: the MI depends on a value only through its bucket, so at a small bandwidth h only values
        within a few ``h^2`` bucket widths of an edge get a gradient (and the range's extremes); at 0.25 a value at a
        bin centre gives its neighbours ``exp(-1/(2 h^2)) ≈ e^-8`` of its weight and one near an edge a large share.
        On the test model, 20 signed-gradient steps (0.01 each, L∞ 0.3) from the 16 most suspicious of clean and
        noisy inputs take the mean real score from its cap 5.3 to 0.6-0.8 at 0.25, to 1.1-1.3 at 0.5, 2.8-3.9 at
        0.1, 3.7 at 0.05 and 4.7 at 1.0, the same as random steps (``tests/test_infopath_surrogate.py``).

        **Smooth tails** (:class:`SmoothTails`). Per informative column with clean reference values ``r_1..r_R``, a
        value's smooth counts ``#{r <= v} ≈ Σ σ((v - r_i)/s)`` and ``#{r >= v} ≈ Σ σ((r_i - v)/s)`` (logistic
        kernels, ``s`` Silverman's rule on the reference, :func:`kernel_scales`) give the tail
        ``p̃ = 2 min(counts) / (R + 1)``: the conformal tail :meth:`TailCombiner.tails` smoothed, without its ``+1``.
        The ``+1`` floors the real tail at ``2 / (R + 1)`` beyond the clean range, where the real score sits at its
        cap; kept, it would leave an attacker who starts out there without a direction. Without it the log tail,
        computed in log space, keeps falling linearly (slope ``-1/s``) beyond the range, so the surrogate keeps
        pointing back to the clean values. Within the range the two differ by about ``log((m + 1) / m)`` (``m`` the
        smaller count): little where a threshold lies.

        **Smooth combination.** The same rule as :meth:`score`: Fisher's ``-2 Σ log p̃`` and Tippett's
        ``-log min p̃`` (a hard maximum over columns: piecewise smooth like a max-margin loss, and a soft maximum would
        shift the statistic away from the null it is calibrated against), each calibrated against its clean null
        (:attr:`TailCombiner.null_fisher`, ``null_tippett``) by the same kernel-smoothed upper tail, again without the
        floor, and the omnibus score ``-log min`` of the two. Keeping the omnibus rule rather than Fisher alone or
        Tippett alone keeps the surrogate on the real score's scale (its threshold is the real score's) and makes it
        rank inputs as the real score does (Spearman 0.96-0.97, Pearson 0.9 on clean and noisy inputs of the test
        model).
        Beyond the clean range the real score is capped at ``log(R + 1)`` and the surrogate is not, on purpose: above
        that cap it grows like the log of its excess (:meth:`SmoothTails.score`), so it still orders far-out inputs
        and still has a gradient. The real score also jumps to its cap as soon as one value reaches the clean range's
        extreme (Tippett's null has ties at its top), where the surrogate rises smoothly: the largest disagreements
        are there (:func:`surrogate_agreement` measures the agreement)."""
        values = self._surrogate_values(x)
        if self._smooth is None or self._smooth.reference.device != values.device:
            self._smooth = SmoothTails(self.combiner, device=values.device)
        return self._smooth.score(values.double()).to(x.dtype if x.is_floating_point() else torch.float32)

    def soft_values(self, x: torch.Tensor, columns: Sequence[int] | None = None, *,
                    channels: int | None = None) -> torch.Tensor:
        """``(N, 2K)`` the soft-histogram IIP and OIP values of ``x`` (columns :attr:`value_names`; ``columns``: only
        those, the others 0), differentiable with respect to ``x``: :func:`advflow.information.soft_mi.soft_mi_against`
        at ``surrogate_bandwidth`` in place of the bucketized MI. ``channels``: each value from that many channels of
        its layer drawn at random (torch's generator), the OIP's against that many channels of the last layer (the
        mean over a random sub-matrix of the layer's MI matrix: an unbiased estimate of the layer's value); None: all."""
        expected = self.value_names
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        parameter = next((p for p in self.classifier.parameters() if p.is_floating_point()), None)
        if parameter is not None:
            x = x.to(device=parameter.device, dtype=parameter.dtype)
        elif not x.is_floating_point():
            x = x.float()
        if x.dim() != 4 or len(x) == 0:
            raise ValueError(f"x must be a batch (N, C, H, W) with N >= 1; got shape {tuple(x.shape)}")
        maps = capture_maps(self.classifier, x, _chosen(self.classifier, x.detach(), self.requested), grad=True)
        if value_names(list(maps)) != expected:
            raise ValueError(f"{self.name}: the classifier's measured layers ({', '.join(maps)}) are not those it was "
                             f"fitted on ({', '.join(self.layers)}); refit the detector for this classifier")
        wanted = set(range(len(expected))) if columns is None else {int(j) for j in columns}
        stacks = list(maps.values())

        def drawn(maps: torch.Tensor) -> torch.Tensor:
            if channels is None or maps.shape[1] <= channels:
                return maps
            return maps[:, torch.randperm(maps.shape[1])[:channels].to(maps.device)]

        out: list[torch.Tensor | None] = [None] * len(expected)
        for p, reference in enumerate((x, drawn(stacks[-1]))):  # IIP against the input, OIP against the last layer
            layers = [k for k in range(len(stacks)) if 2 * k + p in wanted]
            if not layers:
                continue
            matrices = soft_mi_against([drawn(stacks[k]) for k in layers], reference, self.buckets,
                                       bandwidth=self.surrogate_bandwidth)
            for k, matrix in zip(layers, matrices):
                out[2 * k + p] = matrix.mean(dim=(1, 2))
        zeros = x.new_zeros(len(x))
        return torch.stack([zeros if value is None else value for value in out], dim=1)

    def _surrogate_values(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 2K)``: the real values with the soft values' gradient (BPDA; :meth:`differentiable_score`), in the
        informative columns (the others are left out of the score)."""
        columns = np.flatnonzero(self.informative)
        soft = self.soft_values(x, columns, channels=self.surrogate_channels)
        real = torch.as_tensor(self.layer_values(x.detach()), dtype=soft.dtype, device=soft.device)
        return real + (soft - soft.detach())

    def scores_and_layers(self, x: torch.Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
        """:meth:`score` and the per-layer values it was computed from (names, ``(N, 2K)``), measured once: the
        scoring jobs store both (the per-layer view and the supervised combination read the values)."""
        values = self.layer_values(x)
        return self.combiner.score(values), self.value_names, values

    def state_dict(self) -> dict[str, Any]:
        if self.layers is None:
            raise RuntimeError(f"{self.name} is not fitted: there is no state to save")
        state = self.combiner.state()
        return {"format": STATE_FORMAT, "layers": list(self.layers), "buckets": self.buckets, "rule": state["rule"],
                "fitted_inputs": int(state["fitted_inputs"]),
                "reference": torch.from_numpy(state["reference"].copy()),
                "informative": torch.from_numpy(state["informative"].copy()),
                "null_fisher": torch.from_numpy(state["null_fisher"].copy()),
                "null_tippett": torch.from_numpy(state["null_tippett"].copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise ValueError(f"an {self.name} state is a dict with keys {', '.join(STATE_KEYS)}; got "
                             f"{type(state).__name__}")
        missing = [key for key in STATE_KEYS if key not in state]
        unexpected = sorted(str(key) for key in state if key not in STATE_KEYS)
        if missing or unexpected:
            raise ValueError(f"not an {self.name} state: " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"unexpected {', '.join(unexpected)}" if unexpected else "") if part)
                + f" (an {self.name} state holds {', '.join(STATE_KEYS)})")
        if state["format"] != STATE_FORMAT:
            raise ValueError(f"an {self.name} state has format {STATE_FORMAT!r}; got {state['format']!r}")
        layers = [str(name) for name in state["layers"]]
        if int(state["buckets"]) != self.buckets:
            raise ValueError(f"the {self.name} state was fitted with {int(state['buckets'])} buckets, this detector "
                             f"measures with {self.buckets}; use the same buckets or refit")
        if self.requested is not None and layers != self.requested:
            raise ValueError(f"the {self.name} state was fitted on layers {', '.join(layers)}, this detector measures "
                             f"{', '.join(self.requested)}; use the same layers or refit")
        shape = tuple(np.shape(state["reference"]))
        if len(shape) != 2 or shape[1] != 2 * len(layers):
            raise ValueError(f"an {self.name} state's reference must have 2 columns per layer ({2 * len(layers)}); "
                             f"got shape {shape}")
        combiner = TailCombiner(rule=state["rule"], max_reference=self.combiner.max_reference)
        combiner.load_state(state)
        self.combiner, self.layers, self._smooth = combiner, layers, None
