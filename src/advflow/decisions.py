"""The paper's five findings decided by statistics (SPEC, "How a finding is decided").

Each question's claim is restated as differences of paired, standardized shifts (:mod:`advflow.shifts`),
each with a 95 % paired-bootstrap interval, beside the random-perturbation control of every attack
(:mod:`advflow.controls`):

=====  =========================================================================================================
 Q     claim, per case, and what decides it
=====  =========================================================================================================
 Q1    JSMA's crafting moves the OIP away from the seed's: over the trajectories that end in a successful
       adversarial input, the OIP shift of the last step exceeds that of the control trajectory (random pixels
       moved by theta, as many steps)
 Q2    per attack on good_init (its successful inputs): the OIP shift exceeds the IIP shift, and exceeds the
       OIP shift of the attack's random control
 Q3    per attack (paper, Table V): the gap between the sets targeting the inference model and the other model
       (inputs successful on both targets) is larger on compressed than on good_init (OIP)
 Q4    on distilled (all attacked inputs, as the paper): the adaptive JSMA's OIP shift exceeds the regular
       JSMA's; and at matched perturbation size: its excess over its own control exceeds the regular one's
 Q5    per attack and inference model M: the set targeting M shifts M's OIP more than the set targeting another
       model (paired, inputs successful on both targets); transferable inputs shift further than
       non-transferable ones (two independent groups)
=====  =========================================================================================================

A case is **holds**, **fails** or **inconclusive** by its interval(s); a case whose premise is not met on this
run (too few successful inputs, a control identical to its seeds, no layer with information) says so instead.
Every function reads per-input paths through an :class:`Evidence`, which also gives the paths of the other
estimator (with or without the MI bias correction) for the sensitivity table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advflow import shifts
from advflow.catalog import CONTROL_PREFIX, CONTROL_TRAJECTORY
from advflow.io import open_h5
from advflow.shifts import FAILS, HOLDS, INCONCLUSIVE, Interval

PREMISE = "premise not met"
NO_INFORMATION = "no information"
#: Fewest inputs (or trajectories) a bootstrap is run on: fewer give intervals too narrow to mean anything.
MIN_INPUTS = 5
#: The regular JSMA "fails to generate any successful adversarial inputs" on the distilled model (paper, Q4);
#: a success rate at or below this counts as that premise met.
Q4_PREMISE_SUCCESS = 0.05
NORMAL, NORMAL_TRAIN = "normal_test", "normal_train"


def control_set(set_name: str) -> str:
    return CONTROL_PREFIX + set_name


@dataclass
class Case:
    """One case of a question (an attack, a model pair, ...), its verdict and the intervals behind it."""

    question: str
    case: str
    verdict: str
    inputs: int
    intervals: dict[str, Interval] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)  # interval name -> verdict of "it is > 0"
    notes: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)


class Evidence:
    """Per-input paths of a run, standardized against the normal inputs, for one estimator variant.

    ``results`` must offer ``input_paths(model, set)`` (``mu_s``, ``mu_t`` (N, K), ``label``, ``prediction`` and
    optional ``bias_s``, ``bias_t``) and ``files.root`` (``results/{dataset}``). ``toggled`` gives the other
    estimator than the run's (``corrected`` says which the run's is): mu + bias when the run subtracted it,
    mu - bias when it did not.
    """

    def __init__(self, results: Any, *, resamples: int, seed: int, corrected: bool = False,
                 toggled: bool = False) -> None:
        self.results, self.resamples, self.seed = results, int(resamples), int(seed)
        self.corrected, self.toggled = bool(corrected), bool(toggled)
        self._scales: dict[tuple[str, str], np.ndarray] = {}
        self._success: dict[tuple[str, str], np.ndarray] = {}

    def mu(self, model: str, set_: str, path: str) -> np.ndarray:
        paths = self.results.input_paths(model, set_)
        mu = paths.mu_s if path == "iip" else paths.mu_t
        if not self.toggled:
            return mu
        bias = getattr(paths, "bias_s" if path == "iip" else "bias_t", None)
        if bias is None:
            raise LookupError(f"paths of {set_} on {model} have no bias columns (mu_s_bias, mu_t_bias); rerun the "
                              f"mi rule")
        return mu + bias if self.corrected else mu - bias

    def scale(self, model: str, path: str) -> np.ndarray:
        """sigma_k of the path over the normal inputs (normal_train and the seeds) on ``model``."""
        if (model, path) not in self._scales:  # every delta on the model divides by it
            normal = np.concatenate([self.mu(model, NORMAL_TRAIN, path), self.mu(model, NORMAL, path)])
            self._scales[(model, path)] = shifts.layer_scale(normal)
        return self._scales[(model, path)]

    def deltas(self, model: str, set_: str, reference: str, path: str) -> np.ndarray:
        """(N, K) standardized paired differences of ``set_`` against ``reference`` on ``model``."""
        a, b = self.mu(model, set_, path), self.mu(model, reference, path)
        if a.shape != b.shape:
            raise ValueError(f"{set_} and {reference} on {model} have paths of shapes {a.shape} and {b.shape}; "
                             f"paired sets must hold the same inputs")
        return shifts.standardized(a, b, self.scale(model, path))

    def bootstrap(self, statistics: Callable[[np.ndarray], dict[str, float]], n: int) -> dict[str, Interval]:
        return shifts.paired_bootstrap(statistics, n, resamples=self.resamples, seed=self.seed)

    def set_file(self, target: str, attack: str) -> Path:
        return Path(self.results.files.root) / "adv" / target / f"{attack}.h5"

    def set_record(self, target: str, attack: str, *keys: str) -> dict[str, np.ndarray]:
        path = self.set_file(target, attack)
        with open_h5(path) as h5:
            return {key: h5[key][:] for key in keys}

    def success(self, target: str, attack: str) -> np.ndarray:
        if (target, attack) not in self._success:  # Q3 and Q5 ask for each set's mask many times
            self._success[(target, attack)] = self.set_record(target, attack, "success")["success"].astype(bool)
        return self._success[(target, attack)]


def _no_information(evidence: Evidence, model: str, path: str) -> bool:
    return not np.isfinite(evidence.scale(model, path)).any()


def _decided(case: Case, names: Sequence[str]) -> str:
    for name in names:
        case.claims[name] = shifts.decide(case.intervals[name])
    return shifts.combine([case.claims[n] for n in names])


def _premise(question: str, case: str, inputs: int, why: str) -> Case:
    return Case(question, case, PREMISE, inputs, notes=[why])


# ---------------------------------------------------------------------------------------------------------
# Q2


def q2_attack(evidence: Evidence, model: str, attack: str) -> Case:
    """Q2 for one attack on ``model``: over its successful inputs, OIP shift > IIP shift and OIP shift > the
    control's OIP shift (both differences' intervals above 0)."""
    set_ = f"{attack}@{model}"
    success = evidence.success(model, attack)
    index = np.flatnonzero(success)
    if index.size < MIN_INPUTS:
        return _premise("q2", attack, int(index.size), f"{index.size} successful adversarial inputs of "
                        f"{success.size}; at least {MIN_INPUTS} are needed")
    if _no_information(evidence, model, "oip"):
        return Case("q2", attack, NO_INFORMATION, int(index.size), notes=[
            f"every normal input has the same OIP on {model} (e.g. 1x1 target maps): the OIP carries no information"])
    oip = evidence.deltas(model, set_, NORMAL, "oip")[index]
    iip = evidence.deltas(model, set_, NORMAL, "iip")[index]
    control = evidence.deltas(model, control_set(set_), NORMAL, "oip")[index]
    control_iip = evidence.deltas(model, control_set(set_), NORMAL, "iip")[index]

    def statistics(i: np.ndarray) -> dict[str, float]:
        o, s, c = shifts.shift(oip[i]), shifts.shift(iip[i]), shifts.shift(control[i])
        return {"oip_shift": o, "iip_shift": s, "control_oip_shift": c, "control_iip_shift": shifts.shift(control_iip[i]),
                "oip_minus_iip": o - s, "oip_minus_control": o - c}

    case = Case("q2", attack, INCONCLUSIVE, int(index.size), evidence.bootstrap(statistics, index.size))
    case.verdict = _decided(case, ["oip_minus_iip", "oip_minus_control"])
    if not np.any(evidence.mu(model, control_set(set_), "oip")[index] != evidence.mu(model, NORMAL, "oip")[index]):
        case.verdict = PREMISE
        case.notes.append("the control set's paths equal the seeds' (no input was perturbed)")
    return case


# ---------------------------------------------------------------------------------------------------------
# Q3


def q3_attack(evidence: Evidence, attack: str, *, original: str = "good_init", compressed: str = "compressed") -> Case:
    """Q3 (Table V as the paper reads it): on each model, the gap between the set targeting it and the set
    targeting the other model; the claim is gap(compressed) > gap(original), on the OIP."""
    on_original, on_compressed = f"{attack}@{original}", f"{attack}@{compressed}"
    success = evidence.success(original, attack) & evidence.success(compressed, attack)
    index = np.flatnonzero(success)
    if index.size < MIN_INPUTS:
        return _premise("q3", attack, int(index.size), f"{index.size} seeds are successful on both {original} and "
                        f"{compressed}; at least {MIN_INPUTS} are needed")
    if _no_information(evidence, original, "oip") or _no_information(evidence, compressed, "oip"):
        return Case("q3", attack, NO_INFORMATION, int(index.size), notes=["the OIP carries no information on a model"])
    gaps = {}
    for path in ("oip", "iip"):
        gaps[(original, path)] = evidence.deltas(original, on_original, on_compressed, path)[index]
        gaps[(compressed, path)] = evidence.deltas(compressed, on_compressed, on_original, path)[index]

    def statistics(i: np.ndarray) -> dict[str, float]:
        out = {}
        for path in ("oip", "iip"):
            a, b = shifts.shift(gaps[(original, path)][i]), shifts.shift(gaps[(compressed, path)][i])
            out.update({f"{path}_gap_{original}": a, f"{path}_gap_{compressed}": b, f"{path}_gap_difference": b - a})
        return out

    case = Case("q3", attack, INCONCLUSIVE, int(index.size), evidence.bootstrap(statistics, index.size))
    case.verdict = _decided(case, ["oip_gap_difference"])
    case.claims["iip_gap_difference"] = shifts.decide(case.intervals["iip_gap_difference"])
    return case


# ---------------------------------------------------------------------------------------------------------
# Q4


def q4_adaptive(evidence: Evidence, *, model: str = "distilled", adaptive: str = "jsma_adaptive",
                regular: str = "jsma_control") -> Case:
    """Q4: over all attacked inputs (successful and failed, as the paper), the adaptive JSMA's OIP shift on the
    distilled model exceeds the regular JSMA's; at matched size, its excess over its random control exceeds
    the regular one's. Records per-input L0 / L2, unchanged inputs and whether the paper's premise (the
    regular JSMA fails everywhere) is met."""
    records = {a: evidence.set_record(model, a, "success", "norms_r/l0", "norms_r/l2") for a in (adaptive, regular)}
    n = records[adaptive]["success"].size
    numbers: dict[str, Any] = {}
    for a, rec in records.items():
        l0, l2 = rec["norms_r/l0"], rec["norms_r/l2"]
        numbers[a] = {"success_rate": float(rec["success"].mean()), "successful": int(rec["success"].sum()),
                      "attacked": int(rec["success"].size), "unchanged": int((l0 == 0).sum()),
                      "l0_mean": float(l0.mean()), "l0_median": float(np.median(l0)), "l2_mean": float(l2.mean()),
                      "l2_median": float(np.median(l2))}
    if n < MIN_INPUTS:
        return _premise("q4", f"{adaptive} vs {regular}", n, f"{n} attacked inputs")
    if _no_information(evidence, model, "oip"):
        return Case("q4", f"{adaptive} vs {regular}", NO_INFORMATION, n, notes=["the OIP carries no information"])
    d = {a: evidence.deltas(model, f"{a}@{model}", NORMAL, "oip") for a in (adaptive, regular)}
    c = {a: evidence.deltas(model, control_set(f"{a}@{model}"), NORMAL, "oip") for a in (adaptive, regular)}

    def statistics(i: np.ndarray) -> dict[str, float]:
        sa, sr = shifts.shift(d[adaptive][i]), shifts.shift(d[regular][i])
        ca, cr = shifts.shift(c[adaptive][i]), shifts.shift(c[regular][i])
        return {"adaptive_oip_shift": sa, "regular_oip_shift": sr, "adaptive_minus_regular": sa - sr,
                "adaptive_control_oip_shift": ca, "regular_control_oip_shift": cr,
                "excess_over_control_difference": (sa - ca) - (sr - cr)}

    case = Case("q4", f"{adaptive} vs {regular}", INCONCLUSIVE, n, evidence.bootstrap(statistics, n),
                numbers=numbers)
    case.verdict = _decided(case, ["adaptive_minus_regular"])
    case.claims["excess_over_control_difference"] = shifts.decide(case.intervals["excess_over_control_difference"])
    regular_rate = numbers[regular]["success_rate"]
    numbers["premise_met"] = regular_rate <= Q4_PREMISE_SUCCESS
    if not numbers["premise_met"]:
        case.notes.append(f"comparison as computed: {case.verdict}")
        case.verdict = PREMISE
        case.notes.append(f"the paper's premise is not met on this run: the regular JSMA succeeds on "
                          f"{100 * regular_rate:.1f} % of the inputs (paper: none); the distilled model here is "
                          f"not the robust model the paper's Q4 starts from")
    return case


# ---------------------------------------------------------------------------------------------------------
# Q5


def q5_itself_vs_other(evidence: Evidence, attack: str, model: str, other: str) -> Case:
    """Q5 (Table IX): on ``model``, the set targeting it shifts the OIP more than the set targeting ``other``
    (paired over the seeds successful on both targets)."""
    own, foreign = f"{attack}@{model}", f"{attack}@{other}"
    label = f"{attack} on {model}: targeting {model} vs {other}"
    index = np.flatnonzero(evidence.success(model, attack) & evidence.success(other, attack))
    if index.size < MIN_INPUTS:
        return _premise("q5", label, int(index.size), f"{index.size} seeds successful on both targets")
    if _no_information(evidence, model, "oip"):
        return Case("q5", label, NO_INFORMATION, int(index.size), notes=["the OIP carries no information"])
    a = evidence.deltas(model, own, NORMAL, "oip")[index]
    b = evidence.deltas(model, foreign, NORMAL, "oip")[index]

    def statistics(i: np.ndarray) -> dict[str, float]:
        sa, sb = shifts.shift(a[i]), shifts.shift(b[i])
        return {"itself_oip_shift": sa, "other_oip_shift": sb, "itself_minus_other": sa - sb}

    case = Case("q5", label, INCONCLUSIVE, int(index.size), evidence.bootstrap(statistics, index.size))
    case.verdict = _decided(case, ["itself_minus_other"])
    return case


def q5_transferable(evidence: Evidence, attack: str, target: str, model: str) -> Case:
    """Q5: among the inputs of ``attack@target`` successful on the target, those ``model`` also misclassifies
    (transferable) shift ``model``'s OIP further than those it classifies correctly."""
    set_ = f"{attack}@{target}"
    label = f"{attack} → {target} on {model}: transferable vs non-transferable"
    success = evidence.success(target, attack)
    paths = evidence.results.input_paths(model, set_)
    fooled = paths.prediction != paths.label
    groups = {"transferable": np.flatnonzero(success & fooled), "non_transferable": np.flatnonzero(success & ~fooled)}
    sizes = {k: int(v.size) for k, v in groups.items()}
    if min(sizes.values()) < MIN_INPUTS:
        case = _premise("q5", label, sum(sizes.values()), f"{sizes['transferable']} transferable and "
                        f"{sizes['non_transferable']} non-transferable inputs; at least {MIN_INPUTS} of each are needed")
        case.numbers = sizes
        return case
    if _no_information(evidence, model, "oip"):
        return Case("q5", label, NO_INFORMATION, sum(sizes.values()), notes=["the OIP carries no information"])
    d = evidence.deltas(model, set_, NORMAL, "oip")
    t, u = d[groups["transferable"]], d[groups["non_transferable"]]
    interval = shifts.two_sample_bootstrap(lambda i, j: shifts.shift(t[i]) - shifts.shift(u[j]), len(t), len(u),
                                           resamples=evidence.resamples, seed=evidence.seed)
    case = Case("q5", label, INCONCLUSIVE, sum(sizes.values()), {"transferable_minus_non_transferable": interval},
                numbers=sizes)
    case.verdict = _decided(case, ["transferable_minus_non_transferable"])
    return case


