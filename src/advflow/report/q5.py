"""Q5: How do transferable adversarial inputs differ from non-transferable ones? (paper, Figs. 7, 10, 11,
Tables VII-IX)

Three models of a transfer group (good_init, deep_conv, vgg_like by default; the first of ``transfer_groups`` with
three attacked models, the ensemble aside) each measure every set crafted on any of them. Table IX gives each set's
distance from normal on each inference model; ``q5_transferable.csv`` splits each set measured on another model
into its transferable inputs (successful on the target and misclassified by the inference model) and
non-transferable ones (classified correctly), each subset aggregated by the aggregate stage (rule
``aggregate_subsets``). The statistical cases: on each model, the set targeting it shifts its OIP more than a set
targeting another model (paired), and transferable inputs more than non-transferable ones (two groups). The
transferability table adds the sets of the ``ensemble`` role's model (``study.ensemble``) on its members.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from advflow.information import shifts
from advflow.information.aggregate import MIN_SUBSET, aggregated_distance
from advflow.workflow.catalog import TRANSFER_SUBSETS, set_name
from advflow.report import findings as fx
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report.findings import Finding, Row
from advflow.report.plotting import MARKERS, Curve, Figure, lighter, normal_curve, palette, rows_figure
from advflow.report.q2 import ATTACK_COLUMNS
from advflow.report.results import RunResults
from advflow.report.study import NORMAL, Study
from advflow.report.tables import TableSpec, Tables, attack_rows, distance_from_normal, gp_flag, model_rows

KEY = "q5"
TITLE = "Q5: How do transferable adversarial inputs differ from non-transferable ones?"
CLAIM = ("Q5: sets targeting the inference model shift its OIP more than sets targeting another model, and "
         "transferable inputs shift it more than non-transferable ones")
QUOTED = ("itself_minus_other", "transferable_minus_non_transferable")
#: The paper's figure of each attack (Fig. 7 in the text, Figs. 10 and 11 in its appendix).
PAPER_FIGURES = {"jsma": "Fig. 7", "fgsm": "Fig. 10", "cw": "Fig. 11"}
TRANSFER_COLUMNS = ("attack", "target", "measured_on", "successful", "transferred", "transferability")
TABLES = {
    "table7_models.csv": TableSpec(("model", "parameters", "test_accuracy"),
                                   "Table VII: the models of the transferability study."),
    "table8_attacks.csv": TableSpec(ATTACK_COLUMNS, "Table VIII: adversarial sets targeting the three models."),
    "table9_transfer.csv": TableSpec(
        ("attack", "target", "measured_on", "set", "normal", "iip_distance", "oip_distance", "gp_flag"),
        "Table IX: IIP and OIP distance from normal of each set (attack, target) on each inference model."),
    "q5_transferable.csv": TableSpec(
        ("attack", "target", "measured_on", "set", "subset", "inputs", "normal", "iip_distance", "oip_distance",
         "gp_flag"),
        f"Q5: distance from normal of the transferable and non-transferable inputs of each set on each other model "
        f"(each subset GP-aggregated by the aggregate stage; n/a: fewer than {MIN_SUBSET} inputs)."),
    "q5_transferability.csv": TableSpec(
        TRANSFER_COLUMNS,
        "Transferability within the three-model group and from the ensemble{+ensemble} to its members."),
}


def transfer_rows(study: Study, results: RunResults) -> list[Row]:
    """Table IX: each attack's set targeting each model of the group, measured on each model."""
    return [{**distance_from_normal(results, model, set_name(attack, target)), "attack": attack, "target": target}
            for attack in study.q5_attacks for target in study.q5_group for model in study.q5_group
            if study.measured(model, set_name(attack, target))]


def transferable_rows(study: Study, results: RunResults) -> list[Row]:
    """Per set crafted on T and measured on M != T: its transferable and non-transferable inputs' sizes and
    the distances of their aggregates (rule aggregate_subsets) from normal on M (NaN below MIN_SUBSET)."""
    rows = []
    for attack in study.q5_attacks:
        for target in study.q5_group:
            for model in study.q5_group:
                set_ = set_name(attack, target)
                if model == target or not study.measured(model, set_):
                    continue
                masks = results.transfer_masks(target, attack, model)
                normal = results.aggregate(model, NORMAL)
                for subset in TRANSFER_SUBSETS:
                    count = int(masks[subset].sum())
                    row = {"attack": attack, "target": target, "measured_on": model, "set": set_, "subset": subset,
                           "inputs": count, "normal": NORMAL, "iip_distance": math.nan, "oip_distance": math.nan,
                           "gp_flag": ""}
                    aggregated = results.subset_aggregate(target, attack, model, subset, count)
                    if aggregated is not None:
                        row.update(iip_distance=aggregated_distance(aggregated["iip"], normal["iip"]),
                                   oip_distance=aggregated_distance(aggregated["oip"], normal["oip"]),
                                   gp_flag=gp_flag(aggregated, normal))
                    rows.append(row)
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    if not study.q5_attacks:
        tables.note(KEY, "skipped: no transfer group of three attacked models shares an attack (transfer_groups, "
                         "attack_sets)")
        return
    group = study.q5_group
    tables.rows["table7_models.csv"] = model_rows(results, group)
    tables.rows["table8_attacks.csv"] = attack_rows(results, group, lambda t: study.q5_attacks)
    tables.rows["table9_transfer.csv"] = transfer_rows(study, results)
    tables.rows["q5_transferable.csv"] = transferable_rows(study, results)
    ensemble = study.role("ensemble")  # its sets transfer to its members (None: the config has no ensemble role)
    transfer = [r for r in results.transfer if r["measured_on"] in group and r["attack"] in study.q5_attacks
                and (r["target"] in group or r["target"] == ensemble)]
    if transfer:
        tables.rows["q5_transferability.csv"] = transfer


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    if not study.q5_attacks:
        return ""
    return (f"Models {', '.join(study.q5_group)} (Table VII); attacks on each ({study.n_text} seeds): "
            f"{study.attacks_text(study.q5_attacks)}; every set is measured on all three models. Transferable "
            f"inputs: successful on their target and misclassified by the inference model; non-transferable: "
            f"successful on the target, classified correctly by the inference model.")


