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

**Per-layer view.** :meth:`InfoPathDetector.layer_scores` gives each value's ``-2 log p``; :func:`layer_separation`
gives each value column's ROC AUC of clean against adversarial inputs and :func:`layer_separation_figure` draws them
as a heat map, attacks × values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector
from advflow.information.layers import capture_maps, default_layers
from advflow.information.mi import DEFAULT_BUCKETS, mi_against
from advflow.information.paths import information_paths

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
    same arguments (``layers``: module names; default: :func:`advflow.information.layers.default_layers`, i.e.
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
# The detector


class InfoPathDetector(Detector):
    """Scores ``(N, C, H, W)`` model-space inputs of ``classifier`` by how far their IIP and OIP values lie from
    the clean training inputs', layer by layer (the module's docstring). ``layers``: module names (default: the
    library's default layers); ``buckets``: of the MI estimate; ``rule``: how the layers' tails combine."""

    name = "infopath"

    def __init__(self, classifier: nn.Module, buckets: int = DEFAULT_BUCKETS, layers: Sequence[str] | None = None,
                 batch_size: int = 64, *, rule: str = "omnibus", max_reference: int = MAX_REFERENCE) -> None:
        if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 2:
            raise ValueError(f"buckets must be an integer >= 2; got {buckets!r}")
        self.classifier, self.buckets, self.batch_size = classifier, int(buckets), batch_size
        self.requested = None if layers is None else [str(name) for name in layers]
        self.combiner = TailCombiner(rule=rule, max_reference=max_reference)
        self.layers: list[str] | None = None  # the measured layers, once fitted

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
        self.layers = names
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
        self.combiner, self.layers = combiner, layers
