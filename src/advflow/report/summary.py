"""The report's first screen: what a reader takes away, with its numbers (docs/method.md, "The report").

Per question the claim, the statistical verdict, the interval(s) that decided it in words and N; the paper's raw
comparison beside it, secondary; a smoke-test warning when N is below :data:`USEFUL_N`; the defenses in a few
lines (what the defense costs on clean images, one detector × attack matrix) and seed 001 in a few lines; and the
run's provenance (advflow's version, the source commit, a digest of the resolved config, the device, library
versions). The same content goes to ``findings.json`` (:func:`record`), so a script reads what the page shows.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advflow.attacks import registry as attack_registry
from advflow.information.shifts import FAILS, HOLDS, INCONCLUSIVE, Interval
from advflow.report import findings as fx
from advflow.report.adaptive import rate_text
from advflow.report.defense import read_rows
from advflow.report.evidence import Case
from advflow.report.findings import Finding
from advflow.report.study import Study, fill, fill_names
from advflow.workflow.catalog import CONTROL_PREFIX

#: Below this many inputs per profile a run is a smoke test: the bootstrap's coverage was measured at N = 50
#: (advflow.information.shifts), most cases then have too few successful inputs to be tested, and the paper used 200.
USEFUL_N = 50
#: Below this many seeds the defense stage's rates carry intervals too wide to compare with seed 003's (N_d = 1,000).
USEFUL_DEFENSE_N = 100
#: How many cases of a question the summary spells out (the section lists all of them).
CASES_SAID = 2

#: Each compared quantity in words (the names of ``intervals.csv``); a difference reads "A − B"; ``{role}``: that
#: role's model's name (:func:`advflow.report.study.fill_names`).
QUANTITY_WORDS = {
    "oip_shift": "OIP shift", "iip_shift": "IIP shift",
    "control_oip_shift": "control's OIP shift", "control_iip_shift": "control's IIP shift",
    "oip_minus_iip": "OIP shift − IIP shift", "oip_minus_control": "OIP shift − control's OIP shift",
    "iip_minus_control": "IIP shift − control's IIP shift",
    "oip_gap_difference": "OIP gap on {compressed} − on {base}",
    "iip_gap_difference": "IIP gap on {compressed} − on {base}",
    "adaptive_oip_shift": "adaptive JSMA's OIP shift", "regular_oip_shift": "regular JSMA's OIP shift",
    "adaptive_minus_regular": "adaptive − regular JSMA's OIP shift",
    "adaptive_control_oip_shift": "adaptive JSMA's control's OIP shift",
    "regular_control_oip_shift": "regular JSMA's control's OIP shift",
    "excess_over_control_difference": "adaptive − regular JSMA's excess over its control",
    "itself_oip_shift": "OIP shift of the set targeting the model itself",
    "other_oip_shift": "OIP shift of the set targeting the other model",
    "itself_minus_other": "OIP shift targeting itself − targeting the other model",
    "transferable_oip_shift": "transferable inputs' OIP shift",
    "non_transferable_oip_shift": "non-transferable inputs' OIP shift",
    "transferable_minus_non_transferable": "transferable − non-transferable inputs' OIP shift",
}

#: Why a percentile interval can miss its own estimate, said beside every such interval.
OUTSIDE = ("the estimate lies outside its percentile interval: a shift averages |mean Δ| over layers, and "
           "resampling adds spread to each |mean|, so near 0 the bootstrap distribution sits above the estimate "
           "(and a difference of two shifts can be pushed either way); the verdict reads the interval")


def quantity_words(name: str, roles: Mapping[str, str | None] | None = None) -> str:
    """A quantity of ``intervals.csv`` in words, e.g. ``oip_gap_good_init`` -> "OIP gap on good_init", with the
    models of the study's ``roles`` (:attr:`advflow.report.study.Study.roles`; the defaults without)."""
    if name in QUANTITY_WORDS:
        return fill_names(QUANTITY_WORDS[name], roles)
    for path in ("oip", "iip"):
        if name.startswith(f"{path}_gap_"):
            return f"{path.upper()} gap on {name[len(path) + 5:]}"
    return name.replace("_minus_", " − ").replace("_", " ")