def _cited(attack: str) -> str:
    return f" (cf. {PAPER_FIGURES[attack]})" if attack in PAPER_FIGURES else ""


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Per attack (the paper's Fig. 7 for JSMA, 10 for FGSM, 11 for C&W): on each model of the group, normal
    and the sets targeting each model (the colour of its target); and the transferable (solid) and
    non-transferable (dotted, a lighter shade) inputs of the sets crafted on the other models."""
    if "table9_transfer.csv" not in tables.rows:
        return []
    group = list(study.q5_group)
    colors = dict(zip(group, palette(len(group))))
    # Each target's marker, the same in every row (MARKERS[0] is normal's); its non-transferable subset another.
    markers = {(t, s): MARKERS[(1 + i + len(group) * j) % len(MARKERS)] for i, t in enumerate(group)
               for j, s in enumerate(TRANSFER_SUBSETS)}
    counts = {(r["attack"], r["target"], r["measured_on"], r["subset"]): r["inputs"]
              for r in tables.rows.get("q5_transferable.csv", [])}
    out = []
    for attack in study.q5_attacks:
        rows, split, missing = [], [], []
        for model in study.q5_group:
            curves, subsets = [normal_curve(results, model)], [normal_curve(results, model)]
            for target in study.q5_group:
                if study.measured(model, set_name(attack, target)):
                    curves.append(Curve(f"{attack} → {target}", results.aggregate(model, set_name(attack, target)),
                                        colors[target], "-" if target == model else "--",
                                        marker=markers[target, TRANSFER_SUBSETS[0]]))
                for subset, style in zip(TRANSFER_SUBSETS, ("-", ":")):
                    count = counts.get((attack, target, model, subset))
                    if count is None:
                        continue
                    name = subset.replace("_", "-")
                    aggregated = results.subset_aggregate(target, attack, model, subset, count)
                    if aggregated is None:
                        missing.append(f"{name} {attack} → {target} on {model} (n={count})")
                    else:
                        shade = colors[target] if subset == TRANSFER_SUBSETS[0] else lighter(colors[target])
                        subsets.append(Curve(f"{attack} → {target}, {name} (n={count})", aggregated, shade, style,
                                             marker=markers[target, subset]))
            rows.append((f"{attack} on {model}", curves))
            split.append((f"{attack} on {model}", subsets))
        out.append(Figure(
            f"q5_transfer_{attack}.png", rows_figure(rows, dpi),
            f"Q5{_cited(attack)}: aggregated IPs on each of {', '.join(study.q5_group)} (one row per inference model) "
            f"of normal inputs and of {attack}'s sets targeting each model, in the colour of the target (solid: the "
            f"inference model itself; dashed: another model)."))
        out.append(Figure(
            f"q5_transferable_{attack}.png", rows_figure(split, dpi),
            f"Q5: aggregated IPs on each inference model of the transferable (solid) and non-transferable (dotted, "
            f"lighter) inputs of {attack}'s sets crafted on the other models (successful on their target; "
            f"transferable: also misclassified by the inference model), with normal inputs."
            + (f" Not shown (fewer than {MIN_SUBSET} inputs): {'; '.join(missing)}." if missing else "")))
    return out


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    out = []
    group = study.q5_group
    for attack in study.q5_attacks:
        out += [itself_vs_other_case(evidence, attack, model, other) for model in group for other in group
                if other != model and study.measured(model, set_name(attack, other))]
        out += [transferable_case(evidence, attack, target, model) for target in group for model in group
                if model != target and study.measured(model, set_name(attack, target))]
    return out


def itself_vs_other_case(evidence: Evidence, attack: str, model: str, other: str) -> Case:
    """Q5 (Table IX): on ``model``, the set targeting it shifts the OIP more than the set targeting ``other``
    (paired over the seeds successful on both targets)."""
    own, foreign = set_name(attack, model), set_name(attack, other)
    label = f"{attack} on {model}: targeting {model} vs {other}"
    index = np.flatnonzero(evidence.success(model, attack) & evidence.success(other, attack))
    if index.size < MIN_INPUTS:
        return premise("q5", label, int(index.size), f"{index.size} seeds successful on both targets")
    if no_information(evidence, model, "oip"):
        return Case("q5", label, NO_INFORMATION, int(index.size), notes=["the OIP carries no information"])
    a = evidence.deltas(model, own, NORMAL, "oip")[index]
    b = evidence.deltas(model, foreign, NORMAL, "oip")[index]

    def statistics(i: np.ndarray) -> dict[str, float]:
        sa, sb = shifts.shift(a[i]), shifts.shift(b[i])
        return {"itself_oip_shift": sa, "other_oip_shift": sb, "itself_minus_other": sa - sb}

    case = Case("q5", label, INCONCLUSIVE, int(index.size), evidence.bootstrap(statistics, index.size))
    case.verdict = decided(case, ["itself_minus_other"])
    return case


def transferable_case(evidence: Evidence, attack: str, target: str, model: str) -> Case:
    """Q5: among the inputs of ``attack@target`` successful on the target, those ``model`` also misclassifies
    (transferable) shift ``model``'s OIP further than those it classifies correctly."""
    set_ = set_name(attack, target)
    label = f"{attack} → {target} on {model}: transferable vs non-transferable"
    success = evidence.success(target, attack)
    paths = evidence.results.input_paths(model, set_)
    fooled = paths.prediction != paths.label
    groups = {"transferable": np.flatnonzero(success & fooled), "non_transferable": np.flatnonzero(success & ~fooled)}
    sizes = {k: int(v.size) for k, v in groups.items()}
    if min(sizes.values()) < MIN_INPUTS:
        case = premise("q5", label, sum(sizes.values()), f"{sizes['transferable']} transferable and "
                        f"{sizes['non_transferable']} non-transferable inputs; at least {MIN_INPUTS} of each are "
                        f"needed")
        case.numbers = sizes
        return case
    if no_information(evidence, model, "oip"):
        return Case("q5", label, NO_INFORMATION, sum(sizes.values()), notes=["the OIP carries no information"])
    d = evidence.deltas(model, set_, NORMAL, "oip")
    t, u = d[groups["transferable"]], d[groups["non_transferable"]]
    interval = shifts.two_sample_bootstrap(lambda i, j: shifts.shift(t[i]) - shifts.shift(u[j]), len(t), len(u),
                                           resamples=evidence.resamples, seed=evidence.seed)
    case = Case("q5", label, INCONCLUSIVE, sum(sizes.values()), {"transferable_minus_non_transferable": interval},
                numbers=sizes)
    case.verdict = decided(case, ["transferable_minus_non_transferable"])
    return case


def literal(tables: Tables) -> Finding:
    return transferability(tables.rows.get("table9_transfer.csv", []), tables.rows.get("q5_transferable.csv", []))


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
    table9 = fx.checked_rows(transfer_rows, "attack", "target", "measured_on", "oip_distance")
    split = fx.checked_rows(transferable_rows, "attack", "target", "measured_on", "subset", "oip_distance")

    cases: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in split:
        cases.setdefault((str(r["attack"]), str(r["target"]), str(r["measured_on"])), {})[str(r["subset"])] = \
            float(r["oip_distance"]) if fx.finite(r["oip_distance"]) else math.nan
    complete = {k: v for k, v in cases.items()
                if fx.finite(v.get("transferable", math.nan), v.get("non_transferable", math.nan))}
    tied1 = [k for k, v in complete.items() if v["transferable"] == v["non_transferable"]]
    complete = {k: v for k, v in complete.items() if k not in tied1}
    further = [k for k, v in complete.items() if v["transferable"] > v["non_transferable"]]
    phrase1, part1 = fx.tally(len(further), len(complete), "case")

    oip = {(str(r["attack"]), str(r["target"]), str(r["measured_on"])): float(r["oip_distance"])
           for r in table9 if fx.finite(r["oip_distance"])}
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
    phrase2, part2 = fx.tally(len(larger), len(comparisons), "comparison")

    holds = fx.combine(part1, part2)
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
    lacking_text = f"; {lacking} {fx.plural(lacking, 'case')} lack two inputs in a subset" if lacking else ""
    if holds and (part1 is None or part2 is None):
        overall = "holds as far as it can be checked"
    detail1 = "; ".join(f"{set_name(a, t)} on {m}: {fx.number(v['transferable'])} vs {fx.number(v['non_transferable'])}"
                        for (a, t, m), v in complete.items())
    text = (f"{claim}: {overall}. Transferable vs non-transferable OIP distance from normal: {phrase1}"
            f"{' (' + detail1 + ')' if detail1 else ''}{fx.ties(len(tied1), 'case')}"
            f"{lacking_text}"
            f". Sets targeting the inference model vs sets targeting another model (Table IX): {phrase2}")
    if comparisons:
        text += " (" + "; ".join(f"{a} on {m}: {fx.number(own)} targeting {m} vs {fx.number(other)} targeting {t}"
                                 for a, m, t, own, other in comparisons) + ")"
    text += fx.ties(len(tied2), "comparison")
    return Finding(text + ".", holds, numbers)
