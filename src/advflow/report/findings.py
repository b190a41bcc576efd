"""A finding of the report: the claim, the verdict and the numbers that decide it, in words.

Two readings stand side by side in the report. The **statistical** one (:func:`statistical`, from the cases
each question module decides with :mod:`advflow.report.evidence`) decides each finding from paired,
standardized shifts with bootstrap intervals beside random controls: holds / holds in part / fails /
inconclusive / premise not met. The **literal** one (each question module's ``literal``) applies the paper's
own raw comparisons to the paper's distances (Tables III, V, IX): a single number against another, no
uncertainty, as the paper did; it is kept for comparison with the paper, not as the verdict.

A :class:`Finding` is a sentence that states the claim, whether it holds on this run and the numbers that decide
it, with ``holds`` True (it holds for every case), False (it fails for some or all) or None (the tables lack the
numbers to check it). Nothing here knows the paper's answer: every verdict is computed from the rows. Rates are
written one way throughout the report (:func:`percent`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advflow.workflow.figures import percent  # noqa: F401 (the one format of rates; findings words them)

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One finding checked on a run: ``text`` (claim, verdict, deciding numbers), ``holds`` (True: holds
    in every case; False: fails in some or all; None: cannot be checked) and ``numbers`` (the counts and
    values the text quotes)."""

    text: str
    holds: bool | None
    numbers: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def verdict(self) -> str:
        """A short label: ``holds`` (in every case), ``holds in part``, ``fails``, ``cannot be checked``, or the
        statistical labels of :mod:`advflow.decisions` (``inconclusive``, ``premise not met``, ...)."""
        if self.label:
            return self.label
        if self.holds is None:
            return "cannot be checked"
        if self.holds:
            return "holds"
        return "holds in part" if "only in part" in self.text else "fails"


def number(value: float) -> str:
    """Three significant digits, as a table would show them; NaN as 'n/a'."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.3g}"




def finite(*values: Any) -> bool:
    try:
        return all(v is not None and math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def plural(count: int, unit: str) -> str:
    return unit if count == 1 else f"{unit}s"


def tally(hits: int, total: int, unit: str) -> tuple[str, bool | None]:
    """The verdict phrase of a claim that held in ``hits`` of ``total`` cases, and whether it holds."""
    if hits < 0 or total < 0 or hits > total:
        raise ValueError(f"hits and total must satisfy 0 <= hits <= total; got {hits} of {total}")
    units = plural(total, unit)
    if total == 0:
        return f"cannot be checked: no {unit}s have the numbers it needs", None
    if hits == total:
        return f"holds for {hits} of {total} {units}", True
    if hits == 0:
        return f"does not hold: it holds for 0 of {total} {units}", False
    return f"holds only in part: for {hits} of {total} {units}", False


def ties(count: int, what: str) -> str:
    """A clause on comparisons left out because both sides were equal (neither larger)."""
    if count == 0:
        return ""
    return f"; {count} {plural(count, what)} with equal distances left out (a tie decides nothing)"


def combine(*verdicts: bool | None) -> bool | None:
    """A claim made of parts holds when every part that can be checked holds; None when none can."""
    checked = [v for v in verdicts if v is not None]
    if not checked:
        return None
    return all(checked)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN for fewer than 2 points or a
    constant variable."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length; got shapes {a.shape} and {b.shape}")
    if a.size < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    for value in np.unique(values):  # average rank of ties
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def checked_rows(rows: Iterable[Row], *required: str) -> list[Row]:
    rows = list(rows)
    for number, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"row {number} lacks the column(s) {', '.join(missing)}; got {', '.join(row)}")
    return rows



def case_text(case: Any, quoted: Sequence[str] = ()) -> str:
    quoted = [n for n in quoted if n in case.intervals] or list(case.intervals)
    parts = []
    for name in quoted:
        verdict = case.claims.get(name)
        parts.append(f"{name.replace('_', ' ')} {case.intervals[name].text()}" + (f" ({verdict})" if verdict else ""))
    detail = f" ({'; '.join(parts)})" if parts else ""
    notes = f" [{'; '.join(case.notes)}]" if case.notes else ""
    return f"{case.case}: {case.verdict}, n = {case.inputs}{detail}{notes}"



def statistical(claim: str, cases: Sequence[Any], label: str, quoted: Sequence[str] = ()) -> Finding:
    """The statistical finding of one question: its ``claim``, its cases (:class:`advflow.report.evidence.Case`)
    and the overall label (:func:`advflow.report.evidence.overall`); ``quoted`` names the intervals each case's
    sentence quotes first (the decisive difference)."""
    if not cases:
        return Finding(f"{claim}: cannot be checked: the config asks for none of the sets it needs.", None, {},
                       "cannot be checked")
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.verdict] = counts.get(case.verdict, 0) + 1
    tally_text = ", ".join(f"{v} {k}" for k, v in counts.items())
    holds = {"holds": True, "fails": False, "holds in part": False}.get(label)
    text = (f"{claim}: {label} ({tally_text}; 95 % paired-bootstrap intervals, shifts in units of the normal "
            f"inputs' spread per layer). " + ". ".join(case_text(c, quoted) for c in cases) + ".")
    return Finding(text, holds, {"cases": {c.case: c.verdict for c in cases}}, label)
