"""The report page: one self-contained HTML file (figures as base64 data URIs, inline CSS), with a verdict
summary, a table of contents, one section per question (setting, notes, figures, tables, statistical finding with
its intervals, the paper's literal comparison) and the estimator diagnostics. A small script records on load how
many images decoded (``data-images-decoded`` / ``data-images-total`` on ``<body>``) for a headless browser to
check; tables print whole (no scroll boxes in print)."""

from __future__ import annotations

import base64
import datetime
import html
import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from advflow.config import ConfigError, paper_departures
from advflow.report import findings as fx
from advflow.report.findings import Finding
from advflow.report.plotting import Figure
from advflow.report.results import RunResults
from advflow.report.study import NORMAL, NORMAL_TRAIN, Study
from advflow.report.tables import TableSpec, Tables

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1320px;
       padding: 1.5em 2em 4em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2.2em; } h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
.meta { color: #555; font-size: 0.95em; } .setting { background: #f6f8fa; border-left: 4px solid #8aa4c8;
       padding: 0.6em 1em; } .note { color: #7a5b00; background: #fff8e1; padding: 0.4em 0.8em; margin: 0.4em 0; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #d8dde3; padding: 0.25em 0.6em; text-align: right; }
th { background: #eef2f6; } td.text, th.text { text-align: left; }
caption { caption-side: top; text-align: left; font-size: 0.92em; color: #444; padding: 0.2em 0; }
caption code { color: #777; } figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.92em; color: #444; } .finding { padding: 0.7em 1em; border-radius: 4px; margin: 1em 0; }
.finding.holds { background: #e8f5e9; border-left: 5px solid #2e7d32; }
.finding.fails { background: #fdecea; border-left: 5px solid #c62828; }
.finding.unknown { background: #f1f1f1; border-left: 5px solid #888; }
.finding.part { background: #fff8e1; border-left: 5px solid #b08800; }
.finding[data-kind="literal"] { font-size: 0.92em; opacity: 0.9; }
.verdict { font-weight: bold; text-transform: uppercase; font-size: 0.85em; margin-right: 0.5em; }
.scroll { max-height: 28em; overflow: auto; display: inline-block; }
nav.contents { background: #f6f8fa; padding: 0.5em 1.2em; display: inline-block; font-size: 0.95em; }
nav.contents ol { margin: 0.3em 0; padding-left: 1.4em; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .scroll { max-height: none; overflow: visible; display: block; }
  tr, figure, .finding { break-inside: avoid; }
  thead { display: table-header-group; }
  h2, h3 { break-after: avoid; }
}
"""


IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.dataset.imagesDecoded = String(decoded);
  document.body.dataset.imagesTotal = String(images.length);
});
"""


VERDICT_CSS = {"holds": "holds", "fails": "fails", "holds in part": "part"}


COLUMN_HEADERS = {
    "measured_on": "inference model", "set": "set", "normal": "normal", "iip_distance": "IIP distance",
    "oip_distance": "OIP distance", "average_distance": "average distance", "success_rate": "success rate",
    "distortion_l2": "distortion (L2)", "iip_deviation": "IIP deviation", "oip_deviation": "OIP deviation",
    "test_accuracy": "test accuracy", "parameter_ratio": "parameter ratio", "inputs": "inputs",
}


def format_cell(value: Any, column: str) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value if value is not None else ""))
    if isinstance(value, int):
        return f"{value:,}" if column == "parameters" else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if column in ("success_rate", "transferability", "test_accuracy", "dead_share"):
            return fx.percent(value)  # rates as the findings' text writes them
        if column in ("confidence", "parameter_ratio"):
            return f"{value:.4f}"
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"
    return html.escape(str(value))


def html_table(name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str) -> str:
    """An HTML table of rows (numbers formatted), tagged ``data-table="{name}"``."""
    head = "".join(f'<th class="{"num" if rows and isinstance(rows[0].get(c), (int, float)) else "text"}">'
                   f"{html.escape(COLUMN_HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"text" if isinstance(row.get(c), str) else "num"}">'
                        f"{format_cell(row.get(c), c)}</td>"
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    wrapper = ' class="scroll"' if len(rows) > 25 else ""
    return (f'<div{wrapper}><table data-table="{html.escape(name)}"><caption>{html.escape(caption)} '
            f"<code>{html.escape(name)}</code></caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></div>")


def finding_html(finding: Finding, kind: str = "statistical") -> str:
    css = VERDICT_CSS.get(finding.verdict, "unknown")
    return (f'<div class="finding {css}" data-kind="{kind}" data-verdict="{html.escape(finding.verdict)}" '
            f'data-holds="{str(finding.holds).lower()}"><span class="verdict">'
            f"{html.escape(finding.verdict)}</span>{html.escape(finding.text)}</div>")


def departures(config: Mapping[str, Any]) -> list[str]:
    """The run's settings that differ from the paper's (:func:`advflow.config.paper_departures`)."""
    try:
        return paper_departures(dict(config))
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        return [f"not determined ({error})"]



def title(study: Study) -> str:
    name = (study.config.get("report") or {}).get("title")
    return str(name) if name else f"Information flow of adversarial inputs: {study.dataset}"


def _run_summary(study: Study) -> list[tuple[str, str]]:
    config, settings = study.config, study.settings
    return [
        ("dataset", study.dataset), ("models", ", ".join(study.models)),
        ("N (inputs per profile)", "?" if study.n is None else str(study.n)), ("seed", str(study.seed)),
        ("transfer groups", "; ".join(", ".join(g) for g in study.transfer_groups) or "none"),
        ("JSMA trajectories (Q1)", str(study.trajectories)),
        ("MI buckets B", str(settings["mi"]["buckets"])),
        ("GP grid step", str(settings["aggregate"]["grid_step"])),
        ("normal profile", f"{NORMAL} (baseline: {NORMAL_TRAIN})"),
        ("departs from the paper", "; ".join(departures(config)) or "nothing (the paper's settings)"),
        ("generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]


def figure_html(figure: Figure) -> str:
    esc = html.escape
    data = base64.b64encode(figure.image).decode("ascii")
    return (f'<figure data-figure="{esc(figure.name)}"><img alt="{esc(figure.name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{esc(figure.caption)} <code>{esc(figure.name)}</code>'
            f"</figcaption></figure>")


def render_html(study: Study, results: RunResults, questions: Sequence[ModuleType], tables: Tables,
                specs: Mapping[str, TableSpec], found: Mapping[str, Finding], literal: Mapping[str, Finding],
                figures: Mapping[str, Sequence[Figure]], diagnostics: Sequence[str],
                extra: Sequence[tuple[str, str, str]] = ()) -> str:
    """The self-contained report page; ``figures`` and the sections follow ``questions`` (each a module of
    :mod:`advflow.report` with ``KEY``, ``TITLE``, ``TABLES`` and ``setting``); ``extra`` sections ``(key, title,
    html)`` follow the questions (the defense stage's)."""
    esc = html.escape
    models_rows = [{"model": m, "parameters": int(r.get("parameters", 0)),
                    "test_accuracy": float(r.get("test_accuracy", math.nan))}
                   for m in study.models if results.files.model_record(m).is_file() for r in [results.record(m)]]
    sets_rows = [{"target": t, "attacks": ", ".join(a)} for t, a in study.attack_sets.items()]
    intervals_caption = specs["intervals.csv"].caption
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', '<link rel="icon" href="data:,">',
        f"<title>advflow report: {esc(study.dataset)}</title><style>{CSS}</style>",
        f"<script>{IMAGE_CHECK}</script></head><body>",
        f"<h1>{esc(title(study))}</h1>",
        ('<p class="meta">A reproduction of Ji &amp; Wang, “On the Dynamics of Adversarial Input Attacks”, Section '
         'IV. Distances are (1/K) Σ<sub>k</sub> |μ<sub>1</sub><sup>(k)</sup> − μ<sub>2</sub><sup>(k)</sup>| between '
         "GP-aggregated paths (posterior means at the conv layers).</p>"),
        '<table data-summary="run"><tbody>' + "".join(
            f'<tr><th class="text">{esc(k)}</th><td class="text">{esc(v)}</td></tr>' for k, v in _run_summary(study))
        + "</tbody></table>",
        "<h2>Verdicts</h2>",
        html_table("verdict_summary", [{"question": q.TITLE.split(":")[0], "verdict": found[q.KEY].verdict,
                                        "literal (paper's comparison)": literal[q.KEY].verdict} for q in questions],
                   ("question", "verdict", "literal (paper's comparison)"),
                   f"Each question's verdict from paired, standardized shifts with 95 % bootstrap intervals "
                   f"({study.resamples} resamples) beside random-perturbation controls; beside it the paper's own raw "
                   f"comparison of aggregated distances, which carries no uncertainty."),
        '<nav class="contents" aria-label="Contents"><b>Contents</b><ol>'
        + "".join(f'<li><a href="#{q.KEY}">{esc(q.TITLE)}</a></li>' for q in questions)
        + "".join(f'<li><a href="#{key}">{esc(name)}</a></li>' for key, name, _ in extra)
        + '<li><a href="#diagnostics">Estimator diagnostics</a></li></ol></nav>',
        "<h3>Models</h3>",
        html_table("models", models_rows, ("model", "parameters", "test_accuracy"),
                   "Models of this run (parameters, accuracy on the whole test split)."),
        "<h3>Attack sets</h3>",
        html_table("attack_sets", sets_rows, ("target", "attacks"), "Attacks crafted on each target model."),
    ]
    for question in questions:
        key = question.KEY
        parts.append(f'<section id="{key}" data-question="{key}"><h2>{esc(question.TITLE)}</h2>')
        setting = question.setting(study)
        if setting:
            parts.append(f'<p class="setting"><b>Setting.</b> {setting}</p>')
        parts += [f'<p class="note">Note: {esc(note)}</p>' for note in tables.notes.get(key, [])]
        parts += [figure_html(figure) for figure in figures.get(key, [])]
        parts += [html_table(name, tables.rows[name], spec.columns, spec.caption)
                  for name, spec in question.TABLES.items() if name in tables.rows]
        parts.append("<h3>Finding</h3>" + finding_html(found[key]))
        mine = [r for r in tables.rows.get("intervals.csv", []) if r["question"] == key]
        if mine:
            parts.append(html_table(f"intervals_{key}", mine, specs["intervals.csv"].columns[1:], intervals_caption))
        parts.append("<h3>The paper's literal comparison</h3>" + finding_html(literal[key], "literal"))
        parts.append("</section>")
    parts += [body for _, _, body in extra]
    parts.append('<section id="diagnostics" data-question="diagnostics"><h2>Estimator diagnostics</h2>')
    parts += [f'<p class="note">{esc(note)}</p>' for note in tables.notes.get("diagnostics", [])]
    parts += [html_table(name, tables.rows[name], specs[name].columns, specs[name].caption) for name in diagnostics
              if name in tables.rows]
    parts.append("</section></body></html>")
    return "\n".join(parts)
