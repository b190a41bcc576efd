"""Q3: Are more complex DNN models more vulnerable to adversarial inputs? (paper, Figs. 5, 8, 9, Tables IV-VI)

good_init and its Network Trimming compression each measure the sets crafted on itself and on the other model.
Table V gives each set's distance from normal; the paper reads it as a gap: on each model, the distance between
the sets targeting it and targeting the other model, claimed larger on the compressed model (``table5_gap.csv``).
The statistical case tests that gap claim on the OIP, paired over the seeds successful on both targets.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from advflow.information import shifts
from advflow.information.aggregate import aggregated_distance
from advflow.workflow.catalog import set_name
from advflow.report import findings as fx
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report.findings import Finding, Row
from advflow.report.plotting import MARKERS, Curve, Figure, normal_curve, palette, rows_figure
from advflow.report.results import RunResults
from advflow.report.study import Study
from advflow.report.tables import TableSpec, Tables, distance_from_normal, model_rows

KEY = "q3"
TITLE = "Q3: Are more complex DNN models more vulnerable to adversarial inputs?"
CLAIM = ("Q3: the gap between the sets targeting the inference model and the other model is larger on compressed "
         "than on good_init (OIP; Table V as the paper reads it)")
QUOTED = ("oip_gap_difference", "oip_gap_good_init", "oip_gap_compressed", "iip_gap_difference")
#: Q3's pair: the original model and its Network Trimming compression.
MODELS = ("good_init", "compressed")
#: The paper's figure of each attack (Fig. 5 in the text, Figs. 8 and 9 in its appendix).
PAPER_FIGURES = {"jsma": "Fig. 5", "fgsm": "Fig. 8", "cw": "Fig. 9"}
TABLES = {
    "table4_models.csv": TableSpec(("model", "parameters", "test_accuracy", "parameter_ratio"),
                                   "Table IV: the original and compressed models."),
    "table5_gap.csv": TableSpec(
        ("attack", "measured_on", "iip_gap", "oip_gap", "average_gap"),
        "Table V as the paper reads it: on each model, the distance between the aggregated paths of the set "
        "targeting that model and the set targeting the other model (the paper's claim: larger on compressed)."),
    "table5_complexity.csv": TableSpec(
        ("attack", "measured_on", "target", "relation", "set", "normal", "iip_distance", "oip_distance",
         "average_distance", "gp_flag"),
        "Table V: IIP and OIP distance from normal on each model of sets targeting the model itself and the other "
        "model."),
    "table6_transferability.csv": TableSpec(
        ("attack", "target", "measured_on", "successful", "transferred", "transferability"),
        "Table VI: transferability between good_init and compressed (share of inputs successful on the target that "
        "the other model also misclassifies)."),
}


def _other(model: str) -> str:
    return MODELS[1] if model == MODELS[0] else MODELS[0]


def complexity_rows(study: Study, results: RunResults) -> tuple[list[Row], list[str]]:
    """Table V: on each of good_init and compressed, sets targeting itself and the other model."""
    rows, missing = [], []
    for attack in study.q3_attacks:
        for model in MODELS:
            for target, relation in ((model, "itself"), (_other(model), "other")):
                set_ = set_name(attack, target)
                if not study.measured(model, set_):
                    missing.append(f"{set_} on {model}")
                    continue
                row = distance_from_normal(results, model, set_)
                rows.append({**row, "attack": attack, "target": target, "relation": relation,
                             "average_distance": (row["iip_distance"] + row["oip_distance"]) / 2})
    return rows, missing


def gap_rows(study: Study, results: RunResults) -> list[Row]:
    """Table V as the paper reads it: on each model, the distance between the aggregated paths of the set
    targeting it and the set targeting the other model."""
    rows = []
    for attack in study.q3_attacks:
        for model in MODELS:
            own, foreign = set_name(attack, model), set_name(attack, _other(model))
            if not (study.measured(model, own) and study.measured(model, foreign)):
                continue
            a, b = results.aggregate(model, own), results.aggregate(model, foreign)
            iip, oip = aggregated_distance(a["iip"], b["iip"]), aggregated_distance(a["oip"], b["oip"])
            rows.append({"attack": attack, "measured_on": model, "iip_gap": iip, "oip_gap": oip,
                         "average_gap": (iip + oip) / 2})
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    if not study.q3_attacks:
        tables.note(KEY, "skipped: the config crafts no attack on both good_init and compressed")
        return
    if all(m in study.models for m in MODELS):
        tables.rows["table4_models.csv"] = model_rows(results, MODELS, ratio_to=MODELS[0])
    rows, missing = complexity_rows(study, results)
    tables.rows["table5_gap.csv"] = gap_rows(study, results)
    tables.rows["table5_complexity.csv"] = rows
    if missing:
        tables.note(KEY, f"not measured (good_init and compressed share no transfer group, or the attack is missing "
                         f"on one of them): {', '.join(missing)}")
    table6 = [r for r in results.transfer if {r["target"], r["measured_on"]} == set(MODELS)
              and r["attack"] in study.q3_attacks]
    if table6:
        tables.rows["table6_transferability.csv"] = table6


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    if not study.q3_attacks:
        return ""
    return (f"{MODELS[1]} is {MODELS[0]} after Network Trimming (Table IV). Attacks crafted on both ({study.n_text} "
            f"seeds each): {study.attacks_text(study.q3_attacks)}; each set is measured on both models.")


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Figs. 5, 8, 9: per attack, on each of good_init and compressed (one row each), normal and the sets
    targeting the inference model (solid) and the other model (dashed); each set has the colour of its target
    model (and its marker), the same in both rows."""
    if "table5_complexity.csv" not in tables.rows:
        return []
    colors = dict(zip(MODELS, palette(len(MODELS))))
    markers = dict(zip(MODELS, MARKERS[1:]))  # MARKERS[0] is normal's
    out = []
    for attack in study.q3_attacks:
        rows = []
        for model in MODELS:
            curves = [normal_curve(results, model)]
            for target, style in ((model, "-"), (_other(model), "--")):
                if study.measured(model, set_name(attack, target)):
                    curves.append(Curve(f"{attack} → {target}", results.aggregate(model, set_name(attack, target)),
                                        colors[target], style, marker=markers[target]))
            rows.append((f"{attack} on {model}", curves))
        cited = f" (cf. {PAPER_FIGURES[attack]})" if attack in PAPER_FIGURES else ""
        caption = (f"Q3{cited}: aggregated IPs on {MODELS[0]} (top) and {MODELS[1]} (bottom) of normal inputs and of "
                   f"{attack}'s sets targeting the inference model (solid) or the other model (dashed), each in the "
                   f"colour of its target model; 'a → t' is attack a crafted on model t.")
        out.append(Figure(f"q3_complexity_{attack}.png", rows_figure(rows, dpi), caption))
    return out


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    original, compressed = MODELS
    return [gap_case(evidence, attack, original=original, compressed=compressed) for attack in study.q3_attacks
            if study.measured(original, set_name(attack, compressed))
            and study.measured(compressed, set_name(attack, original))]


