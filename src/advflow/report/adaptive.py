"""The report's "Under an adaptive attacker" part of the defense section (rule ``adaptive_tables``;
:mod:`advflow.defenses.adaptive_stage`).

Reads ``defense/adaptive/tables/*.csv`` and ``defense/adaptive/figures/*.png``. It states, per target, the defended
accuracy under the adaptive attack beside the transfer attack's on the same seeds, each with its 95 % Wilson
interval; per detector, up to which budget it keeps detection power under the attack that knows it (its detection
rate's interval above the share of clean inputs it flags, its FPR) and from which budget it falls; and the sanity
checks (the undefended classifier's success at the largest budget, longer attacks, possible gradient masking) and how
well each surrogate score tracks the real one. No number here holds only against an oblivious attacker.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from advflow.report import findings as fx
from advflow.report.plotting import Figure, FigureBytes

TABLES = ("adaptive.csv", "adaptive_guards.csv", "adaptive_checks.csv", "adaptive_surrogates.csv")
CAPTIONS = {
    "adaptive.csv": "Adaptive attacks: per target (the undefended classifier, the whole defense, each detector alone), "
                    "attack and budget, on the first n defense seeds: success (the defended classifier fooled and no "
                    "guard flags the input), defended accuracy (1 − success), detection (any guard flags), each with "
                    "its 95 % Wilson interval, beside the transfer attack's defended accuracy and detection on the same "
                    "seeds; longer = the convergence check (more steps and restarts); masking = the flag for possible "
                    "gradient masking.",
    "adaptive_guards.csv": "Each guard under the adaptive attack on its target: detection rate (TPR at its threshold) "
                           "with its Wilson interval, beside the transfer attack's on the same seeds, and how its "
                           "score is differentiated (exact, a surrogate, or EOT).",
    "adaptive_checks.csv": "Sanity checks at each attack's largest budget: the same attack's success against the "
                           "undefended classifier (it should reach 100 %), success with longer attacks (doubling "
                           "steps and restarts should change nothing), and the gradient-masking flag.",
    "adaptive_surrogates.csv": "How each surrogate score tracks the detector's real score (Pearson, Spearman), on the "
                               "clean seeds and on the adaptive adversarial inputs.",
}
UNITS = {"pgd": "ε", "cw": "κ"}
NAMES = {"pgd": "PGD (L∞)", "cw": "C&W (L2)"}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rate_text(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` as a percentage with its ``_low``/``_high`` interval ("30.0 % [10.0 %, 60.0 %]"), or n/a."""
    value, low, high = (_float(row.get(k)) for k in (key, f"{key}_low", f"{key}_high"))
    if not math.isfinite(value):
        return "n/a"
    if math.isfinite(low) and math.isfinite(high):
        return f"{fx.percent(value)} [{fx.percent(low)}, {fx.percent(high)}]"
    return fx.percent(value)


def _count(value: Any) -> str:
    number = _float(value)
    return str(int(number)) if math.isfinite(number) else "n/a"


def _budget(attack: str, strength: Any) -> str:
    return f"{UNITS.get(attack, 'budget')} = {_float(strength):g}"


def accuracy_statements(rows: list[dict[str, Any]]) -> list[str]:
    """Per target other than the undefended classifier and per attack: the defended accuracy at each budget under the
    adaptive attack, beside the transfer attack's on the same seeds."""
    out = []
    targets = [t for t in dict.fromkeys(r["target"] for r in rows) if t != "undefended"]
    for target in targets:
        mine = [r for r in rows if r["target"] == target and r.get("longer") == "no"]
        if not mine:
            continue
        parts = []
        for attack in dict.fromkeys(r["attack"] for r in mine):
            cells = [f"{_budget(attack, r['strength'])}: {rate_text(r, 'defended_accuracy')} (transfer "
                     f"{rate_text(r, 'transfer_defended_accuracy')})" for r in mine if r["attack"] == attack]
            parts.append(f"{NAMES.get(attack, attack)}: " + "; ".join(cells))
        what = mine[0]["guards"] + (", reformer" if mine[0].get("reformer") == "yes" else "")
        out.append(f"{target} ({what}), defended accuracy under its adaptive attack, n = {_count(mine[0]['n'])}: "
                   + ". ".join(parts) + ".")
    return out


def detection_statements(guards: list[dict[str, Any]], fprs: dict[str, float]) -> list[str]:
    """Per detector alone (target = the detector): up to which budget its detection rate's interval stays above its
    FPR under the adaptive attack, and from which budget it does not."""
    out = []
    for guard in dict.fromkeys(r["guard"] for r in guards if r["target"] == r["guard"]):
        fpr = fprs.get(guard, math.nan)
        for attack in dict.fromkeys(r["attack"] for r in guards if r["guard"] == guard):
            mine = sorted((r for r in guards if r["target"] == guard and r["guard"] == guard and r["attack"] == attack
                           and r.get("longer") == "no"), key=lambda r: _float(r["strength"]))
            if not mine:
                continue
            kept = [_float(r["detection_low"]) > fpr for r in mine]
            keeps = [r for r, k in zip(mine, kept) if k]
            falls = next((r for r, k in zip(mine, kept) if not k), None)
            if keeps and falls is not None and kept != sorted(kept, reverse=True):  # not monotone in the budget
                verdict = (f"keeps detection power at {', '.join(_budget(attack, r['strength']) for r in keeps)} and "
                           f"not at {', '.join(_budget(attack, r['strength']) for r, k in zip(mine, kept) if not k)} "
                           f"(its FPR {fx.percent(fpr)}; not monotone in the budget: read the table)")
            elif not keeps:
                verdict = (f"keeps no detection power at any budget tried (from {_budget(attack, mine[0]['strength'])}"
                           f": detection {rate_text(mine[0], 'detection')}, its FPR {fx.percent(fpr)})")
            elif falls is None:
                verdict = (f"keeps detection power at every budget tried (at {_budget(attack, mine[-1]['strength'])}:"
                           f" detection {rate_text(mine[-1], 'detection')} against its FPR {fx.percent(fpr)})")
            else:
                verdict = (f"keeps detection power up to {_budget(attack, keeps[-1]['strength'])} (detection "
                           f"{rate_text(keeps[-1], 'detection')}) and falls from {_budget(attack, falls['strength'])} "
                           f"(detection {rate_text(falls, 'detection')}, its FPR {fx.percent(fpr)})")
            out.append(f"{guard} against {NAMES.get(attack, attack)} that knows it {verdict}.")
    return out


