"""The paper's five findings (Ji & Wang, Section I and IV), checked against the tables of one run.

Two readings stand side by side in the report. The **statistical** one (:func:`statistical`, from the cases
of :mod:`advflow.decisions`) decides each finding from paired, standardized shifts with bootstrap intervals
beside random controls: holds / holds in part / fails / inconclusive / premise not met. The **literal** one
(the functions below) applies the paper's own raw comparisons to the paper's distances (Tables III, V, IX):
a single number against another, no uncertainty, as the paper did; it is kept for comparison with the
paper, not as the verdict.

Each function takes rows of the report's tables (lists of plain dicts, as :mod:`advflow.report` computes
and writes them) and returns a :class:`Finding`: a sentence that states the paper's claim, whether it
holds on this run and the numbers that decide it, with ``holds`` True (it holds for every case), False
(it fails for some or all) or None (the tables lack the numbers to check it), and those numbers.
Nothing here knows the paper's answer: every verdict is computed from the rows.

=====  ===========================  =====================================================================
 Q     function                     claim checked
=====  ===========================  =====================================================================
 Q1    :func:`crafting_process`     along JSMA's crafting steps the IPs drift away from step 0's
                                    (last step's OIP deviation > step 1's per seed; Spearman rho of step
                                    vs OIP deviation > 0)
 Q2    :func:`attack_mechanisms`    the OIP of each attack's set deviates from normal more than its IIP
                                    (Table III); how much the OIP moves differs between attacks (range)
 Q3    :func:`model_complexity`     Table V as the paper reads it: the gap between the sets targeting the
                                    inference model and the other model is larger on compressed than on
                                    good_init
 Q4    :func:`adaptive_attack`      on the distilled model the adaptive JSMA's OIP deviates further from
                                    normal than the regular JSMA's (with both success rates)
 Q5    :func:`transferability`      transferable inputs' OIPs deviate further from normal than
                                    non-transferable ones'; sets targeting the inference model deviate
                                    more than sets targeting another model (Table IX)
=====  ===========================  =====================================================================

The rows' keys are the report's CSV columns (see each function). Distances that are NaN (a subset with
too few inputs to aggregate) are left out of the counts and said so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _number(value: float) -> str:
    """Three significant digits, as a table would show them; NaN as 'n/a'."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.3g}"