def gap_case(evidence: Evidence, attack: str, *, original: str = "good_init", compressed: str = "compressed") -> Case:
    """Q3 (Table V as the paper reads it): on each model, the gap between the set targeting it and the set
    targeting the other model; the claim is gap(compressed) > gap(original), on the OIP."""
    on_original, on_compressed = set_name(attack, original), set_name(attack, compressed)
    success = evidence.success(original, attack) & evidence.success(compressed, attack)
    index = np.flatnonzero(success)
    if index.size < MIN_INPUTS:
        return premise("q3", attack, int(index.size), f"{index.size} seeds are successful on both {original} and "
                        f"{compressed}; at least {MIN_INPUTS} are needed")
    if no_information(evidence, original, "oip") or no_information(evidence, compressed, "oip"):
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
    case.verdict = decided(case, ["oip_gap_difference"])
    case.claims["iip_gap_difference"] = shifts.decide(case.intervals["iip_gap_difference"])
    return case


def literal(tables: Tables) -> Finding:
    return model_complexity(tables.rows.get("table5_gap.csv", []), complex_model=MODELS[0], simple_model=MODELS[1])


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
    rows = fx.checked_rows(gap_rows, "attack", "measured_on", column)
    gaps: dict[str, dict[str, float]] = {}
    for r in rows:
        if fx.finite(r[column]):
            gaps.setdefault(str(r["attack"]), {})[str(r["measured_on"])] = float(r[column])
    pairs = [(a, g[complex_model], g[simple_model]) for a, g in gaps.items()
             if complex_model in g and simple_model in g]
    tied = [p for p in pairs if p[1] == p[2]]
    pairs = [p for p in pairs if p[1] != p[2]]
    larger = [p for p in pairs if p[2] > p[1]]
    phrase, holds = fx.tally(len(larger), len(pairs), "attack")
    claim = (f"Q3 (literal, Table V): the sets targeting the inference model and targeting the other model have a "
             f"larger gap between their {path.upper()}s on {simple_model} than on {complex_model}")
    numbers = {"attacks_larger_on_simple": len(larger), "attacks": len(pairs), "attacks_tied": [p[0] for p in tied],
               "holding_attacks": [p[0] for p in larger],
               "gap": {a: {complex_model: c, simple_model: s} for a, c, s in pairs}}
    if holds is None:
        return Finding(f"{claim}: {phrase}.", None, numbers)
    cases = "; ".join(f"{a}: {fx.number(s)} on {simple_model} vs {fx.number(c)} on {complex_model}"
                      for a, c, s in pairs)
    held = f" (holds for {', '.join(p[0] for p in larger)})" if larger and len(larger) < len(pairs) else ""
    return Finding(f"{claim}: {phrase}{held} ({cases}){fx.ties(len(tied), 'attack')}.", holds, numbers)
