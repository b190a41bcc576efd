"""The machinery of the statistical findings (docs/method.md, "How a finding is decided").

Each question's claim is restated as differences of paired, standardized shifts (:mod:`advflow.information.shifts`), each
with a 95 % paired-bootstrap interval, beside the random-perturbation control of every attack
(:mod:`advflow.attacks.controls`); each question module (``advflow.report.q1`` ... ``q5``) states its own cases. A
case is **holds**, **fails** or **inconclusive** by its interval(s); a case whose premise is not met on this run
(too few successful inputs, a control identical to its seeds, no layer with information) says so instead.
Every case reads per-input paths through an :class:`Evidence`, which also gives the paths of the other
estimator (with or without the MI bias correction) for the sensitivity table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advflow.information import shifts
from advflow.workflow.io import open_h5
from advflow.report.study import NORMAL, NORMAL_TRAIN
from advflow.information.shifts import FAILS, HOLDS, INCONCLUSIVE, Interval

PREMISE = "premise not met"


NO_INFORMATION = "no information"


#: Fewest inputs (or trajectories) a bootstrap is run on: fewer give intervals too narrow to mean anything.
MIN_INPUTS = 5


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


def no_information(evidence: Evidence, model: str, path: str) -> bool:
    """Whether the path carries no information on ``model``: zero spread at every layer over the normal inputs."""
    return not np.isfinite(evidence.scale(model, path)).any()


def decided(case: Case, names: Sequence[str]) -> str:
    """The case's verdict from the named intervals (each a difference claimed > 0); records each claim."""
    for name in names:
        case.claims[name] = shifts.decide(case.intervals[name])
    return shifts.combine([case.claims[n] for n in names])


def premise(question: str, case: str, inputs: int, why: str) -> Case:
    """A case that could not be tested on this run, and why."""
    return Case(question, case, PREMISE, inputs, notes=[why])


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

