"""Q2: How do adversarial inputs of different attacks differ in their mechanisms? (paper, Fig. 4, Tables II, III)

Every attack on the ``base`` role's model (``study.base``: good_init by default) is compared with normal (the clean
seeds) on that model, beside its random control of the same size per input. Table III gives the distances of the
aggregated paths; the statistical case asks, over the attack's successful inputs, whether the OIP shifts more than
the IIP and more than under the control.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from advflow.attacks import registry as attack_registry
from advflow.information import shifts
from advflow.workflow.catalog import control_name, control_set, set_name
from advflow.report import findings as fx
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, PREMISE, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report.findings import Finding, Row
from advflow.report.plotting import TRAIN_COLOR, Curve, Figure, lighter, normal_curve, palette, rows_figure
from advflow.report.results import RunResults
from advflow.report.study import NORMAL, NORMAL_TRAIN, Study
from advflow.report.tables import TableSpec, Tables, attack_rows, distance_from_normal, success_rate, without_controls

KEY = "q2"
TITLE = "Q2: How do adversarial inputs of different attacks differ in their mechanisms?"
CLAIM = ("Q2: adversarial inputs shift the OIP more than the IIP, and more than a random perturbation of the same "
         "size does (paired, standardized shifts of each attack's successful inputs on {base})")
QUOTED = ("oip_minus_iip", "oip_minus_control", "oip_shift", "iip_shift", "control_oip_shift")
#: The role whose model Q2 attacks; Table II adds the ``compressed`` role's (Q3's pair).
ROLE = "base"
ATTACK_COLUMNS = ("target", "attack", "norm", "distortion", "distortion_l2", "confidence", "success_rate", "attacked")
TABLES = {
    "table2_attacks.csv": TableSpec(
        ATTACK_COLUMNS,
        "Table II: adversarial sets on {base} and {compressed}: distortion ‖r‖p/‖x‖p in the attack's norm, "
        "distortion (L2), confidence (mean softmax probability of the adversarial class over successful inputs), "
        "success rate."),
    "table3_distance_from_normal.csv": TableSpec(
        ("measured_on", "attack", "set", "normal", "iip_distance", "oip_distance", "success_rate", "gp_flag"),
        "Table III: IIP and OIP distance of each attack's aggregated paths on {base} from normal (normal_test, "
        "the clean seeds); first row: normal_train for scale."),
}
#: Attack families, one row each in the figure (as the paper's Figs. 8-11 group them by norm): the registry's.
ATTACK_FAMILIES = tuple((family, tuple(n for n in attack_registry.names() if attack_registry.get(n).family == family))
                        for family in dict.fromkeys(attack_registry.get(n).family for n in attack_registry.names()))


def distance_rows(study: Study, results: RunResults) -> list[Row]:
    """Table III: normal_train, then each attack set on the base model and its control, against normal."""
    model = study.role(ROLE)
    rows = [{**distance_from_normal(results, model, NORMAL_TRAIN), "attack": "", "success_rate": math.nan}]
    for attack in study.attacks_on(model):
        for name in (attack, control_name(attack)):  # each attack, then its random control
            rows.append({**distance_from_normal(results, model, set_name(name, model)), "attack": name,
                         "success_rate": success_rate(results, model, name)})
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    model = study.role(ROLE)
    if model is None:
        tables.note(KEY, f"skipped: {study.role_missing(ROLE)}, so there are no attack sets to compare")
        return
    if not study.attacks_on(model):
        tables.note(KEY, f"skipped: attack_sets.{model} is empty{study.role_note(ROLE)}, so there are no attack "
                         f"sets to compare")
        return
    tables.rows["table3_distance_from_normal.csv"] = distance_rows(study, results)
    targets = [model] + ([study.role("compressed")] if study.q3_attacks else [])
    table2 = attack_rows(results, targets, lambda t: study.attacks_on(t) if t == model else study.q3_attacks)
    if table2:
        tables.rows["table2_attacks.csv"] = table2


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    model = study.role(ROLE)
    if not study.attacks_on(model):
        return ""
    return (f"Attacks on {study.role_text(ROLE)}, each on the same {study.n_text} seeds (test inputs every attacked "
            f"model classifies correctly): {study.attacks_text(study.attacks_on(model))}. Settings in the models' "
            f"[-1, 1] space. Normal = {NORMAL} (the clean seeds); the paper's normal profile was N random training "
            f"inputs, {NORMAL_TRAIN} here, whose distance from {NORMAL} is Table III's first row.")


def families(attacks: Iterable[str]) -> list[tuple[str, list[str]]]:
    """The attack families present among ``attacks``, in :data:`ATTACK_FAMILIES` order, then any other."""
    attacks = list(attacks)
    found = [(name, [a for a in members if a in attacks]) for name, members in ATTACK_FAMILIES]
    grouped = {a for _, members in found for a in members}
    found.append(("other attacks", [a for a in attacks if a not in grouped]))
    return [(name, members) for name, members in found if members]


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Fig. 4: normal and each attack's aggregated paths on the base model, one row per attack family (each
    attack keeps one colour across rows and its control is dotted in a lighter shade of it)."""
    if "table3_distance_from_normal.csv" not in tables.rows:
        return []
    model = study.role(ROLE)
    attacks = study.attacks_on(model)
    colors = dict(zip(attacks, palette(len(attacks))))
    rows = []
    for family, members in families(attacks):
        curves = [normal_curve(results, model),
                  Curve(f"normal ({NORMAL_TRAIN})", results.aggregate(model, NORMAL_TRAIN), TRAIN_COLOR, "--",
                        band=False, ioc=False)]
        for a in members:
            curves.append(Curve(a, results.aggregate(model, set_name(a, model)), colors[a]))
            curves.append(Curve(f"{a} control", results.aggregate(model, set_name(control_name(a), model)),
                                lighter(colors[a]), ":", band=False, ioc=False))
        rows.append((f"{family} on {model}", curves))
    caption = (f"Q2 (cf. Fig. 4): aggregated IIP, OIP and IOC on {study.role_text(ROLE)}, one row per attack "
               f"family, of the clean seeds ({NORMAL}, black), the normal training inputs ({NORMAL_TRAIN}, dashed "
               f"grey) and the adversarial sets of {', '.join(attacks)} (GP posterior mean at each conv layer, shaded "
               f"95 % band), each with its random control of the same size per input (dotted, a lighter shade of its "
               f"colour, no band; left out of the IOC panel, whose numbers are the conv layers k of {NORMAL}).")
    return [Figure("q2_attacks.png", rows_figure(rows, dpi), caption)]


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    model = study.role(ROLE)
    return [attack_case(evidence, model, attack) for attack in study.attacks_on(model)]


