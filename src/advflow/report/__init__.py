"""The report stage: the paper's tables and figures (Section IV, Q1-Q5) from one run, and one HTML page.

:func:`build_report` reads what the earlier stages wrote under ``results/{dataset}/`` (docs/method.md, "Files between
stages"; :mod:`advflow.report.results`) and fits nothing itself: the GP aggregates, Q5's transferable and
non-transferable subsets included, come from the aggregate stage. Which sets exist follows from the config
exactly as the workflow decides what to measure (:class:`advflow.report.study.Study`). A question whose sets the
config does not ask for is skipped with a note; a set the config asks for whose file is missing is an error
naming the file.

The questions name models by **role** (config key ``study``, :data:`advflow.workflow.catalog.ROLES`): Q1 records
JSMA's crafting on the ``trajectories`` role's model, Q2 attacks ``base``, Q3 compares ``base`` with ``compressed``,
Q4 attacks ``distilled``, Q5's transferability table adds ``ensemble``'s sets. By default these are good_init,
compressed, distilled, ensemble and good_init, and the report reads as the paper's names; any role may name a
model of the user's, and the captions, notes and claims then name it ("the base model my_resnet"). A role whose
model the config lacks skips its question with a note naming the role and ``study.<role>``
(:meth:`advflow.report.study.Study.role_missing`).

One module per question holds its tables, figures, setting text and finding, statistical and literal:

====================================  =========================================================================
:mod:`advflow.report.q1`              JSMA's crafting steps on the trajectories role's model (Fig. 3)
:mod:`advflow.report.q2`              attack mechanisms on the base model (Fig. 4, Tables II, III)
:mod:`advflow.report.q3`              model complexity: base vs compressed model (Figs. 5, 8, 9, Tables IV-VI)
:mod:`advflow.report.q4`              adaptive vs regular JSMA on the distilled model (Fig. 6)
:mod:`advflow.report.q5`              transferability in the three-model group (Figs. 7, 10, 11, Tables VII-IX)
====================================  =========================================================================

Each is a :class:`advflow.report.questions.Question` (``KEY``, ``TITLE``, ``CLAIM``, ``QUOTED``, ``TABLES`` (file
name -> columns and caption; ``CLAIM`` and the captions may hold ``{role}`` placeholders, ``QUOTED`` a role's
model's name as ``{role}``, filled per study) and ``add_tables(study, results, tables)``,
``figures(study, results, tables, dpi)``, ``setting(study)``, ``cases(study, evidence)`` and ``literal(tables)``
(``tables.roles``: the study's roles)), registered in
:data:`advflow.report.questions.QUESTIONS`, which the report iterates. Shared modules: :mod:`~advflow.report.study`,
:mod:`~advflow.report.results` (reading), :mod:`~advflow.report.tables`, :mod:`~advflow.report.plotting`,
:mod:`~advflow.report.evidence` and :mod:`~advflow.report.findings` (how a finding is decided and written),
:mod:`~advflow.report.diagnostics` and :mod:`~advflow.report.page` (the HTML).

Every distance is the paper's distance of two paths, (1/K) sum_k |mu_1^(k) - mu_2^(k)|, between aggregated paths
(their GP means at the layers), except Q1's, which compares single inputs' paths. "Normal" is the aggregate of
``normal_test`` (the clean attack seeds) on the same measuring model; the paper took N random training inputs,
which ``normal_train`` is, and Table III's first row gives their distance from ``normal_test`` for scale.

Writes the tables (CSV) to ``tables_dir``, the figures (PNG at ``report.dpi``, a PDF and a ``.rst`` caption
beside each) to ``figures_dir``, ``report.html`` and ``findings.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from advflow.report import defense, diagnostics, seed001, summary
from advflow.report.findings import Finding, statistical
from advflow.report.evidence import overall
from advflow.report.page import departures, figure_html, render_html
from advflow.report.plotting import Figure, band_limits
from advflow.report.questions import QUESTIONS, Question
from advflow.report.results import ResultFiles, RunResults
from advflow.report.study import NORMAL, NORMAL_TRAIN, Study, fill, fill_names
from advflow.report.tables import TableSpec, Tables, write_table
from advflow.workflow.catalog import set_name
from advflow.workflow.figures import save, write_file

__all__ = ["build_report", "compute_tables", "QUESTIONS", "TABLES", "TABLE_COLUMNS", "Study", "set_name",
           "band_limits", "NORMAL", "NORMAL_TRAIN"]

log = logging.getLogger("advflow.report")

#: Every table the report can write: file name -> columns and caption.
TABLES: dict[str, TableSpec] = {name: spec for module in (*QUESTIONS.values(), diagnostics) for name, spec in
                                module.TABLES.items()}
TABLE_COLUMNS = {name: spec.columns for name, spec in TABLES.items()}


def _questions() -> tuple[Question, ...]:
    """The registered questions in the report's order, for the helpers that take a sequence of them."""
    return tuple(QUESTIONS.values())