# ---------------------------------------------------------------------------------------------------------
# Q1


def q1_trajectories(evidence: Evidence, *, model: str = "good_init") -> Case:
    """Q1: over the recorded JSMA trajectories that end in a successful adversarial input, the last step's OIP
    shift from step 0 exceeds that of the control trajectory (random pixels, same number of steps)."""
    jsma_set, control = f"trajectory@{model}", f"{CONTROL_TRAJECTORY}@{model}"
    with open_h5(Path(evidence.results.files.root) / "trajectories" / model / "jsma.h5") as h5:
        success = h5["success"][:].astype(bool)
    ends = {}
    for set_ in (jsma_set, control):
        paths = evidence.results.input_paths(model, set_)
        rows = {}
        for seed in np.unique(paths.seed):
            mine = np.flatnonzero(paths.seed == seed)
            mine = mine[np.argsort(paths.step[mine], kind="stable")]
            rows[int(float(seed))] = (mine[0], mine[-1])
        ends[set_] = (paths, rows)
    recorded = len(ends[jsma_set][1])
    qualifying = [s for s in sorted(ends[jsma_set][1]) if s < success.size and success[s]]
    case_name = f"JSMA trajectories on {model}"
    if len(qualifying) < MIN_INPUTS:
        case = _premise("q1", case_name, len(qualifying), f"{len(qualifying)} of the {recorded} recorded trajectories "
                        f"end in a successful adversarial input; at least {MIN_INPUTS} are needed (raise trajectories.n)")
        case.numbers = {"recorded": recorded, "successful": len(qualifying)}
        return case
    if _no_information(evidence, model, "oip"):
        return Case("q1", case_name, NO_INFORMATION, len(qualifying), notes=["the OIP carries no information"])
    scale = {p: evidence.scale(model, p) for p in ("oip", "iip")}
    deltas = {}
    for set_ in (jsma_set, control):
        paths, rows = ends[set_]
        for p in ("oip", "iip"):
            mu = evidence.mu(model, set_, p)
            first = np.array([rows[s][0] for s in qualifying])
            last = np.array([rows[s][1] for s in qualifying])
            deltas[(set_, p)] = shifts.standardized(mu[last], mu[first], scale[p])

    def statistics(i: np.ndarray) -> dict[str, float]:
        out = {}
        for p in ("oip", "iip"):
            a, c = shifts.shift(deltas[(jsma_set, p)][i]), shifts.shift(deltas[(control, p)][i])
            out.update({f"{p}_shift": a, f"control_{p}_shift": c, f"{p}_minus_control": a - c})
        return out

    case = Case("q1", case_name, INCONCLUSIVE, len(qualifying), evidence.bootstrap(statistics, len(qualifying)),
                numbers={"recorded": recorded, "successful": len(qualifying)})
    case.verdict = _decided(case, ["oip_minus_control"])
    case.claims["iip_minus_control"] = shifts.decide(case.intervals["iip_minus_control"])
    return case