def attack_case(evidence: Evidence, model: str, attack: str) -> Case:
    """Q2 for one attack on ``model``: over its successful inputs, OIP shift > IIP shift and OIP shift > the
    control's OIP shift (both differences' intervals above 0)."""
    set_ = set_name(attack, model)
    success = evidence.success(model, attack)
    index = np.flatnonzero(success)
    if index.size < MIN_INPUTS:
        return premise("q2", attack, int(index.size), f"{index.size} successful adversarial inputs of "
                        f"{success.size}; at least {MIN_INPUTS} are needed")
    if no_information(evidence, model, "oip"):
        return Case("q2", attack, NO_INFORMATION, int(index.size), notes=[
            f"every normal input has the same OIP on {model} (e.g. 1x1 target maps): the OIP carries no information"])
    oip = evidence.deltas(model, set_, NORMAL, "oip")[index]
    iip = evidence.deltas(model, set_, NORMAL, "iip")[index]
    control = evidence.deltas(model, control_set(set_), NORMAL, "oip")[index]
    control_iip = evidence.deltas(model, control_set(set_), NORMAL, "iip")[index]

    def statistics(i: np.ndarray) -> dict[str, float]:
        o, s, c = shifts.shift(oip[i]), shifts.shift(iip[i]), shifts.shift(control[i])
        return {"oip_shift": o, "iip_shift": s, "control_oip_shift": c,
                "control_iip_shift": shifts.shift(control_iip[i]),
                "oip_minus_iip": o - s, "oip_minus_control": o - c}

    case = Case("q2", attack, INCONCLUSIVE, int(index.size), evidence.bootstrap(statistics, index.size))
    case.verdict = decided(case, ["oip_minus_iip", "oip_minus_control"])
    if not np.any(evidence.mu(model, control_set(set_), "oip")[index] != evidence.mu(model, NORMAL, "oip")[index]):
        case.verdict = PREMISE
        case.notes.append("the control set's paths equal the seeds' (no input was perturbed)")
    return case


