"""What a question of the report is, and the registry of the questions in the report's order.

A question is a module (:mod:`advflow.report.q1` ... :mod:`advflow.report.q5`) that satisfies :class:`Question`:
its key, title, claim, the interval names its finding quotes, its tables, and the five functions the report
calls (tables, setting text, figures, statistical cases, the paper's literal comparison). :data:`QUESTIONS`
maps each key to its module; :func:`advflow.report.build_report` and everything it drives iterate it, so a
question is added by writing its module and registering it here. A module that lacks a member, gives one the
wrong type or a function the wrong parameters is refused when the registry is built (:func:`problems`).

The defense and seed 001 sections (:mod:`advflow.report.defense`, :mod:`advflow.report.seed001`) are not
questions: they have no cases or findings, read different inputs (``section(study, root, ...)`` vs
``section(results, ...)``) and are added only when the config asks for them, so they are not registered here.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from advflow.report import q1, q2, q3, q4, q5
from advflow.report.evidence import Case, Evidence
from advflow.report.findings import Finding
from advflow.report.plotting import Figure
from advflow.report.results import RunResults
from advflow.report.study import Study
from advflow.report.tables import TableSpec, Tables


@runtime_checkable
class Question(Protocol):
    """One question of the paper's Section IV, as the report drives it."""

    #: Short key: the section's anchor, the ``question`` column of verdicts.csv and intervals.csv.
    KEY: str
    #: The question as the paper asks it (the section's heading).
    TITLE: str
    #: What the statistical finding decides, in one sentence; ``{role}`` / ``{+role}`` name a role's model, filled
    #: per study (:func:`advflow.report.study.fill`).
    CLAIM: str
    #: The interval names the finding's text quotes; ``{role}`` is a role's model's name (``oip_gap_{base}``,
    #: :func:`advflow.report.study.fill_names`).
    QUOTED: tuple[str, ...]
    #: The tables the question can write: file name -> columns and caption (which may hold ``{role}`` too).
    TABLES: Mapping[str, TableSpec]

    def add_tables(self, study: Study, results: RunResults, tables: Tables) -> None:
        """Add the question's rows (and notes on what was skipped) to ``tables``."""

    def setting(self, study: Study) -> str:
        """The section's first paragraph: what was run for this question (HTML)."""

    def figures(self, study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
        """The question's figures."""

    def cases(self, study: Study, evidence: Evidence) -> list[Case]:
        """The statistical cases its finding is decided from."""

    def literal(self, tables: Tables) -> Finding:
        """The paper's literal comparison, from the tables (``tables.roles`` names the study's models)."""


def members() -> tuple[str, ...]:
    """The members every question provides: its data (annotated) and its functions, in the Protocol's order."""
    data = tuple(Question.__annotations__)
    functions = tuple(name for name, value in vars(Question).items()
                      if inspect.isfunction(value) and not name.startswith("_"))
    return data + functions


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is a ``hint`` (str, tuple[X, ...], Mapping[K, V]): enough for the Protocol's data."""
    origin = typing.get_origin(hint)
    if origin is None:
        return isinstance(value, hint)
    if not isinstance(value, origin):
        return False
    args = typing.get_args(hint)
    if origin is tuple:
        item = args[0]
        return all(_has_type(v, item) for v in value)
    if issubclass(origin, Mapping):
        key, item = args
        return all(_has_type(k, key) and _has_type(v, item) for k, v in value.items())
    return True


def _fits(function: Any, required: Any) -> str | None:
    """Why ``function`` cannot be called as the Protocol's ``required`` method is (positionally, by the same
    parameter names, any further parameter optional), or None."""
    if not callable(function):
        return "is not a function"
    wanted = list(inspect.signature(required).parameters.values())[1:]  # without self
    try:
        given = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return "has no signature"
    names = [p.name for p in given[:len(wanted)]]
    if names != [p.name for p in wanted]:
        return f"takes ({', '.join(p.name for p in given)}), not ({', '.join(p.name for p in wanted)})"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in positional for p in given[:len(wanted)]):
        return "takes its parameters by keyword only"
    extra = [p.name for p in given[len(wanted):] if p.default is inspect.Parameter.empty
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if extra:
        return f"needs parameters the report does not pass: {', '.join(extra)}"
    return None


def problems(candidate: Any) -> list[str]:
    """What keeps ``candidate`` (a module) from being a :class:`Question`: members missing, of the wrong type, or
    functions with the wrong parameters. Empty when it is one."""
    hints = typing.get_type_hints(Question)
    found = []
    for name in members():
        if not hasattr(candidate, name):
            found.append(f"no {name}")
            continue
        value = getattr(candidate, name)
        if name in hints:
            if not _has_type(value, hints[name]):
                found.append(f"{name} is not a {hints[name]}: {value!r}"[:200])
        else:
            why = _fits(value, getattr(Question, name))
            if why:
                found.append(f"{name} {why}")
    return found


def registry(*modules: types.ModuleType) -> dict[str, Question]:
    """``{KEY: module}`` of ``modules`` in their order; TypeError for a module that is not a :class:`Question`,
    ValueError for a key given twice."""
    out: dict[str, Question] = {}
    for module in modules:
        wrong = problems(module)
        if wrong or not isinstance(module, Question):
            raise TypeError(f"{getattr(module, '__name__', module)} is not a report question: {'; '.join(wrong)}")
        if module.KEY in out:
            raise ValueError(f"question key {module.KEY!r} is registered twice ({out[module.KEY].__name__} and "
                             f"{module.__name__})")
        out[module.KEY] = module
    return out


#: The report's questions, in its order: key -> module.
QUESTIONS: dict[str, Question] = registry(q1, q2, q3, q4, q5)