def percent(value: float) -> str:
    """A rate as every table and finding of the report writes it: one decimal, e.g. "33.3 %"."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{100 * float(value):.1f} %"


def _finite(*values: Any) -> bool:
    try:
        return all(v is not None and math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _plural(count: int, unit: str) -> str:
    return unit if count == 1 else f"{unit}s"


def tally(hits: int, total: int, unit: str) -> tuple[str, bool | None]:
    """The verdict phrase of a claim that held in ``hits`` of ``total`` cases, and whether it holds."""
    if hits < 0 or total < 0 or hits > total:
        raise ValueError(f"hits and total must satisfy 0 <= hits <= total; got {hits} of {total}")
    units = _plural(total, unit)
    if total == 0:
        return f"cannot be checked: no {unit}s have the numbers it needs", None
    if hits == total:
        return f"holds for {hits} of {total} {units}", True
    if hits == 0:
        return f"does not hold: it holds for 0 of {total} {units}", False
    return f"holds only in part: for {hits} of {total} {units}", False


def _ties(count: int, what: str) -> str:
    """A clause on comparisons left out because both sides were equal (neither larger)."""
    if count == 0:
        return ""
    return f"; {count} {_plural(count, what)} with equal distances left out (a tie decides nothing)"


def _combine(*verdicts: bool | None) -> bool | None:
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


def _rows(rows: Iterable[Row], *required: str) -> list[Row]:
    rows = list(rows)
    for number, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"row {number} lacks the column(s) {', '.join(missing)}; got {', '.join(row)}")
    return rows


# ---------------------------------------------------------------------------------------------------------
# Q1


def crafting_process(trajectory_rows: Iterable[Row]) -> Finding:
    """Q1 (Fig. 3): JSMA's crafting process gradually shifts the seed's IPs towards the adversarial ones.

    Rows of ``q1_trajectory.csv``: ``seed, step, iip_deviation, oip_deviation`` (deviation = distance
    of step i's path from step 0's). Per seed with at least two crafting steps, the OIP deviation at the
    last step must exceed that at step 1; over all rows, Spearman's rho of step against OIP deviation
    must be positive.
    """
    rows = _rows(trajectory_rows, "seed", "step", "iip_deviation", "oip_deviation")
    by_seed: dict[str, dict[int, Row]] = {}
    for row in rows:
        by_seed.setdefault(str(row["seed"]), {})[int(row["step"])] = row
    checked, grew, ties = [], [], 0
    for seed, steps in by_seed.items():
        last = max(steps)
        if last < 2 or 1 not in steps or not _finite(steps[1]["oip_deviation"], steps[last]["oip_deviation"]):
            continue
        first_dev, last_dev = float(steps[1]["oip_deviation"]), float(steps[last]["oip_deviation"])
        if first_dev == last_dev:
            ties += 1
            continue
        checked.append({"seed": seed, "last_step": last, "step1": first_dev, "last": last_dev})
        if last_dev > first_dev:
            grew.append(seed)
    finite = [r for r in rows if _finite(r["oip_deviation"], r["iip_deviation"])]
    rho_oip = spearman([float(r["step"]) for r in finite], [float(r["oip_deviation"]) for r in finite])
    rho_iip = spearman([float(r["step"]) for r in finite], [float(r["iip_deviation"]) for r in finite])
    phrase, part = tally(len(grew), len(checked), "seed")
    numbers = {"seeds_grew": len(grew), "seeds_checked": len(checked), "seeds_tied": ties, "spearman_oip": rho_oip,
               "spearman_iip": rho_iip, "steps": len(finite), "per_seed": checked}
    claim = ("Q1: along the crafting process (JSMA on good_init) the IPs deviate gradually from the seed's "
             "(step 0)")
    if part is None:
        why = (f"the {ties} {_plural(ties, 'seed')} with two or more crafting steps end where step 1 is" if ties
               else "no seed has two or more crafting steps")
        return Finding(f"{claim}: cannot be checked: {why}.", None, numbers)
    trend = math.isfinite(rho_oip) and rho_oip > 0
    holds = bool(part and trend)
    cases = "; ".join(f"seed {c['seed']}: {_number(c['step1'])} at step 1, {_number(c['last'])} at step "
                      f"{c['last_step']}" for c in checked)
    overall = "holds" if holds else ("does not hold" if not grew and not trend else "holds only in part")
    text = (f"{claim}: {overall}. The OIP deviation at the last step exceeds that at step 1 — {phrase}"
            f"{' (' + cases + ')' if cases else ''}{_ties(ties, 'seed')}. Spearman's rho of step against deviation "
            f"over {len(finite)} steps of {len(by_seed)} {_plural(len(by_seed), 'seed')}: OIP {_number(rho_oip)}, "
            f"IIP {_number(rho_iip)}"
            f"{'' if trend else ' (not positive: the OIP does not drift away steadily)'}.")
    return Finding(text, holds, numbers)


# ---------------------------------------------------------------------------------------------------------
# Q2


def attack_mechanisms(distance_rows: Iterable[Row]) -> Finding:
    """Q2 (Fig. 4, Table III): adversarial inputs shift the OIP away from normal more than the IIP, and
    different attacks shift it by different amounts.

    Rows of ``table3_distance_from_normal.csv``: ``attack, set, iip_distance, oip_distance``; a row with
    an empty ``attack`` is the normal-vs-normal baseline (normal_train against the clean seeds), quoted
    for scale. The claim holds when every attack's OIP distance exceeds its IIP distance.
    """
    rows = _rows(distance_rows, "attack", "iip_distance", "oip_distance")
    measured = [r for r in rows if r["attack"] and _finite(r["iip_distance"], r["oip_distance"])]
    attacks = [r for r in measured if float(r["oip_distance"]) != float(r["iip_distance"])]
    tied = [r for r in measured if float(r["oip_distance"]) == float(r["iip_distance"])]
    baseline = [r for r in rows if not r["attack"] and _finite(r["oip_distance"])]
    above = [r for r in attacks if float(r["oip_distance"]) > float(r["iip_distance"])]
    phrase, holds = tally(len(above), len(attacks), "attack")
    claim = "Q2: the OIPs of adversarial inputs deviate from normal more than their IIPs do (Table III)"
    numbers: dict[str, Any] = {
        "attacks_oip_above_iip": len(above), "attacks": len(attacks), "attacks_tied": [r["attack"] for r in tied],
        "oip": {r["attack"]: float(r["oip_distance"]) for r in attacks},
        "iip": {r["attack"]: float(r["iip_distance"]) for r in attacks},
    }
    if holds is None:
        left_out = f" ({', '.join(r['attack'] for r in tied)} left out: equal IIP and OIP distances)" if tied else ""
        return Finding(f"{claim}: {phrase}{left_out}.", None, numbers)
    cases = "; ".join(f"{r['attack']}: OIP {_number(r['oip_distance'])} vs IIP {_number(r['iip_distance'])}"
                      for r in attacks)
    text = f"{claim}: {phrase} ({cases})"
    if tied:
        text += (f"; left out: {', '.join(r['attack'] for r in tied)}, whose IIP and OIP distances are equal"
                 + (" (0: the set's paths equal normal's, e.g. no input was changed)"
                    if all(float(r["oip_distance"]) == 0 for r in tied) else ""))
    text += "."
    oips = sorted(measured, key=lambda r: float(r["oip_distance"]))
    low, high = oips[0], oips[-1]
    numbers.update(oip_min=float(low["oip_distance"]), oip_max=float(high["oip_distance"]),
                   oip_min_attack=low["attack"], oip_max_attack=high["attack"])
    if len(oips) > 1:
        ratio = float(high["oip_distance"]) / float(low["oip_distance"]) if float(low["oip_distance"]) > 0 \
            else math.inf
        numbers["oip_ratio"] = ratio
        text += (f" Different attacks move the OIP by different amounts: from {_number(low['oip_distance'])} "
                 f"({low['attack']}) to {_number(high['oip_distance'])} ({high['attack']})"
                 f"{', a factor of ' + _number(ratio) if math.isfinite(ratio) else ''}.")
    if baseline:
        base = float(baseline[0]["oip_distance"])
        beyond = sum(float(r["oip_distance"]) > base for r in measured)
        numbers.update(baseline_oip=base, attacks_beyond_baseline=beyond)
        text += (f" For scale, the normal training inputs' OIP lies {_number(base)} from the clean seeds'; "
                 f"{beyond} of {len(measured)} {_plural(len(measured), 'attack')} move it further.")
    return Finding(text, holds, numbers)


# ---------------------------------------------------------------------------------------------------------
# Q3


def model_complexity(gap_rows: Iterable[Row], *, complex_model: str = "good_init",
                     simple_model: str = "compressed", path: str = "oip") -> Finding:
    """Q3 (Fig. 5, Table V), literally as the paper reads Table V: "the two sets of inputs [targeting the
    inference model and targeting the other model] have a larger gap between their IPs on the compressed
    model than on the original model".

    Rows of ``table5_gap.csv``: ``attack, measured_on, iip_gap, oip_gap`` (the distance, on ``measured_on``,
    between the aggregated paths of the set targeting it and the set targeting the other model). Per attack
    with both rows, the ``path`` gap on ``simple_model`` must exceed that on ``complex_model``.
    """
    column = f"{path}_gap"
    rows = _rows(gap_rows, "attack", "measured_on", column)
    gaps: dict[str, dict[str, float]] = {}
    for r in rows:
        if _finite(r[column]):
            gaps.setdefault(str(r["attack"]), {})[str(r["measured_on"])] = float(r[column])
    pairs = [(a, g[complex_model], g[simple_model]) for a, g in gaps.items() if complex_model in g and simple_model in g]
    tied = [p for p in pairs if p[1] == p[2]]
    pairs = [p for p in pairs if p[1] != p[2]]
    larger = [p for p in pairs if p[2] > p[1]]
    phrase, holds = tally(len(larger), len(pairs), "attack")
    claim = (f"Q3 (literal, Table V): the sets targeting the inference model and targeting the other model have a "
             f"larger gap between their {path.upper()}s on {simple_model} than on {complex_model}")
    numbers = {"attacks_larger_on_simple": len(larger), "attacks": len(pairs), "attacks_tied": [p[0] for p in tied],
               "holding_attacks": [p[0] for p in larger],
               "gap": {a: {complex_model: c, simple_model: s} for a, c, s in pairs}}
    if holds is None:
        return Finding(f"{claim}: {phrase}.", None, numbers)
    cases = "; ".join(f"{a}: {_number(s)} on {simple_model} vs {_number(c)} on {complex_model}" for a, c, s in pairs)
    held = f" (holds for {', '.join(p[0] for p in larger)})" if larger and len(larger) < len(pairs) else ""
    return Finding(f"{claim}: {phrase}{held} ({cases}){_ties(len(tied), 'attack')}.", holds, numbers)


# ---------------------------------------------------------------------------------------------------------
# Q4


def adaptive_attack(defense_rows: Iterable[Row], *, adaptive: str = "jsma_adaptive",
                    regular: str = "jsma_control") -> Finding:
    """Q4 (Fig. 6): on the defensively distilled model the adaptive JSMA shifts the OIP further from
    normal than the regular JSMA (at the same theta and gamma).

    Rows of ``q4_defense.csv``: ``attack, iip_distance, oip_distance, success_rate``.
    """
    rows = _rows(defense_rows, "attack", "oip_distance", "success_rate")
    by_attack = {str(r["attack"]): r for r in rows}
    claim = ("Q4: on the defensively distilled model, the adaptive JSMA's OIP deviates further from normal than "
             "the regular JSMA's")
    if adaptive not in by_attack or regular not in by_attack or not _finite(
            by_attack[adaptive]["oip_distance"], by_attack[regular]["oip_distance"]):
        return Finding(f"{claim}: cannot be checked: both {adaptive} and {regular} sets on the distilled model "
                       f"are needed.", None, {})
    a, r = by_attack[adaptive], by_attack[regular]
    holds: bool | None = float(a["oip_distance"]) > float(r["oip_distance"])
    if float(a["oip_distance"]) == float(r["oip_distance"]):
        holds = None
    numbers = {"oip_adaptive": float(a["oip_distance"]), "oip_regular": float(r["oip_distance"]),
               "success_adaptive": float(a["success_rate"]), "success_regular": float(r["success_rate"])}
    if "iip_distance" in a and "iip_distance" in r:
        numbers.update(iip_adaptive=float(a["iip_distance"]), iip_regular=float(r["iip_distance"]))
    verdict = {True: "holds", False: "does not hold", None: "cannot be decided: the two distances are equal"}[holds]
    text = (f"{claim}: {verdict} (OIP distance {_number(a['oip_distance'])} for {adaptive} vs "
            f"{_number(r['oip_distance'])} for {regular}"
            + (f"; IIP {_number(numbers['iip_adaptive'])} vs {_number(numbers['iip_regular'])}"
               if "iip_adaptive" in numbers else "")
            + f"). Success rates on the distilled model: {adaptive} {percent(a['success_rate'])}, "
              f"{regular} {percent(r['success_rate'])}.")
    return Finding(text, holds, numbers)


# ---------------------------------------------------------------------------------------------------------
# Q5


def transferability(transfer_rows: Iterable[Row], transferable_rows: Iterable[Row]) -> Finding:
    """Q5 (Fig. 7, Table IX): transferable adversarial inputs' OIPs deviate further from normal than
    non-transferable ones', and sets targeting the inference model deviate more than sets targeting
    another model.

    ``transfer_rows`` (``table9_transfer.csv``): ``attack, target, measured_on, oip_distance``.
    ``transferable_rows`` (``q5_transferable.csv``): ``attack, target, measured_on, subset`` (transferable
    or non_transferable), ``inputs``, ``oip_distance`` (NaN when the subset had too few inputs).
    Part 1 counts (attack, target, inference model) cases where both subsets have a distance; part 2 counts
    (attack, inference model, other target) comparisons of Table IX. The finding holds when every part
    that can be checked holds for every case.
    """
    table9 = _rows(transfer_rows, "attack", "target", "measured_on", "oip_distance")
    split = _rows(transferable_rows, "attack", "target", "measured_on", "subset", "oip_distance")

    cases: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in split:
        cases.setdefault((str(r["attack"]), str(r["target"]), str(r["measured_on"])), {})[str(r["subset"])] = \
            float(r["oip_distance"]) if _finite(r["oip_distance"]) else math.nan
    complete = {k: v for k, v in cases.items()
                if _finite(v.get("transferable", math.nan), v.get("non_transferable", math.nan))}
    tied1 = [k for k, v in complete.items() if v["transferable"] == v["non_transferable"]]
    complete = {k: v for k, v in complete.items() if k not in tied1}
    further = [k for k, v in complete.items() if v["transferable"] > v["non_transferable"]]
    phrase1, part1 = tally(len(further), len(complete), "case")

    oip = {(str(r["attack"]), str(r["target"]), str(r["measured_on"])): float(r["oip_distance"])
           for r in table9 if _finite(r["oip_distance"])}
    comparisons = []
    for (attack, target, measured), value in oip.items():
        if target != measured:
            continue
        for (a2, t2, m2), other in oip.items():
            if a2 == attack and m2 == measured and t2 != measured:
                comparisons.append((attack, measured, t2, value, other))
    tied2 = [c for c in comparisons if c[3] == c[4]]
    comparisons = [c for c in comparisons if c[3] != c[4]]
    larger = [c for c in comparisons if c[3] > c[4]]
    phrase2, part2 = tally(len(larger), len(comparisons), "comparison")

    holds = _combine(part1, part2)
    numbers = {"transferable_further": len(further), "transferable_cases": len(complete),
               "cases_without_both_subsets": len(cases) - len(complete) - len(tied1), "cases_tied": len(tied1),
               "comparisons_tied": len(tied2),
               "itself_larger": len(larger), "itself_comparisons": len(comparisons),
               "subsets": {"/".join(k): v for k, v in cases.items()}}
    claim = ("Q5: transferable adversarial inputs' OIPs deviate further from normal than non-transferable ones', "
             "and sets targeting the inference model deviate more than sets targeting another model")
    if holds is None:
        return Finding(f"{claim}: cannot be checked: no (attack, target, inference model) case has both subsets "
                       f"and Table IX has no comparison.", None, numbers)
    overall = "holds" if holds else ("does not hold" if not further and not larger else "holds only in part")
    lacking = len(cases) - len(complete) - len(tied1)
    lacking_text = f"; {lacking} {_plural(lacking, 'case')} lack two inputs in a subset" if lacking else ""
    if holds and (part1 is None or part2 is None):
        overall = "holds as far as it can be checked"
    detail1 = "; ".join(f"{a}@{t} on {m}: {_number(v['transferable'])} vs {_number(v['non_transferable'])}"
                        for (a, t, m), v in complete.items())
    text = (f"{claim}: {overall}. Transferable vs non-transferable OIP distance from normal: {phrase1}"
            f"{' (' + detail1 + ')' if detail1 else ''}{_ties(len(tied1), 'case')}"
            f"{lacking_text}"
            f". Sets targeting the inference model vs sets targeting another model (Table IX): {phrase2}")
    if comparisons:
        text += " (" + "; ".join(f"{a} on {m}: {_number(own)} targeting {m} vs {_number(other)} targeting {t}"
                                 for a, m, t, own, other in comparisons) + ")"
    text += _ties(len(tied2), "comparison")
    return Finding(text + ".", holds, numbers)


# ---------------------------------------------------------------------------------------------------------
# The statistical reading

CLAIMS = {
    "q1": ("Q1: along JSMA's crafting steps the OIP moves away from the seed's further than along a random "
           "trajectory of the same length (last step vs step 0, trajectories that end in a successful adversarial "
           "input)"),
    "q2": ("Q2: adversarial inputs shift the OIP more than the IIP, and more than a random perturbation of the same "
           "size does (paired, standardized shifts of each attack's successful inputs on good_init)"),
    "q3": ("Q3: the gap between the sets targeting the inference model and the other model is larger on compressed "
           "than on good_init (OIP; Table V as the paper reads it)"),
    "q4": ("Q4: on the defensively distilled model the adaptive JSMA shifts the OIP more than the regular JSMA "
           "(all attacked inputs, as the paper)"),
    "q5": ("Q5: sets targeting the inference model shift its OIP more than sets targeting another model, and "
           "transferable inputs shift it more than non-transferable ones"),
}

#: Which interval each question's case sentence quotes first (the decisive difference), then the others.
_QUOTED = {
    "q1": ("oip_minus_control", "oip_shift", "control_oip_shift", "iip_minus_control"),
    "q2": ("oip_minus_iip", "oip_minus_control", "oip_shift", "iip_shift", "control_oip_shift"),
    "q3": ("oip_gap_difference", "oip_gap_good_init", "oip_gap_compressed", "iip_gap_difference"),
    "q4": ("adaptive_minus_regular", "adaptive_oip_shift", "regular_oip_shift", "excess_over_control_difference"),
    "q5": ("itself_minus_other", "transferable_minus_non_transferable"),
}


def _case_text(question: str, case: Any) -> str:
    quoted = [n for n in _QUOTED.get(question, ()) if n in case.intervals] or list(case.intervals)
    parts = []
    for name in quoted:
        verdict = case.claims.get(name)
        parts.append(f"{name.replace('_', ' ')} {case.intervals[name].text()}" + (f" ({verdict})" if verdict else ""))
    detail = f" ({'; '.join(parts)})" if parts else ""
    notes = f" [{'; '.join(case.notes)}]" if case.notes else ""
    return f"{case.case}: {case.verdict}, n = {case.inputs}{detail}{notes}"


def statistical(question: str, cases: Sequence[Any], label: str) -> Finding:
    """The statistical finding of one question from its :class:`advflow.decisions.Case` list and the overall
    label (:func:`advflow.decisions.overall`)."""
    claim = CLAIMS[question]
    if not cases:
        return Finding(f"{claim}: cannot be checked: the config asks for none of the sets it needs.", None, {},
                       "cannot be checked")
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.verdict] = counts.get(case.verdict, 0) + 1
    tally_text = ", ".join(f"{v} {k}" for k, v in counts.items())
    holds = {"holds": True, "fails": False, "holds in part": False}.get(label)
    text = (f"{claim}: {label} ({tally_text}; 95 % paired-bootstrap intervals, shifts in units of the normal "
            f"inputs' spread per layer). " + ". ".join(_case_text(question, c) for c in cases) + ".")
    return Finding(text, holds, {"cases": {c.case: c.verdict for c in cases}}, label)