def check_statements(checks: list[dict[str, Any]], surrogates: list[dict[str, Any]]) -> list[str]:
    """The sanity checks, each said once: the undefended classifier's success at the largest budget, convergence with
    longer attacks, the gradient-masking flags, and each surrogate's correlation with its real score."""
    out = []
    for row in checks:
        if row["target"] == "undefended":
            reach = row.get("undefended_reaches_all") or "n/a"
            out.append(f"Undefended classifier, {NAMES.get(row['attack'], row['attack'])} at "
                       f"{_budget(row['attack'], row['strength'])}: success {rate_text(row, 'undefended_success')}; "
                       f"reaches 100 %: {reach}.")
    converged = [r for r in checks if r.get("convergence")]
    loose = [r for r in converged if r["convergence"] != "converged"]
    if converged:
        named = ", ".join(f"{r['target']} {r['attack']} (+{_count(r['gained'])} seeds)" for r in loose)
        out.append(f"Longer attacks (more steps and restarts) at the largest budget: converged on "
                   f"{len(converged) - len(loose)} of {len(converged)} (target, attack) pairs"
                   + (f"; not converged on {named}: their adaptive numbers understate the attacker" if loose else "")
                   + ".")
    masked = [r for r in checks if r.get("masking") not in (None, "", "no")]
    if masked:
        out.append("Possible gradient masking or optimisation failure (adaptive success far below the undefended "
                   "classifier's at the largest budget; not robustness): "
                   + ", ".join(f"{r['target']} {r['attack']}" for r in masked) + ".")
    elif checks:
        out.append("No target's adaptive success stays far below the undefended classifier's at the largest budget "
                   "(no gradient-masking flag).")
    for guard in dict.fromkeys(r["guard"] for r in surrogates if r.get("surrogate") not in ("exact", "")):
        mine = [r for r in surrogates if r["guard"] == guard]
        cells = "; ".join(f"{r['inputs']}: Spearman {_float(r['spearman']):.2f}, Pearson {_float(r['pearson']):.2f} "
                          f"(n = {_count(r['n'])})" for r in mine)
        out.append(f"{guard}'s surrogate ({mine[0]['surrogate']}) against its real score: {cells}.")
    return out


def section(root: Path, read_rows: Any, html_table: Any, figure_html: Any, fprs: dict[str, float]) -> str:
    """The part's HTML (empty without adaptive tables): the statements, the defense's figure (the others' files are
    linked in the caption of the tables) and the tables."""
    tables, figures = root / "tables", root / "figures"
    if not tables.is_dir():
        return ""
    rows = {name: read_rows(tables / name) for name in TABLES if (tables / name).is_file()}
    statements = (accuracy_statements(rows.get("adaptive.csv", []))
                  + detection_statements(rows.get("adaptive_guards.csv", []), fprs)
                  + check_statements(rows.get("adaptive_checks.csv", []), rows.get("adaptive_surrogates.csv", [])))
    parts = ['<h3 id="adaptive">Under an adaptive attacker</h3>',
             '<p class="setting">White-box attacks that know the classifier, the reformer and every guard with its '
             'threshold (PGD with random restarts, L∞; C&amp;W, L2), on the first seeds of the transfer sweeps. '
             'Success: the defended classifier is fooled and no guard flags the input, judged with the real scores; '
             'the dropout vote is attacked with expectation over its masks and judged on fresh masks.</p>']
    if statements:
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in statements) + "</ul>")
    drawn = sorted(figures.glob("adaptive_*.png"), key=lambda p: (p.stem != "adaptive_defense", p.stem))
    if drawn:  # the whole defense's figure in the body; the others by name
        caption = (figures / f"{drawn[0].stem}.rst").read_text().strip()
        parts.append(figure_html(Figure(drawn[0].name, FigureBytes(drawn[0].read_bytes()), caption)))
    if drawn[1:]:
        parts.append(f'<p class="setting">The same figure for every other target, in defense/adaptive/figures: '
                     f'{html.escape(", ".join(p.name for p in drawn[1:]))}.</p>')
    for name, table in rows.items():
        columns = tuple(table[0]) if table else ()
        parts.append(html_table(f"adaptive_{name}", table, columns, CAPTIONS[name],
                                href=f"results:defense/adaptive/tables/{name}"))
    return "\n".join(parts)