def literal(tables: Tables) -> Finding:
    return attack_mechanisms(without_controls(tables.rows.get("table3_distance_from_normal.csv", [])))


def attack_mechanisms(distance_rows: Iterable[Row]) -> Finding:
    """Q2 (Fig. 4, Table III): adversarial inputs shift the OIP away from normal more than the IIP, and
    different attacks shift it by different amounts.

    Rows of ``table3_distance_from_normal.csv``: ``attack, set, iip_distance, oip_distance``; a row with
    an empty ``attack`` is the normal-vs-normal baseline (normal_train against the clean seeds), quoted
    for scale. The claim holds when every attack's OIP distance exceeds its IIP distance.
    """
    rows = fx.checked_rows(distance_rows, "attack", "iip_distance", "oip_distance")
    measured = [r for r in rows if r["attack"] and fx.finite(r["iip_distance"], r["oip_distance"])]
    attacks = [r for r in measured if float(r["oip_distance"]) != float(r["iip_distance"])]
    tied = [r for r in measured if float(r["oip_distance"]) == float(r["iip_distance"])]
    baseline = [r for r in rows if not r["attack"] and fx.finite(r["oip_distance"])]
    above = [r for r in attacks if float(r["oip_distance"]) > float(r["iip_distance"])]
    phrase, holds = fx.tally(len(above), len(attacks), "attack")
    claim = "Q2: the OIPs of adversarial inputs deviate from normal more than their IIPs do (Table III)"
    numbers: dict[str, Any] = {
        "attacks_oip_above_iip": len(above), "attacks": len(attacks), "attacks_tied": [r["attack"] for r in tied],
        "oip": {r["attack"]: float(r["oip_distance"]) for r in attacks},
        "iip": {r["attack"]: float(r["iip_distance"]) for r in attacks},
    }
    if holds is None:
        left_out = f" ({', '.join(r['attack'] for r in tied)} left out: equal IIP and OIP distances)" if tied else ""
        return Finding(f"{claim}: {phrase}{left_out}.", None, numbers)
    cases = "; ".join(f"{r['attack']}: OIP {fx.number(r['oip_distance'])} vs IIP {fx.number(r['iip_distance'])}"
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
        text += (f" Different attacks move the OIP by different amounts: from {fx.number(low['oip_distance'])} "
                 f"({low['attack']}) to {fx.number(high['oip_distance'])} ({high['attack']})"
                 f"{', a factor of ' + fx.number(ratio) if math.isfinite(ratio) else ''}.")
    if baseline:
        base = float(baseline[0]["oip_distance"])
        beyond = sum(float(r["oip_distance"]) > base for r in measured)
        numbers.update(baseline_oip=base, attacks_beyond_baseline=beyond)
        text += (f" For scale, the normal training inputs' OIP lies {fx.number(base)} from the clean seeds'; "
                 f"{beyond} of {len(measured)} {fx.plural(len(measured), 'attack')} move it further.")
    return Finding(text, holds, numbers)
