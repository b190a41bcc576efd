"""The report page: one self-contained HTML file (figures as base64 data URIs, inline CSS) that reads like a paper:
a summary first (:mod:`advflow.report.summary`: each question's claim, verdict, deciding intervals and N; the
defenses and seed 001 in a few lines; provenance), then the run's settings and a table of contents, one section per
question (setting, notes, figures, short tables, the statistical finding as a short list of cases, and the paper's
raw comparison, visibly secondary), the defense and seed 001 sections, and an appendix with every long table (each
table's CSV is linked beside it). A small script records on load how many images decoded
(``data-images-decoded`` / ``data-images-total`` on ``<body>``) for a headless browser to check; tables print
whole (no scroll boxes in print)."""

from __future__ import annotations

import base64
import datetime
import html
import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from advflow.config import ConfigError, paper_departures
from advflow.workflow.catalog import ROLES
from advflow.report import findings as fx
from advflow.report.findings import Finding
from advflow.report.plotting import Figure
from advflow.report.results import RunResults
from advflow.report.summary import OUTSIDE, case_summary, outside, quantity_words, summary_html
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
.finding.literal { background: #fafafa; border-left: 3px dotted #aaa; color: #555; font-size: 0.9em; }
.finding ul { margin: 0.4em 0 0; padding-left: 1.3em; } .finding li { margin: 0.15em 0; }
.badge { display: inline-block; font-weight: bold; text-transform: uppercase; font-size: 0.8em; padding: 0 0.45em;
       border-radius: 3px; margin: 0 0.45em; background: #e0e0e0; color: #333; }
.badge.holds { background: #c8e6c9; color: #1b5e20; } .badge.fails { background: #ffcdd2; color: #b71c1c; }
.badge.part { background: #ffecb3; color: #7a5b00; }
#summary ol.summary { padding-left: 1.2em; } #summary ol.summary > li { margin: 0.5em 0; }
#summary ol.summary ul { margin: 0.15em 0; font-size: 0.92em; } .n { color: #555; }
.literal-note { display: block; color: #777; font-size: 0.85em; }
.warning { color: #7a3b00; background: #ffe9d6; border-left: 5px solid #d9822b; padding: 0.5em 0.9em; }
.provenance { color: #555; font-size: 0.85em; border-top: 1px solid #ddd; padding-top: 0.4em; }
.appendix-ref { color: #555; font-size: 0.9em; }
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
    "n_adversarial": "adversarial inputs", "n_clean": "clean inputs", "auc": "ROC AUC", "control_auc": "control's AUC",
    "vs_control": "vs control", "tpr_at_1": "TPR at 1 % FPR", "tpr_at_5": "TPR at 5 % FPR",
    "control_tpr_at_5": "control's TPR at 5 % FPR", "defense_rate_attacked": "defense rate (attacked)",
    "defense_rate_successful": "defense rate (successful)", "control_flagged": "control flagged",
    "seed003": "seed 003 (%)", "reached_kappa": "reached κ", "mean_spread": "mean vote spread",
    "control_mean_spread": "control's mean vote spread", "undefended_accuracy": "undefended accuracy",
    "with_defense": "with defense", "lost_to_detectors": "lost to detectors", "lost_to_reformer": "lost to reformer",
    "gained_by_reformer": "gained by reformer",
}

#: Columns that hold counts: printed as integers even when a CSV reader made them floats.
COUNT_COLUMNS = {"n", "inputs", "successful", "attempted", "successes", "seed", "step", "input", "label",
                 "prediction", "original", "adversarial", "parameters", "reached_kappa", "layers"}
#: Columns that hold rates in [0, 1]: printed as percentages, as the findings write them.
RATE_COLUMNS = {"success_rate", "transferability", "test_accuracy", "dead_share", "accuracy", "accuracy_low",
                "accuracy_high", "undefended_accuracy", "restored", "restored_low", "restored_high", "without",
                "with_defense", "lost_to_detectors", "lost_to_reformer", "gained_by_reformer", "flagged",
                "control_flagged", "fpr"}
#: Settings (budgets, strengths) printed as they are written in a config: 0.1, 10.
SETTING_COLUMNS = {"epsilon", "kappa", "strength", "theta", "gamma", "temperature"}
#: A finding lists its untested cases (premise not met, no information) one by one up to this many, else in one line.
UNTESTED_LISTED = 4
#: Longer tables than this go to the appendix; the section says where.
INLINE_ROWS = 20


def format_cell(value: Any, column: str) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value if value is not None else ""))
    counts = column in COUNT_COLUMNS or column.startswith("n_") or column.endswith(("_images", "_inputs"))
    if isinstance(value, float) and counts and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}" if column == "parameters" else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if column in RATE_COLUMNS or column.startswith("tpr_") or column.startswith("control_tpr_"):
            return fx.percent(value)  # rates as the findings' text writes them
        if column in SETTING_COLUMNS:
            return f"{value:g}"
        if column == "seed003":  # the seed's published rates, in % as it prints them
            return f"{value:.1f}"
        if column in ("confidence", "parameter_ratio"):
            return f"{value:.4f}"
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"
    return html.escape(str(value))


def _label(value: Any, column: str, roles: Mapping[str, str | None] | None = None) -> Any:
    """A code name shown as a row label in words (the intervals' quantities, with the models of ``roles``)."""
    if column == "quantity" and isinstance(value, str) and value:
        return quantity_words(value, roles)
    return value


def html_table(name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str, *,
               href: str | None = None, roles: Mapping[str, str | None] | None = None) -> str:
    """An HTML table of rows (numbers formatted), tagged ``data-table="{name}"``; ``href``: its CSV, linked;
    ``roles``: the study's (:attr:`advflow.report.study.Study.roles`), whose models quantities' words name."""
    head = "".join(f'<th class="{"num" if rows and isinstance(rows[0].get(c), (int, float)) else "text"}">'
                   f"{html.escape(COLUMN_HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"text" if isinstance(row.get(c), str) else "num"}">'
                        f"{format_cell(_label(row.get(c), c, roles), c)}</td>"
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    wrapper = ' class="scroll"' if len(rows) > 25 else ""
    link = f' <a href="{html.escape(href)}">CSV</a>' if href else ""
    return (f'<div{wrapper}><table data-table="{html.escape(name)}"><caption>{html.escape(caption)} '
            f"<code>{html.escape(name)}</code>{link}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></div>")


class Placer:
    """Puts a short table where it is asked for and a long one (more than :data:`INLINE_ROWS` rows) in the
    appendix, leaving a line that says where it went; callable like :func:`html_table`; ``roles``: the study's,
    passed to every table it places."""

    def __init__(self, links: Mapping[str, str] | None = None,
                 roles: Mapping[str, str | None] | None = None) -> None:
        self.appendix: list[str] = []
        self.links = dict(links or {})
        self.roles = roles

    def href(self, where: str | None) -> str | None:
        """``"tables:NAME.csv"`` (the report's tables folder) or ``"results:PATH"`` (the run's results folder) as a
        link relative to the page; None without ``links`` for it."""
        if not where:
            return None
        base, _, path = where.partition(":")
        return f"{self.links[base]}/{path}" if base in self.links else None

    def __call__(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str, *,
                 href: str | None = None, inline: bool | None = None) -> str:
        href = self.href(href)
        table = html_table(name, rows, columns, caption, href=href, roles=self.roles)
        if inline if inline is not None else len(rows) <= INLINE_ROWS:
            return table
        anchor = f"appendix-{name}".replace(".", "-")
        self.appendix.append(f'<div id="{html.escape(anchor)}">{table}</div>')
        link = f' (<a href="{html.escape(href)}">CSV</a>)' if href else ""
        return (f'<p class="appendix-ref">{html.escape(caption.split(":")[0].split(".")[0])}: {len(rows)} rows, in '
                f'the <a href="#{html.escape(anchor)}">appendix</a>{link}.</p>')


def finding_html(finding: Finding, kind: str = "statistical", cases: Sequence[Any] = (),
                 roles: Mapping[str, str | None] | None = None) -> str:
    """The statistical finding (coloured by its verdict; its cases as a short list, their quantities in words with
    the models of the study's ``roles``) or the paper's raw comparison (``kind="literal"``: grey whatever its
    verdict, below the statistical one)."""
    esc = html.escape
    if kind == "literal":
        return (f'<div class="finding literal" data-kind="literal" data-verdict="{esc(finding.verdict)}" '
                f'data-holds="{str(finding.holds).lower()}"><span class="verdict">paper\'s raw comparison: '
                f"{esc(finding.verdict)}</span>{esc(finding.text)}</div>")
    css = VERDICT_CSS.get(finding.verdict, "unknown")
    if cases:
        marker = f": {finding.verdict} ("
        cut = finding.text.find(marker)
        head = finding.text[:cut + len(marker) - 2] if cut >= 0 else finding.text.split(". ", 1)[0]
        tally: dict[str, int] = {}
        for case in cases:
            tally[case.verdict] = tally.get(case.verdict, 0) + 1
        head += f" ({', '.join(f'{v} {k}' for k, v in tally.items())})"
        items = []
        tested = [c for c in cases if c.verdict in ("holds", "fails", "inconclusive")]
        untested = [c for c in cases if c not in tested]
        listed = cases if len(untested) <= UNTESTED_LISTED else tested
        for case in listed:
            said = case_summary(case, roles)
            detail = "; ".join(d["text"] for d in said["deciding"]) or "; ".join(said["notes"])
            notes = "; ".join(said["notes"]) if said["deciding"] and said["notes"] else ""
            items.append(f'<li data-case-verdict="{esc(case.verdict)}">{esc(case.case)}: <b>{esc(case.verdict)}</b>, '
                         f"n = {case.inputs}" + (f" — {esc(detail)}" if detail else "")
                         + (f" [{esc(notes)}]" if notes else "") + "</li>")
        if listed is tested and untested:
            by_verdict: dict[str, list[Any]] = {}
            for case in untested:
                by_verdict.setdefault(case.verdict, []).append(case)
            for verdict, group in by_verdict.items():
                items.append(f'<li data-case-verdict="{esc(verdict)}">{len(group)} cases <b>{esc(verdict)}</b> '
                             f"(each case's reason in the appendix's verdicts table): "
                             + "; ".join(f"{esc(c.case)} (n = {c.inputs})" for c in group) + "</li>")
        text = f"{esc(head)}.<ul>{''.join(items)}</ul>"
    else:
        text = esc(finding.text)
    return (f'<div class="finding {css}" data-kind="{kind}" data-verdict="{esc(finding.verdict)}" '
            f'data-holds="{str(finding.holds).lower()}"><span class="verdict">'
            f"{esc(finding.verdict)}</span>{text}</div>")


def departures(config: Mapping[str, Any]) -> list[str]:
    """The run's settings that differ from the paper's (:func:`advflow.config.paper_departures`)."""
    try:
        return paper_departures(dict(config))
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        return [f"not determined ({error})"]



def title(study: Study) -> str:
    name = (study.config.get("report") or {}).get("title")
    return str(name) if name else f"Information flow of adversarial inputs: {study.dataset}"


#: The models table's caption; with a model of the user's, the columns it adds say what each column holds.
MODELS_CAPTION = "Models of this run (parameters, accuracy on the whole test split)."
USER_MODELS_CAPTION = (" Architecture: advflow's own, or yours (the module:factory that builds it); weights: loaded "
                       "from your checkpoint, or trained by the workflow's recipe.")
#: A model record's ``source`` in words (the models table's ``weights`` column).
SOURCES = {"checkpoint": "loaded from checkpoint", "trained": "trained by the workflow"}


def architecture_text(record: Mapping[str, Any]) -> str:
    """What a model record's ``architecture`` is, in a few words: a model of the user's by its ``module`` path, the
    ensemble by its members, else advflow's architecture by its name."""
    arch = record.get("architecture")
    if not isinstance(arch, Mapping):
        return str(arch or "")
    if arch.get("kind") == "user":
        return f"yours: {arch.get('module', '?')}"
    if arch.get("kind") == "ensemble":
        members = [m.get("name", "?") if isinstance(m, Mapping) else str(m) for m in arch.get("members") or []]
        return "advflow's logit average of " + ", ".join(members)
    return f"advflow's {arch.get('name', '?')}"


def model_listing(study: Study, results: RunResults) -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    """The models table (rows, columns, caption): every model of the config (advflow's in the catalog's order, then
    the user's in the config's) whose record ``models/{model}.json`` exists, with its parameters and test accuracy;
    when one is a model of the user's (``architecture.kind`` ``user``), every row also says its architecture
    (the user's ``module:factory``) and where its weights came from (``source``: a checkpoint, or trained)."""
    records = {m: results.record(m) for m in study.models if results.files.model_record(m).is_file()}
    rows = [{"model": m, "parameters": int(r.get("parameters", 0)),
             "test_accuracy": float(r.get("test_accuracy", math.nan))} for m, r in records.items()]
    users = any(isinstance(r.get("architecture"), Mapping) and r["architecture"].get("kind") == "user"
                for r in records.values())
    if not users:
        return rows, ("model", "parameters", "test_accuracy"), MODELS_CAPTION
    for row, record in zip(rows, records.values()):
        row["architecture"] = architecture_text(record)
        row["weights"] = SOURCES.get(str(record.get("source")), str(record.get("source") or ""))
    return (rows, ("model", "parameters", "test_accuracy", "architecture", "weights"),
            MODELS_CAPTION + USER_MODELS_CAPTION)


def roles_text(study: Study) -> str | None:
    """The study's roles in a line ("base: my_resnet; compressed: my_pruned; distilled: none; ..."), for the run
    settings, when one names a model other than its default; None when they are the defaults (or missing)."""
    if all(model in (None, ROLES[role]) for role, model in study.roles.items()):
        return None
    return "; ".join(f"{role}: {model or 'none'}" for role, model in study.roles.items())


def _run_summary(study: Study) -> list[tuple[str, str]]:
    config, settings = study.config, study.settings
    roles = roles_text(study)
    return [
        ("dataset", study.dataset), ("models", ", ".join(study.models)),
        *([("roles (study)", roles)] if roles else []),
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
                extra: Sequence[tuple[str, str, Any]] = (), summary: Mapping[str, Any] | None = None,
                links: Mapping[str, str] | None = None) -> str:
    """The self-contained report page; ``figures`` and the sections follow ``questions`` (each a module of
    :mod:`advflow.report` with ``KEY``, ``TITLE``, ``TABLES`` and ``setting``); ``extra`` sections ``(key, title,
    section)`` follow the questions (the defense stage's, seed 001's), each ``section(place)`` returning its HTML
    with its tables placed by ``place`` (a :class:`Placer`); ``summary`` is :func:`advflow.report.summary.record`'s
    data, shown first; ``links`` ``{"tables": ..., "results": ...}`` the folders' paths relative to the page, for the
    CSV links."""
    esc = html.escape
    place = Placer(links, study.roles)
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    models_rows, models_columns, models_caption = model_listing(study, results)
    sets_rows = [{"target": t, "attacks": ", ".join(a)} for t, a in study.attack_sets.items()]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', '<link rel="icon" href="data:,">',
        f"<title>advflow report: {esc(study.dataset)}</title><style>{CSS}</style>",
        f"<script>{IMAGE_CHECK}</script></head><body>",
        f"<h1>{esc(title(study))}</h1>",
        ('<p class="meta">A reproduction of Ji &amp; Wang, “On the Dynamics of Adversarial Input Attacks”, Section '
         'IV, on ' + esc(study.dataset) + ' with N = ' + esc("?" if study.n is None else str(study.n))
         + ' inputs per profile. Distances are (1/K) Σ<sub>k</sub> |μ<sub>1</sub><sup>(k)</sup> − '
         'μ<sub>2</sub><sup>(k)</sup>| between GP-aggregated paths (posterior means at the conv layers).</p>'),
    ]
    if summary is not None:
        parts.append(summary_html(summary, generated))
    parts += [
        "<h2>Run settings</h2>",
        '<table data-summary="run"><tbody>' + "".join(
            f'<tr><th class="text">{esc(k)}</th><td class="text">{esc(v)}</td></tr>' for k, v in _run_summary(study))
        + "</tbody></table>",
        '<nav class="contents" aria-label="Contents"><b>Contents</b><ol>'
        + '<li><a href="#summary">Summary</a></li>'
        + "".join(f'<li><a href="#{q.KEY}">{esc(q.TITLE)}</a></li>' for q in questions)
        + "".join(f'<li><a href="#{key}">{esc(name)}</a></li>' for key, name, _ in extra)
        + '<li><a href="#diagnostics">Estimator diagnostics</a></li><li><a href="#appendix">Appendix: full '
          'tables</a></li></ol></nav>',
        "<h3>Models</h3>",
        html_table("models", models_rows, models_columns, models_caption),
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
        parts += [place(name, tables.rows[name], spec.columns, spec.text(study.roles), href=f"tables:{name}")
                  for name, spec in question.TABLES.items() if name in tables.rows]
        cases = tables.cases.get(key, [])
        parts.append("<h3>Finding</h3>" + finding_html(found[key], cases=cases, roles=study.roles))
        if any(outside(i) for case in cases for i in case.intervals.values()):
            parts.append(f'<p class="note">† {esc(OUTSIDE)}.</p>')
        if any(r["question"] == key for r in tables.rows.get("intervals.csv", [])):
            parts.append('<p class="appendix-ref">Every interval of this question: <a href="#appendix-intervals-csv">'
                         'intervals</a> in the appendix (CSV: intervals.csv).</p>')
        untested = found[key].verdict not in ("holds", "fails", "holds in part", "inconclusive")
        caveat = (f'<p class="appendix-ref">The statistical verdict is “{esc(found[key].verdict)}”, so this raw '
                  f"comparison does not test the claim either; it is shown for comparison with the paper.</p>"
                  if untested else "")
        parts.append("<h3>The paper's raw comparison (secondary: one number against another, no uncertainty)</h3>"
                     + caveat + finding_html(literal[key], "literal"))
        parts.append("</section>")
    parts += [section(place) for _, _, section in extra]
    parts.append('<section id="diagnostics" data-question="diagnostics"><h2>Estimator diagnostics</h2>')
    parts += [f'<p class="note">{esc(note)}</p>' for note in tables.notes.get("diagnostics", [])]
    parts += [place(name, tables.rows[name], specs[name].columns, specs[name].text(study.roles),
                    href=f"tables:{name}") for name in diagnostics if name in tables.rows]
    parts.append("</section>")
    parts.append('<section id="appendix" data-question="appendix"><h2>Appendix: full tables</h2>'
                 '<p class="meta">The long per-set tables of the sections above; every table is also a CSV beside the '
                 'report.</p>' + "\n".join(place.appendix) + "</section></body></html>")
    return "\n".join(parts)