def compute_tables(study: Study, results: RunResults, *, seed: int = 0) -> Tables:
    """Every table the config's sets allow, the statistical cases and diagnostics; notes say what was skipped."""
    tables = Tables(roles=dict(study.roles))
    for question in QUESTIONS.values():
        question.add_tables(study, results, tables)
    diagnostics.add_statistics(_questions(), study, results, tables, seed=seed)
    return tables


def compute_findings(tables: Tables) -> tuple[dict[str, Finding], dict[str, Finding]]:
    """Each question's statistical finding (from its cases) and the paper's literal comparison, naming the models
    of the tables' roles."""
    found = {q.KEY: statistical(fill(q.CLAIM, tables.roles), tables.cases.get(q.KEY, []),
                                overall(tables.cases.get(q.KEY, [])),
                                tuple(fill_names(n, tables.roles) for n in q.QUOTED)) for q in QUESTIONS.values()}
    return found, {q.KEY: q.literal(tables) for q in QUESTIONS.values()}


def findings_record(tables: Tables, found: Mapping[str, Finding], literal: Mapping[str, Finding],
                    study: Study) -> dict[str, Any]:
    """The findings as data (``findings.json`` beside the report): per question its verdict and text, the
    paper's literal comparison, every case with its verdict and every interval it was decided from. The report
    adds the summary, the defenses, seed 001 and the provenance (:func:`advflow.report.summary.record`)."""
    cases = diagnostics.verdict_rows(tables.cases)
    intervals = tables.rows.get("intervals.csv", [])
    return {
        "questions": {q.KEY: {"question": q.TITLE, "verdict": found[q.KEY].verdict, "text": found[q.KEY].text,
                              "literal_verdict": literal[q.KEY].verdict, "literal_text": literal[q.KEY].text,
                              "cases": [r for r in cases if r["question"] == q.KEY],
                              "intervals": [r for r in intervals if r["question"] == q.KEY]}
                      for q in QUESTIONS.values()},
        "departs_from_paper": departures(study.config),
        "bootstrap_resamples": study.resamples,
    }


def _relative(folder: Path, start: Path) -> str:
    return Path(os.path.relpath(folder.resolve(), start.resolve())).as_posix()


def build_report(results: Path, config: Mapping[str, Any], *, out_html: Path, tables_dir: Path, figures_dir: Path,
                 seed: int = 0) -> dict[str, str]:
    """Tables, figures, ``out_html`` and ``findings.json`` beside it, of the run under ``results``
    (``results/{dataset}``), for the sets ``config`` asks for; ``seed`` seeds the bootstrap. With a ``defense``
    block in the config, the defense stage's tables and figures (``results/{dataset}/defense/``) get a section.
    Returns ``{file name: caption}`` of every table and figure written."""
    results, out_html, tables_dir, figures_dir = Path(results), Path(out_html), Path(tables_dir), Path(figures_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such folder; it should hold the run's models/, paths/, aggregates/, "
                                f"adv/ and tables/")
    study = Study.from_config(config)
    run = RunResults(ResultFiles(results))
    tables = compute_tables(study, run, seed=seed)
    found, literal = compute_findings(tables)
    captions: dict[str, str] = {}
    for name, rows in tables.rows.items():
        write_table(tables_dir / name, rows, TABLES[name].columns)
        captions[name] = TABLES[name].text(study.roles)
    figures: dict[str, list[Figure]] = {}
    for key, question in QUESTIONS.items():
        figures[key] = question.figures(study, run, tables, study.dpi)
        for figure in figures[key]:
            save(figure, figures_dir)
            captions[figure.name] = figure.caption
    extra = []
    if config.get("defense") is not None:
        if not (results / "defense" / "tables").is_dir():
            raise FileNotFoundError(f"{results / 'defense' / 'tables'}: no such folder; the config has a defense "
                                    f"block, so the report needs the defense stage's tables (rule defense_tables)")
        extra.append((defense.KEY, defense.TITLE,
                      lambda place: defense.section(study, results / "defense", place, figure_html)))
    if config.get("perturbations") is not None and not (results / "seed001" / "grid").is_dir():
        raise FileNotFoundError(f"{results / 'seed001' / 'grid'}: no such folder; the config has a perturbations "
                                f"block, so the report needs seed 001's grid (rule average_grid)")
    if seed001.made(results):
        extra.append((seed001.KEY, seed001.TITLE, lambda place: seed001.section(results, place, figure_html)))
    data = summary.record(_questions(), tables.cases, found, literal, study, results)
    page = render_html(study, run, _questions(), tables, TABLES, found, literal, figures, tuple(diagnostics.TABLES),
                       extra, data, links={"tables": _relative(tables_dir, out_html.parent),
                                           "results": _relative(results, out_html.parent)})
    write_file(out_html, page)
    write_file(out_html.with_name("findings.json"),
               json.dumps({**findings_record(tables, found, literal, study), **data}, indent=1, allow_nan=True)
               + "\n")
    for key in found:
        log.info("%s: %s", key, found[key].text)
        log.info("%s (literal): %s", key, literal[key].text)
    log.info("report: %d tables, %d figures, %s", len(tables.rows), sum(map(len, figures.values())), out_html)
    return captions
