"""Reading what the earlier stages wrote under ``results/{dataset}/`` (docs/method.md, "Files between stages"), found
by their names, each file read once and kept. The report fits nothing: the GP aggregates, Q5's subsets
included, come from the aggregate stage."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advflow.information.aggregate import MIN_SUBSET, AggregatedPath, read_aggregate, transfer_masks
from advflow.workflow.io import open_h5
from advflow.information.paths import InputPaths, read_input_paths, read_mi_record
from advflow.attacks.checks import check_set
from advflow.workflow.catalog import set_name

Row = dict[str, Any]


@dataclass(frozen=True)
class ResultFiles:
    """Where the earlier stages put their outputs under ``results/{dataset}/``."""

    root: Path

    def paths(self, model: str, set_: str) -> Path:
        return self.root / "paths" / model / f"{set_}.csv"

    def mi(self, model: str, set_: str) -> Path:
        """The MI file the same mi job wrote beside the paths CSV (the paths are checked against it)."""
        return self.root / "mi" / model / f"{set_}.h5"

    def aggregate(self, model: str, set_: str, subset: str | None = None) -> Path:
        """The aggregate of ``set_`` on ``model``, or of its Q5 ``subset`` (rule aggregate_subsets)."""
        return self.root / "aggregates" / model / (f"{set_}.{subset}.csv" if subset else f"{set_}.csv")

    def adversarial(self, target: str, attack: str) -> Path:
        return self.root / "adv" / target / f"{attack}.h5"

    def model_record(self, model: str) -> Path:
        return self.root / "models" / f"{model}.json"

    @property
    def attacks_table(self) -> Path:
        return self.root / "tables" / "attacks.csv"

    @property
    def transfer_table(self) -> Path:
        return self.root / "tables" / "transferability.csv"


def read_csv_rows(path: Path, numeric: Sequence[str], integer: Sequence[str] = ()) -> list[Row]:
    """The rows of a table of the attack stage, with the named columns as floats (empty: NaN) and ints."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow stage that writes it (rule attack_tables)")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in numeric:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", None) else math.nan
        for key in integer:
            if key in row and row[key] not in ("", None):
                row[key] = int(float(row[key]))
    return rows


class RunResults:
    """The files of one run, read on demand and kept: aggregates, per-input paths, success masks, records."""

    def __init__(self, files: ResultFiles) -> None:
        self.files = files
        self.aggregates: dict[tuple[str, str], dict[str, AggregatedPath]] = {}
        self._paths: dict[tuple[str, str], InputPaths] = {}
        self._attacks: list[Row] | None = None
        self._transfer: list[Row] | None = None

    def aggregate(self, model: str, set_: str, subset: str | None = None) -> dict[str, AggregatedPath]:
        """``{"iip", "oip"}`` aggregates of ``set_`` on ``model`` (or of its Q5 ``subset``)."""
        key = (model, f"{set_}.{subset}" if subset else set_)
        if key not in self.aggregates:
            path = self.files.aggregate(model, set_, subset)
            rule = "aggregate_subsets" if subset else "aggregate"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; the report needs the aggregated paths of "
                                        f"{key[1]} on {model} (rule {rule})")
            aggregated = read_aggregate(path)
            missing = [name for name in ("iip", "oip") if name not in aggregated]
            if missing:
                raise ValueError(f"{path}: no {' or '.join(missing)} rows; rerun the {rule} rule for it")
            self.aggregates[key] = aggregated
        return self.aggregates[key]

    def input_paths(self, model: str, set_: str) -> InputPaths:
        key = (model, set_)
        if key not in self._paths:
            mi = self.files.mi(model, set_)
            record = read_mi_record(mi, model=model, set_=set_) if mi.is_file() else None
            self._paths[key] = read_input_paths(self.files.paths(model, set_), record=record)
        return self._paths[key]

    def success(self, target: str, attack: str) -> tuple[np.ndarray, np.ndarray]:
        """Per input of the set: success on the target, and the true label."""
        path = self.files.adversarial(target, attack)
        with open_h5(path) as h5:
            check_set(h5, path, required=("success", "labels"))
            return h5["success"][:].astype(bool), h5["labels"][:].astype(np.int64)

    def transfer_masks(self, target: str, attack: str, model: str) -> dict[str, np.ndarray]:
        """Q5's ``transferable`` / ``non_transferable`` masks of ``attack@target`` measured on ``model``
        (:func:`advflow.information.aggregate.transfer_masks`)."""
        set_ = set_name(attack, target)
        return transfer_masks(self.input_paths(model, set_), *self.success(target, attack),
                              where=f"{self.files.paths(model, set_)} and {self.files.adversarial(target, attack)}")

    def subset_aggregate(self, target: str, attack: str, model: str, subset: str, count: int
                         ) -> dict[str, AggregatedPath] | None:
        """The aggregate of a Q5 subset of ``count`` inputs, or None below :data:`MIN_SUBSET` (not fitted)."""
        return self.aggregate(model, set_name(attack, target), subset) if count >= MIN_SUBSET else None

    def record(self, model: str) -> dict[str, Any]:
        path = self.files.model_record(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; the report needs the record of model {model} "
                                    f"(the training rules write it)")
        return json.loads(path.read_text())

    @property
    def attacks(self) -> list[Row]:
        if self._attacks is None:
            self._attacks = read_csv_rows(self.files.attacks_table,
                                          ("distortion", "distortion_l2", "confidence", "success_rate"),
                                          ("attacked",))
        return self._attacks

    @property
    def transfer(self) -> list[Row]:
        if self._transfer is None:
            self._transfer = read_csv_rows(self.files.transfer_table, ("transferability",),
                                           ("successful", "transferred"))
        return self._transfer

    def attack_row(self, target: str, attack: str) -> Row | None:
        for row in self.attacks:
            if row["target"] == target and row["attack"] == attack:
                return row
        return None