def outside(interval: Interval) -> bool:
    """Whether a finite interval misses its own estimate."""
    return interval.finite and not interval.lower <= interval.estimate <= interval.upper


def interval_words(name: str, interval: Interval, verdict: str = "",
                   roles: Mapping[str, str | None] | None = None) -> str:
    """``"OIP shift − IIP shift 0.12 [0.03, 0.25]: above 0"`` (the verdict's reading), with the note when the
    estimate lies outside its interval; ``roles``: as :func:`quantity_words`'s."""
    reading = {HOLDS: "above 0", FAILS: "below 0", INCONCLUSIVE: "contains 0"}.get(verdict, "")
    text = f"{quantity_words(name, roles)} {interval.text()}" + (f": {reading}" if reading else "")
    return text + (" †" if outside(interval) else "")


def case_summary(case: Case, roles: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """One case as the summary and ``findings.json`` give it: verdict, N, the deciding intervals in words (with the
    models of ``roles``, :func:`quantity_words`)."""
    deciding = [{"quantity": name, "words": quantity_words(name, roles), "estimate": case.intervals[name].estimate,
                 "lower": case.intervals[name].lower, "upper": case.intervals[name].upper, "verdict": verdict,
                 "outside_interval": outside(case.intervals[name]),
                 "text": interval_words(name, case.intervals[name], verdict, roles)}
                for name, verdict in case.claims.items() if name in case.intervals]
    return {"case": case.case, "verdict": case.verdict, "inputs": case.inputs, "deciding": deciding,
            "notes": list(case.notes)}


def _said_first(cases: Sequence[Case]) -> list[Case]:
    """The cases the summary spells out: decided ones (holds/fails) before inconclusive before untested."""
    rank = {HOLDS: 0, FAILS: 0, INCONCLUSIVE: 1}
    return sorted(cases, key=lambda c: rank.get(c.verdict, 2))[:CASES_SAID]


def question_summary(question: Any, finding: Finding, literal: Finding, cases: Sequence[Case],
                     roles: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """A question's claim (naming the models of the study's ``roles``), verdict, tally of its cases, N (range of
    inputs per case), and its first cases."""
    tally: dict[str, int] = {}
    for case in cases:
        tally[case.verdict] = tally.get(case.verdict, 0) + 1
    inputs = [c.inputs for c in cases]
    claim = fill(question.CLAIM, roles)
    claim = claim.split(":", 1)[1].strip() if ":" in claim else claim
    return {"key": question.KEY, "title": question.TITLE, "claim": claim, "verdict": finding.verdict,
            "cases": len(cases), "tally": tally, "inputs_min": min(inputs) if inputs else 0,
            "inputs_max": max(inputs) if inputs else 0,
            "said": [case_summary(c, roles) for c in _said_first(cases)],
            "literal_verdict": literal.verdict}


def _n_text(item: Mapping[str, Any]) -> str:
    low, high = item["inputs_min"], item["inputs_max"]
    return f"n = {low}" if low == high else f"n = {low}–{high}"


def verdict_badge(verdict: str) -> str:
    css = {"holds": "holds", "fails": "fails", "holds in part": "part"}.get(verdict, "unknown")
    return f'<span class="badge {css}" data-verdict="{html.escape(verdict)}">{html.escape(verdict)}</span>'


def question_html(item: Mapping[str, Any]) -> str:
    esc = html.escape
    tally = ", ".join(f"{count} {verdict}" for verdict, count in item["tally"].items())
    cases = []
    for case in item["said"]:
        deciding = "; ".join(d["text"] for d in case["deciding"])
        why = "; ".join(case["notes"])
        detail = deciding or why
        cases.append(f"<li>{esc(case['case'])}: <b>{esc(case['verdict'])}</b>, n = {case['inputs']}"
                     + (f" — {esc(detail)}" if detail else "") + "</li>")
    more = item["cases"] - len(item["said"])
    if more > 0:
        cases.append(f'<li class="more">… {more} more {fx.plural(more, "case")} in '
                     f'<a href="#{esc(item["key"])}">its section</a></li>')
    question = item["title"].split(":", 1)
    return (f'<li data-question="{esc(item["key"])}"><b>{esc(question[0])}</b> {verdict_badge(item["verdict"])}'
            f'{esc(item["claim"])}. <span class="n">{item["cases"]} {fx.plural(item["cases"], "case")} ({esc(tally)}), '
            f'{_n_text(item)}.</span><ul>{"".join(cases)}</ul>'
            f'<span class="literal-note" data-kind="literal">The paper\'s raw comparison (no uncertainty, for '
            f'comparison only): {esc(item["literal_verdict"])}.</span></li>')


def smoke_warnings(study: Study) -> list[str]:
    """Why this run's numbers are a smoke test, if they are."""
    out = []
    if study.n is not None and study.n < USEFUL_N:
        out.append(f"Smoke test: N = {study.n} inputs per profile (the paper: 200; the default config: 50). Below "
                   f"N = {USEFUL_N} most cases lack the successful inputs to be tested and the intervals are wide: "
                   f"read these verdicts as a check that the workflow runs.")
    block = study.config.get("defense") or {}
    n_d = block.get("n") if isinstance(block, Mapping) else None
    if isinstance(n_d, int) and n_d < USEFUL_DEFENSE_N:
        out.append(f"The defense stage ran on N_d = {n_d} seeds (seed 003: 1,000).")
    return out


# --- the defenses and seed 001 in a few lines -------------------------------------------------------------------

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strength(row: Mapping[str, Any]) -> float:
    try:
        return float(row.get("strength"))
    except (TypeError, ValueError):
        return -math.inf


def detector_matrix(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One cell per (detector, attack): its ROC AUC with interval over every attacked input at the attack's
    largest budget (the set every seed was attacked at hardest), and on how many of the attack's sets, over
    their successful inputs, its AUC's interval lies above its AUC on the random control of the same size."""
    cells = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        for attack in dict.fromkeys(r["attack"] for r in rows if r["detector"] == detector):
            mine = [r for r in rows if r["detector"] == detector and r["attack"] == attack]
            attacked = [r for r in mine if r.get("over") == "attacked"]
            top = max(attacked, key=_strength) if attacked else None
            judged = [r for r in mine if r.get("over") == "successful"
                      and r.get("vs_control") in ("above control", "inconclusive", "below control")]
            cells.append({"detector": detector, "attack": attack,
                          "strength": top.get("strength") if top else None,
                          "n": int(top["n_adversarial"]) if top and _finite(top.get("n_adversarial")) else 0,
                          "auc": top.get("auc") if top else math.nan,
                          "auc_low": top.get("auc_low") if top else math.nan,
                          "auc_high": top.get("auc_high") if top else math.nan,
                          "vs_control": top.get("vs_control") if top else "",
                          "sets_above_control": sum(r["vs_control"] == "above control" for r in judged),
                          "sets_judged": len(judged)})
    return cells


def _budget(attack: str, strength: Any) -> str:
    """The largest budget of an attack's sweep in words: ε for the L∞ sweeps, κ for the confidence sweeps."""
    if not _finite(strength):
        return "the study's set"
    try:
        symbol = {"epsilon": "ε", "kappa": "κ"}.get(attack_registry.sweep(attack).strength, "strength")
    except (KeyError, ValueError, LookupError):
        symbol = "strength"
    return f"{symbol} = {strength:g}"


def _auc_text(cell: Mapping[str, Any]) -> str:
    if not _finite(cell["auc"]):
        return "n/a"
    interval = (f" [{cell['auc_low']:.2f}, {cell['auc_high']:.2f}]"
                if _finite(cell["auc_low"]) and _finite(cell["auc_high"]) else "")
    return f"{cell['auc']:.2f}{interval}"


def defense_record(root: Path) -> dict[str, Any] | None:
    """The defense stage in a few numbers (``root`` = ``results/{dataset}/defense``), or None without one."""
    tables = root / "tables"
    if not tables.is_dir():
        return None
    out: dict[str, Any] = {"threat_model": "transfer (oblivious): attacks crafted on the undefended classifier; "
                                           "no attack here knows the detectors"}
    if (tables / "clean_accuracy.csv").is_file():
        ours = [r for r in read_rows(tables / "clean_accuracy.csv") if not str(r["defense"]).startswith("seed 003")]
        if ours:
            r = ours[0]
            out["clean_accuracy"] = {"defense": r["defense"], "n": int(r["n"]) if _finite(r["n"]) else None,
                                     "without": r["without"], "with_defense": r["with_defense"],
                                     "lost_to_detectors": r.get("lost_to_detectors"),
                                     "lost_to_reformer": r.get("lost_to_reformer")}
    if (tables / "detectors.csv").is_file():
        out["detectors"] = detector_matrix(read_rows(tables / "detectors.csv"))
    adaptive = root / "adaptive" / "tables" / "adaptive.csv"
    if adaptive.is_file():
        out["adaptive"] = adaptive_matrix(read_rows(adaptive))
        out["threat_model"] = ("transfer (oblivious) in the detector matrix; adaptive (white-box: knows the "
                               "classifier, the reformer and every detector with its threshold) in the defended-"
                               "accuracy matrix")
    return out


def adaptive_matrix(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and attack at the attack's largest budget (not the longer check): defended accuracy under the
    adaptive attack and under the transfer attack on the same seeds, with Wilson intervals, and the masking flag."""
    out = []
    base = [r for r in rows if r.get("longer") == "no"]
    for target in dict.fromkeys(r["target"] for r in base):
        for attack in dict.fromkeys(r["attack"] for r in base if r["target"] == target):
            mine = [r for r in base if r["target"] == target and r["attack"] == attack]
            top = max(mine, key=lambda r: float(r["strength"]))
            out.append({"target": target, "guards": top.get("guards"), "attack": attack,
                        "strength": float(top["strength"]), "n": top.get("n"),
                        **{k: top.get(k) for k in ("defended_accuracy", "defended_accuracy_low",
                                                   "defended_accuracy_high", "transfer_defended_accuracy",
                                                   "transfer_defended_accuracy_low", "transfer_defended_accuracy_high")},
                        "masking": bool(top.get("masking"))})
    return out


def defense_html(record: Mapping[str, Any]) -> str:
    esc = html.escape
    parts = []
    clean = record.get("clean_accuracy")
    if clean:
        parts.append(f"<p>Clean cost: on {clean['n']} held-out clean images the classifier is right on "
                     f"{fx.percent(clean['without'])} without the defense and {fx.percent(clean['with_defense'])} "
                     f"with it ({esc(clean['defense'])}); the detectors flag {fx.percent(clean['lost_to_detectors'])} "
                     f"of them, the reformer turns {fx.percent(clean['lost_to_reformer'])} wrong.</p>")
    cells = record.get("detectors") or []
    if cells:
        attacks = list(dict.fromkeys(c["attack"] for c in cells))
        detectors = list(dict.fromkeys(c["detector"] for c in cells))
        at = {(c["detector"], c["attack"]): c for c in cells}
        budget = {c["attack"]: c["strength"] for c in cells}
        head = "".join(f"<th>{esc(a)}<br><small>{'at ' if _finite(budget[a]) else ''}{esc(_budget(a, budget[a]))}"
                       f"</small></th>" for a in attacks)
        body = []
        for d in detectors:
            row = []
            for a in attacks:
                c = at.get((d, a))
                row.append("<td>–</td>" if c is None else
                           f'<td title="n = {c["n"]}">{_auc_text(c)}<br><small>'
                           + (f'above control on {c["sets_above_control"]} of {c["sets_judged"]}'
                              if c["sets_judged"] else "no successful input") + "</small></td>")
            body.append(f'<tr><th class="text">{esc(d)}</th>{"".join(row)}</tr>')
        parts.append('<table data-table="detector_matrix"><caption>Detector × attack (transfer attacks, oblivious to '
                     'the detector): ROC AUC [95 % interval] over every attacked input at the attack\'s largest '
                     'budget; below, on how many of the attack\'s sets (successful inputs) the AUC\'s interval lies '
                     'above the AUC on a random perturbation of the same size. Full rows: <a href="#defense">'
                     'Defenses</a>, appendix.</caption>'
                     f'<thead><tr><th class="text">detector</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                     '</table>')
    adaptive = record.get("adaptive") or []
    if adaptive:
        attacks = list(dict.fromkeys(c["attack"] for c in adaptive))
        at = {(c["target"], c["attack"]): c for c in adaptive}
        budget = {c["attack"]: c["strength"] for c in adaptive}
        units = {"pgd": "PGD, ε", "cw": "C&W, κ"}
        head = "".join(f"<th>{esc(units.get(a, a))} = {budget[a]:g}</th>" for a in attacks)
        body = []
        for target in dict.fromkeys(c["target"] for c in adaptive):
            cells = []
            for a in attacks:
                c = at.get((target, a))
                cells.append("<td>–</td>" if c is None else
                             f"<td>{rate_text(c, 'defended_accuracy')}<br><small>transfer "
                             f"{rate_text(c, 'transfer_defended_accuracy')}"
                             + ("; possible gradient masking" if c["masking"] else "") + "</small></td>")
            body.append(f'<tr><th class="text">{esc(target)}</th>{"".join(cells)}</tr>')
        parts.append('<table data-table="adaptive_matrix"><caption>Defended accuracy under an adaptive (white-box) '
                     'attacker at each attack\'s largest budget [95 % Wilson interval], below it the transfer '
                     'attack\'s on the same seeds; target = the undefended classifier, the whole defense, or one '
                     'detector alone. Full rows: <a href="#adaptive">Under an adaptive attacker</a>.</caption>'
                     f'<thead><tr><th class="text">target</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                     '</table>')
        parts.append(f'<p class="meta">Threat model: {esc(record["threat_model"])}.</p>')
    else:
        parts.append(f'<p class="meta">Threat model: {esc(record["threat_model"])}. A number here holds only against '
                     f'an attacker who ignores the detectors.</p>')
    return "\n".join(parts)


def seed001_record(results: Path) -> dict[str, Any] | None:
    """Seed 001's parts in a few numbers: the grid's reach and the dropout vote (clean accuracy, restoring)."""
    grid, dropout = results / "seed001" / "grid" / "grid_success.csv", results / "defense" / "dropout" / \
        "dropout_vote.csv"
    if not grid.is_file() and not dropout.is_file():
        return None
    out: dict[str, Any] = {}
    if grid.is_file():
        rows = read_rows(grid)
        attempted = int(rows[0]["attempted"]) * len(rows) if rows else 0
        out["grid"] = {"successes": int(sum(r["successes"] for r in rows)), "attempts": attempted,
                       "pairs_reached": sum(r["successes"] > 0 for r in rows), "pairs": len(rows)}
    if dropout.is_file():
        rows = read_rows(dropout)
        clean = [r for r in rows if r["kind"] == "clean" and r["set"] == "clean"]
        vote: dict[str, Any] = {}
        if clean:
            c = clean[0]
            vote["clean"] = {"n": int(c["inputs"]), "accuracy": c["accuracy"], "low": c["accuracy_low"],
                             "high": c["accuracy_high"], "undefended": c["undefended_accuracy"]}
        judged = [r for r in rows if r["kind"] != "clean" and _finite(r.get("successful")) and r["successful"] > 0
                  and _finite(r.get("restored")) and not str(r["set"]).startswith(CONTROL_PREFIX)]
        vote["sets_judged"] = len(judged)
        vote["sets_restored_above_half"] = sum(r["restored_low"] > 0.5 for r in judged)
        if judged:
            vote["restored_min"] = min(r["restored"] for r in judged)
            vote["restored_max"] = max(r["restored"] for r in judged)
        out["dropout_vote"] = vote
    return out


def seed001_html(record: Mapping[str, Any]) -> str:
    items = []
    grid = record.get("grid")
    if grid:
        items.append(f"Average-adversarial grid: the targeted attack reached {grid['successes']} of {grid['attempts']} "
                     f"(class, target) attempts; {grid['pairs_reached']} of {grid['pairs']} class pairs have an "
                     f"adversarial image.")
    vote = record.get("dropout_vote")
    if vote:
        clean = vote.get("clean")
        if clean:
            items.append(f"Dropout vote on {clean['n']} clean images: right on {fx.percent(clean['accuracy'])} "
                         f"[{fx.percent(clean['low'])}, {fx.percent(clean['high'])}] (undefended "
                         f"{fx.percent(clean['undefended'])}).")
        if vote["sets_judged"]:
            items.append(f"Over each attack's successful inputs it restores the true label on "
                         f"{fx.percent(vote['restored_min'])}–{fx.percent(vote['restored_max'])}; the interval lies "
                         f"above one half on {vote['sets_restored_above_half']} of {vote['sets_judged']} sets.")
        else:
            items.append("No attack set has a successful input, so the vote's restoring is not measured.")
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


# --- provenance ---------------------------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance(results: Path) -> dict[str, Any]:
    """What made this run: advflow's version, the source commit (and whether the checkout had uncommitted
    changes), the SHA-256 of ``config.resolved.yaml``, the device(s) the models were trained on, and the versions
    of Python, PyTorch and NumPy."""
    import numpy
    import torch

    import advflow

    root = Path(__file__).resolve().parent  # git finds the checkout (if any) from any folder inside it
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    resolved = results / "config.resolved.yaml"
    devices = set()
    for record in sorted((results / "models").glob("*.json")):
        try:
            device = json.loads(record.read_text()).get("device")
        except (OSError, ValueError):
            continue
        if device:
            devices.add(str(device))
    return {"advflow": advflow.__version__,
            "commit": commit or "unknown (not run from a git checkout)",
            "uncommitted_changes": bool(status) if commit else None,
            "config_sha256": hashlib.sha256(resolved.read_bytes()).hexdigest() if resolved.is_file() else None,
            "device": ", ".join(sorted(devices)) or "unknown",
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def provenance_html(record: Mapping[str, Any], generated: str) -> str:
    commit = record["commit"]
    if record.get("uncommitted_changes"):
        commit += " (with uncommitted changes)"
    digest = record["config_sha256"]
    items = [("advflow", record["advflow"]), ("commit", commit),
             ("config", f"sha256 {digest[:16]}… of config.resolved.yaml" if digest else "no config.resolved.yaml"),
             ("device", record["device"]), ("Python / PyTorch / NumPy",
                                            f"{record['python']} / {record['torch']} / {record['numpy']}"),
             ("generated", generated)]
    return ('<p class="provenance" data-summary="provenance">' + " · ".join(
        f"<b>{html.escape(k)}</b> {html.escape(str(v))}" for k, v in items) + "</p>")


def record(questions: Sequence[Any], cases: Mapping[str, Sequence[Case]], found: Mapping[str, Finding],
           literal: Mapping[str, Finding], study: Study, results: Path) -> dict[str, Any]:
    """The summary as data: ``findings.json``'s ``summary``, ``defenses``, ``seed001`` and ``provenance``."""
    return {"summary": {"questions": [question_summary(q, found[q.KEY], literal[q.KEY], cases.get(q.KEY, []),
                                                       study.roles) for q in questions],
                        "smoke_test": smoke_warnings(study), "n": study.n},
            "defenses": defense_record(results / "defense"),
            "seed001": seed001_record(results),
            "provenance": provenance(results)}


def summary_html(data: Mapping[str, Any], generated: str) -> str:
    """The first screen: warnings, the questions, the defenses and seed 001, provenance."""
    parts = ['<section id="summary" data-summary="findings"><h2>Summary</h2>']
    if data["summary"]["smoke_test"]:
        parts.append(f'<p class="warning" data-warning="smoke-test">{html.escape(" ".join(data["summary"]["smoke_test"]))}'
                     f'</p>')
    parts.append('<ol class="summary">' + "".join(question_html(q) for q in data["summary"]["questions"]) + "</ol>")
    parts.append('<p class="meta">Each verdict: 95 % paired-bootstrap intervals of standardized shifts (units: the '
                 'normal inputs\' spread per layer), beside random controls of the same size; holds / fails when the '
                 'interval of the claimed difference lies above / below 0. † marks an estimate outside its own '
                 'interval (see the note in its section).</p>')
    if data.get("defenses"):
        parts.append('<h3>Defenses</h3>' + defense_html(data["defenses"]))
    if data.get("seed001"):
        parts.append('<h3>Seed 001</h3>' + seed001_html(data["seed001"]))
    parts.append(provenance_html(data["provenance"], generated))
    parts.append("</section>")
    return "\n".join(parts)
