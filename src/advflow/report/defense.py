"""The report's "Defenses" section: seed 003's MagNet + MID against transfer attacks (rule ``defense_tables``).

Reads ``defense/tables/*.csv`` and ``defense/figures/*.png`` and states what the numbers show against the seed's:
each defense rate with its 95 % Wilson interval over its denominator, and whether the seed's published number lies
inside it (consistent), below it (ours higher) or above it (ours lower). A difference from the seed is not a
refutation of it: the classifier, N_d and the attacks' budgets differ, and the setting says so.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Any

from advflow.report import findings as fx
from advflow.report.plotting import Figure, FigureBytes
from advflow.report.study import Study

KEY = "defense"
TITLE = "Defenses: MagNet and the MID detector against transfer attacks (seed 003)"
TABLES = ("clean_accuracy.csv", "thresholds.csv", "table1_defense_rate.csv", "table2_defense_rate.csv",
          "detectors.csv")
CAPTIONS = {
    "clean_accuracy.csv": "Clean accuracy on held-out test images without and with the defense, and what it costs: "
                          "correct images the detectors flag, correct images the reformer turns wrong, wrong ones it "
                          "turns right; the seed's Fashion-MNIST numbers below.",
    "thresholds.csv": "Each detector's threshold: the (1 − FPR) quantile of its scores on the clean validation "
                      "images.",
    "table1_defense_rate.csv": "Table 1 (seed 003): defense rate (flagged by a detector, or classified correctly "
                               "after the reformer) vs ε in [0, 1] pixel units, over all attacked inputs and over "
                               "the successful ones; seed003: the seed's number (its column order is uncertain in "
                               "the extracted text).",
    "table2_defense_rate.csv": "Table 2 (seed 003): defense rate vs the confidence κ; reached_kappa: inputs whose "
                               "achieved logit margin reaches κ.",
    "detectors.csv": "Each detector alone on each set: ROC AUC and TPR at 1 % and 5 % FPR (thresholds on the clean "
                     "held-out images), over all attacked inputs and over the successful ones.",
}


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value) if value not in ("", None) and key not in ("attack", "detector", "over",
                                                                                    "note", "defense") else value
            except ValueError:
                pass
    return rows


def wilson(rate: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion ``rate`` over ``n`` trials (NaN, NaN for n = 0)."""
    if not n or not math.isfinite(rate):
        return math.nan, math.nan
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def comparison(rows: list[dict[str, Any]], strength: str) -> list[str]:
    """Per attack: our defense rate range, the seed's, and how many of the seed's numbers lie inside, below or
    above our 95 % intervals (over all attacked inputs)."""
    out = []
    for attack in dict.fromkeys(r["attack"] for r in rows):
        mine = [r for r in rows if r["attack"] == attack]
        inside = below = above = 0
        for r in mine:
            seed = r.get("seed003")
            if not isinstance(seed, float) or not math.isfinite(seed):
                continue
            low, high = wilson(r["defense_rate_attacked"], r["inputs"])
            if low <= seed / 100 <= high:
                inside += 1
            elif seed / 100 < low:
                below += 1
            else:
                above += 1
        rates = [r["defense_rate_attacked"] for r in mine if math.isfinite(r["defense_rate_attacked"])]
        seeds = [r["seed003"] for r in mine if isinstance(r.get("seed003"), float) and math.isfinite(r["seed003"])]
        ours = f"{fx.percent(min(rates))}–{fx.percent(max(rates))}" if rates else "n/a"
        theirs = f"{min(seeds):.1f}–{max(seeds):.1f} %" if seeds else "none published"
        compared = inside + below + above
        verdict = (f"the seed's number lies inside our 95 % interval at {inside} of {compared} {strength}s, below it "
                   f"(ours higher) at {below}, above it (ours lower) at {above}" if compared
                   else "nothing to compare")
        successful = [int(r["successful"]) for r in mine]
        premise = ("" if any(successful) else " No input fooled the undefended classifier at any strength, so these "
                   "rates describe the defense on inputs that were not adversarial, not its robustness.")
        out.append(f"{attack}: defense rate {ours} over {int(mine[0]['inputs'])} attacked inputs per {strength}, "
                   f"{min(successful)}–{max(successful)} of them successful on the undefended classifier (seed 003: "
                   f"{theirs}); {verdict}.{premise}")
    return out


def setting(study: Study) -> str:
    block = dict(study.config.get("defense") or {})
    return html.escape(
        f"Transfer (oblivious) attacks crafted on the undefended {block.get('classifier', 'good_init')} and shown to "
        f"the defended classifier; detectors {', '.join(block.get('detectors') or ['magnet_l1', 'magnet_l2', 'mid'])}"
        f", the reformer {'on' if block.get('reformer', True) else 'off'}; N_d = {block.get('n', 1000)} seeds "
        f"(seed 003: 1,000). The seed's numbers are for its own classifier (94.34 % clean accuracy) and attack "
        f"budgets; the complete settings are in config.resolved.yaml.")


def section(study: Study, root: Path, html_table: Any, figure_html: Any) -> str:
    """The section's HTML (empty when the run has no defense stage)."""
    tables, figures = root / "tables", root / "figures"
    if not tables.is_dir():
        return ""
    parts = [f'<section id="{KEY}" data-question="{KEY}"><h2>{html.escape(TITLE)}</h2>',
             f'<p class="setting"><b>Setting.</b> {setting(study)}</p>']
    for name in ("defense_rate.png", "defense_roc.png"):
        if (figures / name).is_file():
            caption = (figures / f"{Path(name).stem}.rst").read_text().strip()
            parts.append(figure_html(Figure(name, FigureBytes((figures / name).read_bytes()), caption)))
    statements = []
    for name in TABLES:
        if (tables / name).is_file():
            rows = read_rows(tables / name)
            columns = tuple(rows[0]) if rows else ()
            parts.append(html_table(f"defense_{name}", rows, columns, CAPTIONS[name]))
            if name.startswith("table1"):
                statements += comparison(rows, "ε")
            elif name.startswith("table2"):
                statements += comparison(rows, "κ")
    if statements:
        parts.append("<h3>Against seed 003</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in statements)
                     + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)
