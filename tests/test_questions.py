"""The report's questions: every registered module satisfies advflow.report.questions.Question (members, their
types, the functions' parameters), the registry holds each q* module once in the report's order, and a module
that lacks a member or takes the wrong parameters is refused."""

from __future__ import annotations

import inspect
import pkgutil
import re
import types

import pytest

import advflow.report
from advflow.report import q1
from advflow.report.questions import QUESTIONS, Question, members, problems, registry
from advflow.report.tables import TableSpec


def _fake(without: str = "", **replace) -> types.ModuleType:
    """A planted question: q1's members copied into a new module, ``without`` removed, ``replace`` set."""
    module = types.ModuleType("planted_question")
    for name in members():
        if name != without:
            setattr(module, name, getattr(q1, name))
    for name, value in replace.items():
        setattr(module, name, value)
    return module


def test_the_protocol_lists_what_the_report_calls():
    assert members() == ("KEY", "TITLE", "CLAIM", "QUOTED", "TABLES", "add_tables", "setting", "figures", "cases",
                         "literal")


@pytest.mark.parametrize("key", list(QUESTIONS))
def test_every_registered_question_satisfies_the_protocol(key):
    question = QUESTIONS[key]
    assert isinstance(question, Question)
    assert problems(question) == []
    assert question.KEY == key and isinstance(question.TITLE, str) and question.TITLE.startswith(key.upper() + ":")
    assert isinstance(question.CLAIM, str) and question.CLAIM
    assert isinstance(question.QUOTED, tuple) and all(isinstance(q, str) for q in question.QUOTED)
    assert question.TABLES and all(isinstance(n, str) and n.endswith(".csv") and isinstance(s, TableSpec)
                                   for n, s in question.TABLES.items())
    for name in ("add_tables", "setting", "figures", "cases", "literal"):
        wanted = list(inspect.signature(getattr(Question, name)).parameters)[1:]
        assert list(inspect.signature(getattr(question, name)).parameters)[:len(wanted)] == wanted, name


def test_the_registry_holds_every_question_module_once_in_the_reports_order():
    modules = sorted((m.name for m in pkgutil.iter_modules(advflow.report.__path__) if re.fullmatch(r"q\d+", m.name)),
                     key=lambda name: int(name[1:]))
    assert list(QUESTIONS) == modules == ["q1", "q2", "q3", "q4", "q5"]
    assert [q.__name__ for q in QUESTIONS.values()] == [f"advflow.report.{m}" for m in modules]
    assert len({id(q) for q in QUESTIONS.values()}) == len(QUESTIONS)


def test_the_report_iterates_the_registry():
    assert advflow.report.QUESTIONS is QUESTIONS
    assert set(advflow.report.TABLES) >= {n for q in QUESTIONS.values() for n in q.TABLES}


def test_a_key_given_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        registry(q1, _fake())


@pytest.mark.parametrize("member", members())
def test_a_module_without_a_required_member_is_not_a_question(member):
    planted = _fake(without=member)
    assert not isinstance(planted, Question)
    assert problems(planted) == [f"no {member}"]
    with pytest.raises(TypeError, match=f"not a report question: no {member}"):
        registry(planted)


def test_a_complete_planted_module_is_a_question():
    planted = _fake(KEY="q9")
    assert isinstance(planted, Question) and problems(planted) == []
    assert list(registry(q1, planted)) == ["q1", "q9"]


@pytest.mark.parametrize("replace, why", [
    ({"figures": lambda study, results, tables: []}, "figures takes (study, results, tables), not"),
    ({"cases": lambda evidence, study: []}, "cases takes (evidence, study), not (study, evidence)"),
    ({"setting": lambda study, *, html: ""}, "setting needs parameters the report does not pass: html"),
    ({"literal": lambda *, tables: None}, "literal takes its parameters by keyword only"),
    ({"literal": "not a function"}, "literal is not a function"),
    ({"KEY": 5}, "KEY is not a"),
    ({"QUOTED": ["a", "b"]}, "QUOTED is not a"),
    ({"TABLES": {"x.csv": ("a", "b")}}, "TABLES is not a"),
])
def test_the_wrong_types_or_parameters_are_refused_though_isinstance_passes(replace, why):
    planted = _fake(**replace)
    assert isinstance(planted, Question)  # runtime_checkable sees the names only
    wrong = problems(planted)
    assert len(wrong) == 1 and wrong[0].startswith(why), wrong
    with pytest.raises(TypeError, match="not a report question"):
        registry(planted)


def test_optional_further_parameters_are_allowed():
    planted = _fake(KEY="q9", setting=lambda study, detail=False: "")
    assert problems(planted) == []
