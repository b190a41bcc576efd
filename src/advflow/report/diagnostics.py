"""The statistical verdicts of every question, their intervals, and the estimator's diagnostics: how the verdicts
change under the other MI estimator, dead maps and zero-spread layers, and GP fits that cannot carry
information."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np

from advflow.information import shifts
from advflow.information.aggregate import fit_flags
from advflow.report.evidence import Case, Evidence, interval_rows
from advflow.report.results import Row, RunResults
from advflow.report.study import NORMAL, NORMAL_TRAIN, Study
from advflow.report.tables import TableSpec, Tables

KEY = "diagnostics"
TABLES = {
    "sensitivity.csv": TableSpec(
        ("question", "case", "verdict", "verdict_other_estimator", "changed"),
        "Each verdict with the run's MI estimator and with the other (the MI bias correction — subtracting the MI "
        "of position-shuffled maps — toggled)."),
    "dead_maps.csv": TableSpec(
        ("model", "layer", "dead_share", "all_dead", "iip_spread", "oip_spread", "flag"),
        "Estimator diagnostics per model and layer over the normal inputs: share of dead (constant) maps, whose MI "
        "is 0 and which are averaged into μ; the spread σ_k of μ_s and μ_t that scales every shift (NaN: zero "
        "spread, the layer carries no information and is left out)."),
    "verdicts.csv": TableSpec(
        ("question", "case", "verdict", "inputs", "note"),
        "Every case's statistical verdict: holds / fails / inconclusive by the 95 % paired-bootstrap interval of "
        "its compared difference (see intervals), or why it could not be tested."),
    "intervals.csv": TableSpec(
        ("question", "case", "quantity", "inputs", "estimate", "lower", "upper", "verdict"),
        "Every compared quantity with its 95 % paired-bootstrap interval. Shifts are (1/K') Σ_k |mean_i Δ_ik / σ_k|: "
        "paired differences from the seeds, per layer in units of the normal inputs' spread σ_k. A row with a "
        "verdict is a difference whose claim is '> 0'."),
}


def statistical_cases(questions: Sequence[ModuleType], study: Study, results: RunResults, *, seed: int,
                      toggled: bool = False) -> dict[str, list[Case]]:
    """Every case of every question, decided by paired, standardized shifts with intervals; ``toggled`` uses
    the other MI estimator (with / without the bias correction) than the run's."""
    evidence = Evidence(results, resamples=study.resamples, seed=seed, corrected=study.bias_corrected,
                        toggled=toggled)
    return {question.KEY: question.cases(study, evidence) for question in questions}


def verdict_rows(cases: Mapping[str, Sequence[Case]]) -> list[Row]:
    return [{"question": c.question, "case": c.case, "verdict": c.verdict, "inputs": c.inputs,
             "note": "; ".join(c.notes)} for q in cases.values() for c in q]


def sensitivity_rows(questions: Sequence[ModuleType], study: Study, results: RunResults,
                     cases: Mapping[str, Sequence[Case]], *, seed: int) -> tuple[list[Row], str]:
    """Each case's verdict with the run's MI estimator and with the other one (bias correction toggled)."""
    try:
        other = statistical_cases(questions, study, results, seed=seed, toggled=True)
    except LookupError as error:
        return [], f"not available: {error}"
    rows = []
    for key, mine in cases.items():
        for a, b in zip(mine, other.get(key, [])):
            rows.append({"question": key, "case": a.case, "verdict": a.verdict, "verdict_other_estimator": b.verdict,
                         "changed": a.verdict != b.verdict})
    changed = sum(r["changed"] for r in rows)
    return rows, f"{changed} of {len(rows)} verdicts change"


def dead_map_rows(study: Study, results: RunResults) -> list[Row]:
    """Per measuring model and layer, over the normal inputs: the share of dead (constant) maps, and the
    spread of mu_s and mu_t that scales every shift; a layer whose maps are all dead, or whose spread is 0
    (it carries no information: e.g. 1x1 target maps give an OIP identically 0), is flagged."""
    rows = []
    for model in sorted(study.measuring_models(), key=study.model_order):
        normal = [results.input_paths(model, p) for p in (NORMAL_TRAIN, NORMAL)]
        dead = (np.concatenate([p.dead for p in normal]) if all(p.dead is not None for p in normal) else None)
        spread_s = shifts.layer_scale(np.concatenate([p.mu_s for p in normal]))
        spread_t = shifts.layer_scale(np.concatenate([p.mu_t for p in normal]))
        for k, layer in enumerate(normal[0].layers):
            share = float(dead[:, k].mean()) if dead is not None else math.nan
            all_dead = bool(dead is not None and np.all(dead[:, k] == 1))
            flags = ["every map dead"] if all_dead else []
            if not math.isfinite(spread_s[k]):
                flags.append("IIP carries no information (zero spread)")
            if not math.isfinite(spread_t[k]):
                flags.append("OIP carries no information (zero spread)")
            rows.append({"model": model, "layer": int(layer), "dead_share": share, "all_dead": all_dead,
                         "iip_spread": float(spread_s[k]), "oip_spread": float(spread_t[k]), "flag": "; ".join(flags)})
    return rows


def gp_flags(results: RunResults) -> list[str]:
    """Aggregates read for this report whose GP fit cannot carry information
    (:func:`advflow.information.aggregate.fit_flags`: curve, band, lengthscale or likelihood not finite)."""
    flagged = []
    for (model, set_), aggregated in sorted(results.aggregates.items()):
        for name, path in aggregated.items():
            flags = fit_flags(path)
            if flags:
                flagged.append(f"{name.upper()} of {set_} on {model} ({', '.join(flags)})")
    return flagged


def add_statistics(questions: Sequence[ModuleType], study: Study, results: RunResults, tables: Tables, *,
                   seed: int) -> None:
    """The statistical verdicts, their intervals, the estimator's sensitivity and diagnostics, as tables."""
    cases = statistical_cases(questions, study, results, seed=seed)
    tables.cases = cases
    tables.rows["verdicts.csv"] = verdict_rows(cases)
    tables.rows["intervals.csv"] = interval_rows([c for q in cases.values() for c in q])
    rows, summary = sensitivity_rows(questions, study, results, cases, seed=seed)
    tables.rows["sensitivity.csv"] = rows
    estimator = "bias-corrected (shuffled-map MI subtracted)" if study.bias_corrected else "the paper's (uncorrected)"
    tables.note(KEY, f"MI estimator of this run: {estimator}; with the other estimator {summary}.")
    if study.measuring_models():
        tables.rows["dead_maps.csv"] = dead_map_rows(study, results)
        flagged = sorted({f"{r['model']} layer {r['layer']}: {r['flag']}" for r in tables.rows["dead_maps.csv"]
                          if r["flag"]})
        if flagged:
            tables.note(KEY, "layers that cannot carry information (left out of every shift): " + "; ".join(flagged))
    flagged_gp = gp_flags(results)
    if flagged_gp:
        tables.note(KEY, "GP aggregates whose fit cannot carry information (their distances are not usable): "
                    + "; ".join(flagged_gp))
