"""Q3: Are more complex DNN models more vulnerable to adversarial inputs? (paper, Figs. 5, 8, 9, Tables IV-VI)

The ``base`` role's model (``study.base``: good_init by default) and the ``compressed`` role's (``study.compressed``:
its Network Trimming compression by default) each measure the sets crafted on itself and on the other model.
Table V gives each set's distance from normal; the paper reads it as a gap: on each model, the distance between
the sets targeting it and targeting the other model, claimed larger on the compressed model (``table5_gap.csv``).
The statistical case tests that gap claim on the OIP, paired over the seeds successful on both targets.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from advflow.information import shifts
from advflow.information.aggregate import aggregated_distance
from advflow.workflow.catalog import ROLES, set_name
from advflow.report import findings as fx
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report.findings import Finding, Row
from advflow.report.plotting import MARKERS, Curve, Figure, normal_curve, palette, rows_figure
from advflow.report.results import RunResults
from advflow.report.study import Study, role_text
from advflow.report.tables import TableSpec, Tables, distance_from_normal, model_rows

KEY = "q3"
TITLE = "Q3: Are more complex DNN models more vulnerable to adversarial inputs?"
CLAIM = ("Q3: the gap between the sets targeting the inference model and the other model is larger on {compressed} "
         "than on {base} (OIP; Table V as the paper reads it)")
#: ``{role}``: the role's model's name (``oip_gap_{base}`` is ``oip_gap_good_init`` by default).
QUOTED = ("oip_gap_difference", "oip_gap_{base}", "oip_gap_{compressed}", "iip_gap_difference")
#: Q3's pair of roles: the original model and its compression (:attr:`advflow.report.study.Study.q3_models`).
ROLES_COMPARED = ("base", "compressed")
#: The paper's figure of each attack (Fig. 5 in the text, Figs. 8 and 9 in its appendix).
PAPER_FIGURES = {"jsma": "Fig. 5", "fgsm": "Fig. 8", "cw": "Fig. 9"}
TABLES = {
    "table4_models.csv": TableSpec(("model", "parameters", "test_accuracy", "parameter_ratio"),
                                   "Table IV: the original and compressed models."),
    "table5_gap.csv": TableSpec(
        ("attack", "measured_on", "iip_gap", "oip_gap", "average_gap"),
        "Table V as the paper reads it: on each model, the distance between the aggregated paths of the set "
        "targeting that model and the set targeting the other model (the paper's claim: larger on {compressed})."),
    "table5_complexity.csv": TableSpec(
        ("attack", "measured_on", "target", "relation", "set", "normal", "iip_distance", "oip_distance",
         "average_distance", "gp_flag"),
        "Table V: IIP and OIP distance from normal on each model of sets targeting the model itself and the other "
        "model."),
    "table6_transferability.csv": TableSpec(
        ("attack", "target", "measured_on", "successful", "transferred", "transferability"),
        "Table VI: transferability between {base} and {compressed} (share of inputs successful on the target that "
        "the other model also misclassifies)."),
}


def models(study: Study) -> tuple[str, str] | tuple[()]:
    """Q3's pair (:attr:`advflow.report.study.Study.q3_models`): the base role's model and the compressed role's;
    () when either role has none. A stand-in study without roles (a test's) compares the default roles' models."""
    if not hasattr(study, "roles"):
        return tuple(ROLES[r] for r in ROLES_COMPARED)
    return study.q3_models


def _other(model: str, pair: tuple[str, str]) -> str:
    return pair[1] if model == pair[0] else pair[0]


def complexity_rows(study: Study, results: RunResults) -> tuple[list[Row], list[str]]:
    """Table V: on each of the base and the compressed model, sets targeting itself and the other model."""
    rows, missing = [], []
    pair = models(study)
    for attack in study.q3_attacks:
        for model in pair:
            for target, relation in ((model, "itself"), (_other(model, pair), "other")):
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
    pair = models(study)
    for attack in study.q3_attacks:
        for model in pair:
            own, foreign = set_name(attack, model), set_name(attack, _other(model, pair))
            if not (study.measured(model, own) and study.measured(model, foreign)):
                continue
            a, b = results.aggregate(model, own), results.aggregate(model, foreign)
            iip, oip = aggregated_distance(a["iip"], b["iip"]), aggregated_distance(a["oip"], b["oip"])
            rows.append({"attack": attack, "measured_on": model, "iip_gap": iip, "oip_gap": oip,
                         "average_gap": (iip + oip) / 2})
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    pair = models(study)
    if not pair:
        why = "; ".join(study.role_missing(r) for r in ROLES_COMPARED if study.role(r) is None)
        tables.note(KEY, f"skipped: {why}, so there is no pair to compare")
        return
    both = f"{study.role_text('base')} and {study.role_text('compressed')}"
    if not study.q3_attacks:
        tables.note(KEY, f"skipped: the config crafts no attack on both {both}")
        return
    if all(m in study.models for m in pair):
        tables.rows["table4_models.csv"] = model_rows(results, pair, ratio_to=pair[0])
    rows, missing = complexity_rows(study, results)
    tables.rows["table5_gap.csv"] = gap_rows(study, results)
    tables.rows["table5_complexity.csv"] = rows
    if missing:
        tables.note(KEY, f"not measured ({both} share no transfer group, or the attack is missing "
                         f"on one of them): {', '.join(missing)}")
    table6 = [r for r in results.transfer if {r["target"], r["measured_on"]} == set(pair)
              and r["attack"] in study.q3_attacks]
    if table6:
        tables.rows["table6_transferability.csv"] = table6


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    if not study.q3_attacks:
        return ""
    original, compressed = models(study)
    if (original, compressed) == tuple(ROLES[r] for r in ROLES_COMPARED):
        pair = f"{compressed} is {original} after Network Trimming (Table IV)"
    else:
        pair = (f"Q3 compares {study.role_text('base')} with {study.role_text('compressed')}, which stands for its "
                f"compression (study.base, study.compressed; Table IV)")
    return (f"{pair}. Attacks crafted on both ({study.n_text} seeds each): {study.attacks_text(study.q3_attacks)}; "
            f"each set is measured on both models.")


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Figs. 5, 8, 9: per attack, on each of the base and the compressed model (one row each), normal and the sets
    targeting the inference model (solid) and the other model (dashed); each set has the colour of its target
    model (and its marker), the same in both rows."""
    if "table5_complexity.csv" not in tables.rows:
        return []
    pair = models(study)
    colors = dict(zip(pair, palette(len(pair))))
    markers = dict(zip(pair, MARKERS[1:]))  # MARKERS[0] is normal's
    out = []
    for attack in study.q3_attacks:
        rows = []
        for model in pair:
            curves = [normal_curve(results, model)]
            for target, style in ((model, "-"), (_other(model, pair), "--")):
                if study.measured(model, set_name(attack, target)):
                    curves.append(Curve(f"{attack} → {target}", results.aggregate(model, set_name(attack, target)),
                                        colors[target], style, marker=markers[target]))
            rows.append((f"{attack} on {model}", curves))
        cited = f" (cf. {PAPER_FIGURES[attack]})" if attack in PAPER_FIGURES else ""
        caption = (f"Q3{cited}: aggregated IPs on {study.role_text('base')} (top) and {study.role_text('compressed')} "
                   f"(bottom) of normal inputs and of "
                   f"{attack}'s sets targeting the inference model (solid) or the other model (dashed), each in the "
                   f"colour of its target model; 'a → t' is attack a crafted on model t.")
        out.append(Figure(f"q3_complexity_{attack}.png", rows_figure(rows, dpi), caption))
    return out


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    if not models(study):
        return []
    original, compressed = models(study)
    return [gap_case(evidence, attack, original=original, compressed=compressed) for attack in study.q3_attacks
            if study.measured(original, set_name(attack, compressed))
            and study.measured(compressed, set_name(attack, original))]


def gap_case(evidence: Evidence, attack: str, *, original: str = ROLES["base"],
             compressed: str = ROLES["compressed"]) -> Case:
    """Q3 (Table V as the paper reads it): on each model, the gap between the set targeting it and the set
    targeting the other model; the claim is gap(compressed) > gap(original), on the OIP. The intervals are
    ``{path}_gap_{original}``, ``{path}_gap_{compressed}`` (named by the models) and ``{path}_gap_difference``."""
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
    original, compressed = (tables.roles.get(r) for r in ROLES_COMPARED)
    if original is None or compressed is None:
        claim = (f"Q3 (literal, Table V): the sets targeting the inference model and targeting the other model have "
                 f"a larger gap between their OIPs on {role_text('compressed', compressed)} than on "
                 f"{role_text('base', original)}")
        missing = " and ".join(f"the {r} role (study.{r})" for r in ROLES_COMPARED if tables.roles.get(r) is None)
        return Finding(f"{claim}: cannot be checked: no model of this config has {missing}.", None, {})
    return model_complexity(tables.rows.get("table5_gap.csv", []), complex_model=original, simple_model=compressed)


def model_complexity(gap_rows: Iterable[Row], *, complex_model: str = ROLES["base"],
                     simple_model: str = ROLES["compressed"], path: str = "oip") -> Finding:
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
