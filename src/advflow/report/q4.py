"""Q4: Why are defenses often vulnerable to adaptive attacks? (paper, Fig. 6)

On the defensively distilled model (the ``distilled`` role's, ``study.distilled``: distilled by default), the
regular JSMA (``jsma_control``: T = 1, at the adaptive attack's theta and gamma) and the adaptive JSMA are compared
with normal, each beside its random control. The paper starts from a distilled model on which the regular JSMA
fails everywhere; whether this run meets that premise is checked and said (:data:`PREMISE_SUCCESS`). Per-input
perturbation sizes (``q4_perturbation.csv``) allow the comparison at matched size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from advflow.information import shifts
from advflow.workflow.catalog import ROLES, control_name, control_set, set_name
from advflow.config import ConfigError, model_settings
from advflow.workflow.io import open_h5
from advflow.report import findings as fx
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, PREMISE, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report.findings import Finding, Row
from advflow.report.plotting import Curve, Figure, lighter, normal_curve, palette, rows_figure
from advflow.report.results import RunResults
from advflow.report.study import NORMAL, Study, role_suffix
from advflow.report.tables import TableSpec, Tables, distance_from_normal, without_controls

KEY = "q4"
TITLE = "Q4: Why are defenses often vulnerable to adaptive attacks?"
CLAIM = ("Q4: on the defensively distilled model{+distilled} the adaptive JSMA shifts the OIP more than the regular "
         "JSMA (all attacked inputs, as the paper)")
QUOTED = ("adaptive_minus_regular", "adaptive_oip_shift", "regular_oip_shift", "excess_over_control_difference")
#: The role whose model Q4 attacks.
ROLE = "distilled"
#: The regular JSMA at the adaptive one's theta, gamma, and the adaptive JSMA.
ATTACKS = ("jsma_control", "jsma_adaptive")
#: The regular JSMA "fails to generate any successful adversarial inputs" on the distilled model (paper, Q4);
#: a success rate at or below this counts as that premise met.
PREMISE_SUCCESS = 0.05
TABLES = {
    "q4_defense.csv": TableSpec(
        ("measured_on", "attack", "set", "normal", "iip_distance", "oip_distance", "success_rate", "attacked",
         "gp_flag"),
        "Q4: distance from normal on the distilled model{+distilled} of the regular (control) and adaptive JSMA "
        "sets, with their success rates."),
    "q4_perturbation.csv": TableSpec(
        ("attack", "attacked", "successful", "success_rate", "unchanged", "l0_mean", "l0_median", "l2_mean",
         "l2_median"),
        "Q4: perturbation size per input on the distilled model{+distilled} (L0 = changed pixels, L2 in model "
        "space; mean and median over all attacked inputs) and inputs left unchanged."),
}


def _present(study: Study) -> list[str]:
    return [a for a in ATTACKS if a in study.attacks_on(study.role(ROLE))]


def defense_rows(study: Study, results: RunResults) -> list[Row]:
    """The regular (control) and adaptive JSMA sets on the distilled model, and their controls, against normal."""
    rows = []
    model = study.role(ROLE)
    for attack in _present(study):
        for name in (attack, control_name(attack)):
            row = results.attack_row(model, name) or {}
            rows.append({**distance_from_normal(results, model, set_name(name, model)), "attack": name,
                         "success_rate": float(row.get("success_rate", math.nan)), "attacked": row.get("attacked", "")})
    return rows


def perturbation_rows(study: Study, results: RunResults) -> list[Row]:
    """Per-input perturbation size of each attack on the distilled model (and its control): L0 / L2 mean and
    median over all attacked inputs, and how many inputs were left unchanged (L0 = 0)."""
    rows = []
    model = study.role(ROLE)
    for attack in _present(study):
        for name in (attack, control_name(attack)):
            with open_h5(results.files.adversarial(model, name)) as h5:
                success, l0, l2 = h5["success"][:].astype(bool), h5["norms_r/l0"][:], h5["norms_r/l2"][:]
            rows.append({"attack": name, "attacked": int(success.size), "successful": int(success.sum()),
                         "success_rate": float(success.mean()) if success.size else math.nan,
                         "unchanged": int((l0 == 0).sum()), "l0_mean": float(l0.mean()),
                         "l0_median": float(np.median(l0)), "l2_mean": float(l2.mean()),
                         "l2_median": float(np.median(l2))})
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    model, named = study.role(ROLE), study.chosen(ROLE)
    if named is None:
        tables.note(KEY, f"skipped: {study.role_missing(ROLE)}, so there are no sets to compare")
        return
    if not _present(study):
        missing = f"; {study.role_missing(ROLE)}" if model is None else study.role_note(ROLE)
        tables.note(KEY, f"skipped: attack_sets.{named} has neither jsma_control nor jsma_adaptive{missing}")
        return
    tables.rows["q4_defense.csv"] = defense_rows(study, results)
    tables.rows["q4_perturbation.csv"] = perturbation_rows(study, results)
    absent = [a for a in ATTACKS if a not in study.attacks_on(model)]
    if absent:
        tables.note(KEY, f"attack_sets.{model}{study.role_note(ROLE)} lacks {', '.join(absent)}: the comparison "
                         f"needs both")


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    if not _present(study):
        return ""
    try:
        temperature = f"T = {model_settings(dict(study.config), study.role(ROLE))['temperature']:g}"
    except (ConfigError, KeyError, TypeError, ValueError):
        temperature = "T as configured"
    return (f"Defensive distillation ({temperature}); attacks on the distilled model{study.role_suffix(ROLE)} "
            f"({study.n_text} seeds): "
            f"{study.attacks_text(_present(study))}. jsma_control is the regular JSMA (T = 1) at the adaptive "
            f"attack's θ and γ; the aggregates include successful and failed inputs.")


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Fig. 6: normal, the regular (control) JSMA and the adaptive JSMA on the distilled model."""
    if "q4_defense.csv" not in tables.rows:
        return []
    attacks = _present(study)
    model = study.role(ROLE)
    curves = [normal_curve(results, model)]
    for a, c in zip(attacks, palette(len(ATTACKS))):
        curves.append(Curve(a, results.aggregate(model, set_name(a, model)), c))
        curves.append(Curve(f"{a} control", results.aggregate(model, set_name(control_name(a), model)), lighter(c),
                            ":", band=False, ioc=False))
    caption = (f"Q4 (cf. Fig. 6): aggregated IPs on the defensively distilled model{study.role_suffix(ROLE)} of "
               f"normal inputs and of the "
               f"adversarial inputs (successful and failed) of {' and '.join(attacks)}, each with its random control "
               f"(dotted, a lighter shade of its colour; left out of the IOC panel).")
    return [Figure("q4_defense.png", rows_figure([(model, curves)], dpi), caption)]


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    if len(_present(study)) < len(ATTACKS):
        return []
    return [adaptive_case(evidence, model=study.role(ROLE), adaptive=ATTACKS[1], regular=ATTACKS[0])]