# ---------------------------------------------------------------------------------------------------------
# A question's verdict from its cases


def overall(cases: Sequence[Case]) -> str:
    """holds (every case holds), holds in part (some hold), fails (none holds, some fail), inconclusive (none
    decided), premise not met / no information (no case could be tested)."""
    tested = [c for c in cases if c.verdict in (HOLDS, FAILS, INCONCLUSIVE)]
    if not tested:
        if cases and all(c.verdict == NO_INFORMATION for c in cases):
            return NO_INFORMATION
        return PREMISE if cases else "cannot be checked"
    held = sum(c.verdict == HOLDS for c in tested)
    if held == len(tested) and len(tested) == len(cases):
        return HOLDS
    if held:
        return "holds in part"
    if any(c.verdict == FAILS for c in tested):
        return FAILS
    return INCONCLUSIVE


def interval_rows(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """One row per (case, quantity): estimate and interval, and the verdict where it is a compared difference."""
    rows = []
    for case in cases:
        for name, interval in case.intervals.items():
            rows.append({"question": case.question, "case": case.case, "quantity": name, "inputs": case.inputs,
                         "estimate": interval.estimate, "lower": interval.lower, "upper": interval.upper,
                         "verdict": case.claims.get(name, "")})
        if not case.intervals:
            rows.append({"question": case.question, "case": case.case, "quantity": "", "inputs": case.inputs,
                         "estimate": math.nan, "lower": math.nan, "upper": math.nan, "verdict": case.verdict})
    return rows
