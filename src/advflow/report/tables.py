"""The report's tables as rows of plain dicts, the distances they share, and how a table is written (CSV)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advflow.information.aggregate import AggregatedPath, aggregated_distance, fit_flags
from advflow.workflow.catalog import ROLES, control_name, is_control
from advflow.workflow.tabular import write_table  # noqa: F401 (the report's tables are written with it)
from advflow.report.results import Row, RunResults
from advflow.report.study import NORMAL, fill

log = logging.getLogger("advflow.report")


@dataclass(frozen=True)
class TableSpec:
    """A table's CSV columns and its caption; the caption may name a role's model as ``{role}`` (``{+role}``),
    filled per study by :meth:`text`."""

    columns: tuple[str, ...]
    caption: str

    def text(self, roles: Mapping[str, str | None] | None = None) -> str:
        """The caption with the roles' models (:func:`advflow.report.study.fill`; the defaults without ``roles``)."""
        return fill(self.caption, roles)


@dataclass
class Tables:
    """The report's tables (file name -> rows), the statistical cases of each question, notes on what was
    skipped and why (question key -> sentences), and the study's roles the tables follow (``{role: model or
    None}``, :attr:`advflow.report.study.Study.roles`; the defaults unless given), from which the paper's literal
    readings name their models."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    cases: dict[str, list[Any]] = field(default_factory=dict)
    roles: dict[str, str | None] = field(default_factory=lambda: dict(ROLES))

    def note(self, question: str, text: str) -> None:
        self.notes.setdefault(question, []).append(text)
        log.info("%s: %s", question, text)


def gp_flag(*aggregates: Mapping[str, AggregatedPath]) -> str:
    """The fit flags of these aggregates' IIP and OIP (:func:`advflow.information.aggregate.fit_flags`), for a table's
    ``gp_flag`` column; empty when every fit is usable."""
    return "; ".join(f"{name.upper()}: {', '.join(flags)}" for a in aggregates for name in ("iip", "oip")
                     if (flags := fit_flags(a[name])))


def distance_from_normal(results: RunResults, model: str, set_: str, normal: str = NORMAL) -> Row:
    """``measured_on, set, normal, iip_distance, oip_distance, gp_flag``: the distances of ``set_``'s
    aggregated IIP and OIP on ``model`` from those of ``normal`` on the same model."""
    adversarial, reference = results.aggregate(model, set_), results.aggregate(model, normal)
    return {"measured_on": model, "set": set_, "normal": normal,
            "iip_distance": aggregated_distance(adversarial["iip"], reference["iip"]),
            "oip_distance": aggregated_distance(adversarial["oip"], reference["oip"]),
            "gp_flag": gp_flag(adversarial, reference)}


def success_rate(results: RunResults, target: str, attack: str) -> float:
    row = results.attack_row(target, attack)
    return float(row["success_rate"]) if row else math.nan


def attack_rows(results: RunResults, targets: Iterable[str], attacks_of: Callable[[str], Iterable[str]]) -> list[Row]:
    """Rows of ``tables/attacks.csv`` for each target's attacks, each attack followed by its control."""
    return [row for t in targets for a in attacks_of(t) for name in (a, control_name(a))
            for row in [results.attack_row(t, name)] if row is not None]


def model_rows(results: RunResults, models: Sequence[str], *, ratio_to: str | None = None) -> list[Row]:
    """Parameters and test accuracy of each model (Tables IV, VII), with the parameter ratio to ``ratio_to``."""
    records = {m: results.record(m) for m in models}
    rows = []
    for model, record in records.items():
        row = {"model": model, "parameters": int(record["parameters"]),
               "test_accuracy": float(record.get("test_accuracy", math.nan))}
        if ratio_to is not None:
            row["parameter_ratio"] = row["parameters"] / int(records[ratio_to]["parameters"])
        rows.append(row)
    return rows


def without_controls(rows: Iterable[Row]) -> list[Row]:
    """The rows of attacks, not of their random controls (what the paper's literal comparisons read)."""
    return [r for r in rows if not is_control(str(r.get("attack", "")))]


#END