def adaptive_case(evidence: Evidence, *, model: str = ROLES[ROLE], adaptive: str = "jsma_adaptive",
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
        return premise("q4", f"{adaptive} vs {regular}", n, f"{n} attacked inputs")
    if no_information(evidence, model, "oip"):
        return Case("q4", f"{adaptive} vs {regular}", NO_INFORMATION, n, notes=["the OIP carries no information"])
    d = {a: evidence.deltas(model, set_name(a, model), NORMAL, "oip") for a in (adaptive, regular)}
    c = {a: evidence.deltas(model, control_set(set_name(a, model)), NORMAL, "oip") for a in (adaptive, regular)}

    def statistics(i: np.ndarray) -> dict[str, float]:
        sa, sr = shifts.shift(d[adaptive][i]), shifts.shift(d[regular][i])
        ca, cr = shifts.shift(c[adaptive][i]), shifts.shift(c[regular][i])
        return {"adaptive_oip_shift": sa, "regular_oip_shift": sr, "adaptive_minus_regular": sa - sr,
                "adaptive_control_oip_shift": ca, "regular_control_oip_shift": cr,
                "excess_over_control_difference": (sa - ca) - (sr - cr)}

    case = Case("q4", f"{adaptive} vs {regular}", INCONCLUSIVE, n, evidence.bootstrap(statistics, n),
                numbers=numbers)
    case.verdict = decided(case, ["adaptive_minus_regular"])
    case.claims["excess_over_control_difference"] = shifts.decide(case.intervals["excess_over_control_difference"])
    regular_rate = numbers[regular]["success_rate"]
    numbers["premise_met"] = regular_rate <= PREMISE_SUCCESS
    if not numbers["premise_met"]:
        case.notes.append(f"comparison as computed: {case.verdict}")
        case.verdict = PREMISE
        case.notes.append(f"the paper's premise is not met on this run: the regular JSMA succeeds on "
                          f"{100 * regular_rate:.1f} % of the inputs (paper: none); the distilled model"
                          f"{role_suffix(ROLE, model)} here is "
                          f"not the robust model the paper's Q4 starts from")
    return case


def literal(tables: Tables) -> Finding:
    return adaptive_attack(without_controls(tables.rows.get("q4_defense.csv", [])), adaptive=ATTACKS[1],
                           regular=ATTACKS[0], model=tables.roles.get(ROLE))


def adaptive_attack(defense_rows: Iterable[Row], *, adaptive: str = "jsma_adaptive",
                    regular: str = "jsma_control", model: str | None = ROLES[ROLE]) -> Finding:
    """Q4 (Fig. 6): on the defensively distilled model the adaptive JSMA shifts the OIP further from
    normal than the regular JSMA (at the same theta and gamma).

    Rows of ``q4_defense.csv``: ``attack, iip_distance, oip_distance, success_rate``; ``model``: the distilled
    role's, which the text names (None: the config has none).
    """
    rows = fx.checked_rows(defense_rows, "attack", "oip_distance", "success_rate")
    by_attack = {str(r["attack"]): r for r in rows}
    where = f"the distilled model{role_suffix(ROLE, model)}"
    claim = (f"Q4: on the defensively distilled model{role_suffix(ROLE, model)}, the adaptive JSMA's OIP deviates "
             f"further from normal than the regular JSMA's")
    if model is None:
        return Finding(f"{claim}: cannot be checked: no model of this config has the {ROLE} role "
                       f"(study.{ROLE}).", None, {})
    if adaptive not in by_attack or regular not in by_attack or not fx.finite(
            by_attack[adaptive]["oip_distance"], by_attack[regular]["oip_distance"]):
        return Finding(f"{claim}: cannot be checked: both {adaptive} and {regular} sets on {where} "
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
    text = (f"{claim}: {verdict} (OIP distance {fx.number(a['oip_distance'])} for {adaptive} vs "
            f"{fx.number(r['oip_distance'])} for {regular}"
            + (f"; IIP {fx.number(numbers['iip_adaptive'])} vs {fx.number(numbers['iip_regular'])}"
               if "iip_adaptive" in numbers else "")
            + f"). Success rates on {where}: {adaptive} {fx.percent(a['success_rate'])}, "
              f"{regular} {fx.percent(r['success_rate'])}.")
    return Finding(text, holds, numbers)
