"""The report stage: the paper's tables and figures (Section IV, Q1-Q5) from one run, and one HTML page.

:func:`build_report` reads what the earlier stages wrote under ``results/{dataset}/`` (SPEC, "Files between
stages"), found by their names:

- ``models/{model}.json`` (parameters, test accuracy), ``tables/attacks.csv`` (Table II / VIII rows),
  ``tables/transferability.csv`` (Table VI rows);
- ``paths/{model}/{set}.csv``: per-input information paths (``mu_s`` = IIP, ``mu_t`` = OIP at layer k);
- ``aggregates/{model}/{set}.csv``: the GP-aggregated paths (:func:`advflow.aggregate.read_aggregate`);
- ``adv/{target}/{attack}.h5``: per-input ``success`` on the target (same order as the paths' ``input``).

Which sets exist follows from the config exactly as the workflow decides what to measure
(``attack_sets``, ``transfer_groups``, ``trajectories.n``): :class:`Study`. A question whose sets the
config does not ask for is skipped with a note in the report; a set the config asks for but whose file is
missing is an error naming the file.

Every distance is the paper's distance of two paths, (1/K) sum_k |mu_1^(k) - mu_2^(k)|
(:func:`advflow.paths.path_distance`), between aggregated paths (their GP means at the layers,
:func:`advflow.aggregate.aggregated_distance`), except Q1's, which compares single inputs' paths. "Normal"
is the aggregate of ``normal_test`` (the clean attack seeds) on the same measuring model; the paper took N
random training inputs, which ``normal_train`` is, and Table III's first row gives their distance from
``normal_test`` for scale.

Tables written to ``tables_dir`` (CSV; columns listed in :data:`TABLE_COLUMNS`):

=================================  ==========================================================================
``table3_distance_from_normal``    Q2, Table III: each attack set on good_init against normal
``table5_complexity``              Q3, Table V: good_init / compressed, sets targeting itself and the other
``q4_defense``                     Q4: regular (control) and adaptive JSMA on the distilled model
``table9_transfer``                Q5, Table IX: each target and inference model of the three-model group
``q5_transferable``                Q5: transferable and non-transferable inputs of each transferred set, each
                                   subset GP-aggregated here (:func:`advflow.aggregate.aggregate_frame`)
``q1_trajectory``                  Q1: each JSMA crafting step's deviation from step 0
``table2_attacks``, ``table8_attacks``, ``table6_transferability``, ``q5_transferability``, ``table4_models``,
``table7_models``: selections of the attack stage's tables and the model records
=================================  ==========================================================================

Figures (PNG, in ``figures_dir``, each with a ``{name}.rst`` caption for Snakemake's ``report()``) show
three panels per row, IIP | OIP | IOC, as in the paper's Figures 3-7: the aggregated mean at the conv layers
(points joined by lines) with its 95 % band (never below 0 for MI), and the IOC as the pair of means (IIP mean, OIP mean) at each layer. The findings
(:mod:`advflow.findings`) are computed from the tables. ``report.html`` is one self-contained file: figures
as base64 data URIs, inline CSS, and a small script that records on load how many images decoded
(``data-images-decoded`` / ``data-images-total`` on ``<body>``) for a headless browser to check.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import functools
import html
import io
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow import decisions, findings, shifts
from advflow.aggregate import (AggregatedPath, aggregate_frame, aggregated_distance, fit_flags, read_aggregate,
                               read_paths_csv)
from advflow.catalog import CONTROL_PREFIX, MODELS, measurements, trajectories_wanted
from advflow.config import ConfigError, attack_settings, model_settings, paper_departures
from advflow.io import atomic_path, open_h5
from advflow.paths import path_distance

log = logging.getLogger("advflow.report")

#: The normal profile the adversarial sets are compared with (the clean attack seeds).
NORMAL = "normal_test"
#: N random training inputs: the paper's normal profile, shown as a baseline.
NORMAL_TRAIN = "normal_train"
#: Q1's per-step paths of JSMA crafting trajectories on good_init.
TRAJECTORY = "trajectory@good_init"
Q2_MODEL = "good_init"
#: Q3's pair: the original model and its Network Trimming compression.
Q3_MODELS = ("good_init", "compressed")
Q4_MODEL = "distilled"
#: Q4's attacks on the distilled model: the regular JSMA at the adaptive one's theta, gamma, and the adaptive.
Q4_ATTACKS = ("jsma_control", "jsma_adaptive")
#: The attack the paper's Figures 5 and 7 show.
FIGURE_ATTACK = "jsma"
#: Fewest inputs a transferable / non-transferable subset needs to be aggregated.
MIN_SUBSET = 2
DISTANCE_COLUMNS = ("iip_distance", "oip_distance")

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "table3_distance_from_normal.csv": ("measured_on", "attack", "set", "normal", "iip_distance", "oip_distance",
                                        "success_rate", "gp_flag"),
    "table5_complexity.csv": ("attack", "measured_on", "target", "relation", "set", "normal", "iip_distance",
                              "oip_distance", "average_distance", "gp_flag"),
    "q4_defense.csv": ("measured_on", "attack", "set", "normal", "iip_distance", "oip_distance", "success_rate",
                       "attacked", "gp_flag"),
    "table9_transfer.csv": ("attack", "target", "measured_on", "set", "normal", "iip_distance", "oip_distance",
                            "gp_flag"),
    "q5_transferable.csv": ("attack", "target", "measured_on", "set", "subset", "inputs", "normal", "iip_distance",
                            "oip_distance"),
    "q1_trajectory.csv": ("seed", "step", "input", "label", "prediction", "iip_deviation", "oip_deviation"),
    "table4_models.csv": ("model", "parameters", "test_accuracy", "parameter_ratio"),
    "table7_models.csv": ("model", "parameters", "test_accuracy"),
    "table2_attacks.csv": ("target", "attack", "norm", "distortion", "distortion_l2", "confidence", "success_rate",
                           "attacked"),
    "table8_attacks.csv": ("target", "attack", "norm", "distortion", "distortion_l2", "confidence", "success_rate",
                           "attacked"),
    "table6_transferability.csv": ("attack", "target", "measured_on", "successful", "transferred",
                                   "transferability"),
    "q5_transferability.csv": ("attack", "target", "measured_on", "successful", "transferred", "transferability"),
    "table5_gap.csv": ("attack", "measured_on", "iip_gap", "oip_gap", "average_gap"),
    "q4_perturbation.csv": ("attack", "attacked", "successful", "success_rate", "unchanged", "l0_mean", "l0_median",
                            "l2_mean", "l2_median"),
    "verdicts.csv": ("question", "case", "verdict", "inputs", "note"),
    "intervals.csv": ("question", "case", "quantity", "inputs", "estimate", "lower", "upper", "verdict"),
    "sensitivity.csv": ("question", "case", "verdict", "verdict_other_estimator", "changed"),
    "dead_maps.csv": ("model", "layer", "dead_share", "all_dead", "iip_spread", "oip_spread", "flag"),
}
#: Bootstrap resamples of every interval when the config's ``report.bootstrap_resamples`` is not set.
DEFAULT_RESAMPLES = 1000

Row = dict[str, Any]


def set_name(attack: str, target: str) -> str:
    """The name of the adversarial set crafted by ``attack`` on ``target``: ``{attack}@{target}``."""
    return f"{attack}@{target}"


# ---------------------------------------------------------------------------------------------------------
# What the config asks for


def _model_order(model: str) -> int:
    return MODELS.index(model) if model in MODELS else len(MODELS)


@dataclass(frozen=True)
class Study:
    """The experiments a config asks for: which sets exist and which model measures which set, decided as
    the workflow decides it (``rules/common.smk``, ``measurements``)."""

    dataset: str
    seed: int
    n: int | None
    models: tuple[str, ...]
    attack_sets: dict[str, tuple[str, ...]]
    transfer_groups: tuple[tuple[str, ...], ...]
    trajectories: int
    config: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Study:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping; got {type(config).__name__}")
        for key in ("dataset", "models"):
            if key not in config:
                raise ConfigError(f"config is missing the key '{key}'; the report needs it")
        attack_sets = {str(t): tuple(a) for t, a in sorted((config.get("attack_sets") or {}).items(),
                                                           key=lambda item: _model_order(item[0])) if a}
        groups = tuple(tuple(g) for g in config.get("transfer_groups") or [])
        n = (config.get("inputs") or {}).get("n")
        trajectories = int((config.get("trajectories") or {}).get("n", 0) or 0)
        models = tuple(sorted(config["models"], key=_model_order))  # the catalog's order, however the config is
        return cls(str(config["dataset"]), int(config.get("seed", 0) or 0), None if n is None else int(n), models,
                   attack_sets, groups, trajectories, config)

    def attacks_on(self, target: str) -> tuple[str, ...]:
        return self.attack_sets.get(target, ())

    @property
    def bias_corrected(self) -> bool:
        """Whether the run's paths have the MI of position-shuffled maps subtracted (``mi.bias_correction``)."""
        return bool((self.config.get("mi") or {}).get("bias_correction", False))

    @property
    def resamples(self) -> int:
        return int((self.config.get("report") or {}).get("bootstrap_resamples", DEFAULT_RESAMPLES))

    def measured(self, model: str, set_: str) -> bool:
        """Whether the workflow measures ``set_`` on ``model`` (and so wrote its paths and aggregate)."""
        return (model, set_) in self._measurements

    def measuring_models(self) -> set[str]:
        return {model for model, _ in self._measurements}

    @functools.cached_property
    def _measurements(self) -> set[tuple[str, str]]:
        attack_sets = {t: list(a) for t, a in self.attack_sets.items()}
        return set(measurements(attack_sets, [list(g) for g in self.transfer_groups], self.trajectories))

    @property
    def has_trajectories(self) -> bool:
        return trajectories_wanted({t: list(a) for t, a in self.attack_sets.items()}, self.trajectories)

    @property
    def q3_attacks(self) -> tuple[str, ...]:
        """Q3's attacks: those crafted on both good_init and compressed (good_init's order)."""
        if not all(m in self.attack_sets for m in Q3_MODELS):
            return ()
        return tuple(a for a in self.attacks_on(Q3_MODELS[0]) if a in self.attacks_on(Q3_MODELS[1]))

    @property
    def q5_group(self) -> tuple[str, ...]:
        """Q5's models: the first transfer group of three or more attacked models (the ensemble aside)."""
        for group in self.transfer_groups:
            members = tuple(m for m in group if m != "ensemble" and m in self.attack_sets)
            if len(members) >= 3:
                return members
        return ()

    @property
    def q5_attacks(self) -> tuple[str, ...]:
        """Q5's attacks: those crafted on every model of the Q5 group."""
        group = self.q5_group
        if not group:
            return ()
        return tuple(a for a in self.attacks_on(group[0]) if all(a in self.attacks_on(m) for m in group))


# ---------------------------------------------------------------------------------------------------------
# Reading the results


@dataclass(frozen=True)
class ResultFiles:
    """Where the earlier stages put their outputs under ``results/{dataset}/``."""

    root: Path

    def paths(self, model: str, set_: str) -> Path:
        return self.root / "paths" / model / f"{set_}.csv"

    def aggregate(self, model: str, set_: str) -> Path:
        return self.root / "aggregates" / model / f"{set_}.csv"

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


@dataclass(frozen=True)
class InputPaths:
    """The per-input paths of one set on one model, inputs in the order of their ``input`` index:
    ``layers (K,)``, ``mu_s``, ``mu_t (N, K)``, ``label``, ``prediction (N,)`` and, for trajectories,
    ``seed``, ``step (N,)``."""

    inputs: np.ndarray
    layers: np.ndarray
    mu_s: np.ndarray
    mu_t: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    seed: np.ndarray | None = None
    step: np.ndarray | None = None
    bias_s: np.ndarray | None = None  # (N, K): MI of position-shuffled maps (the estimator's bias), when recorded
    bias_t: np.ndarray | None = None
    dead: np.ndarray | None = None  # (N, K): share of the layer's maps that are constant


def read_input_paths(path: Path) -> InputPaths:
    """A paths CSV as one row of K layers per input; every input must have every layer once."""
    columns = read_paths_csv(path)
    for name in ("input", "label", "prediction"):
        if name not in columns:
            raise ValueError(f"{path}: missing column {name}; a paths CSV has input, layer, layer_name, mu_s, mu_t, "
                             f"label, prediction")
    try:
        index = columns["input"].astype(np.int64)
    except ValueError as error:
        raise ValueError(f"{path}: column input must hold integers ({error})") from error
    inputs, row_of = np.unique(index, return_inverse=True)
    layers, col_of = np.unique(columns["layer"], return_inverse=True)
    n, k = inputs.size, layers.size
    counts = np.zeros((n, k), dtype=np.int64)
    np.add.at(counts, (row_of, col_of), 1)
    if not (counts == 1).all():
        bad = np.argwhere(counts != 1)[0]
        raise ValueError(f"{path}: input {inputs[bad[0]]} has {counts[tuple(bad)]} rows for layer "
                         f"{layers[bad[1]]:g}; every input needs exactly one row per layer")
    def per_layer(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        values = np.empty((n, k))
        values[row_of, col_of] = columns[name].astype(np.float64)
        return values

    mu_s, mu_t = per_layer("mu_s"), per_layer("mu_t")
    first = np.zeros(n, dtype=np.int64)
    first[row_of[::-1]] = np.arange(index.size)[::-1]  # a row of each input, for its per-input columns

    def per_input(name: str) -> np.ndarray | None:
        return columns[name][first] if name in columns else None

    step = per_input("step")
    return InputPaths(inputs, layers, mu_s, mu_t, per_input("label").astype(np.int64),
                      per_input("prediction").astype(np.int64), per_input("seed"),
                      None if step is None else step.astype(np.int64), per_layer("mu_s_bias"), per_layer("mu_t_bias"),
                      per_layer("dead"))


def _read_csv_rows(path: Path, numeric: Sequence[str], integer: Sequence[str] = ()) -> list[Row]:
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
        self._aggregates: dict[tuple[str, str], dict[str, AggregatedPath]] = {}
        self._paths: dict[tuple[str, str], InputPaths] = {}
        self._attacks: list[Row] | None = None
        self._transfer: list[Row] | None = None

    def aggregate(self, model: str, set_: str) -> dict[str, AggregatedPath]:
        key = (model, set_)
        if key not in self._aggregates:
            path = self.files.aggregate(model, set_)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; the report needs the aggregated paths of {set_} on "
                                        f"{model} (rule aggregate)")
            aggregated = read_aggregate(path)
            missing = [name for name in ("iip", "oip") if name not in aggregated]
            if missing:
                raise ValueError(f"{path}: no {' or '.join(missing)} rows; rerun the aggregate rule for it")
            self._aggregates[key] = aggregated
        return self._aggregates[key]

    def input_paths(self, model: str, set_: str) -> InputPaths:
        key = (model, set_)
        if key not in self._paths:
            self._paths[key] = read_input_paths(self.files.paths(model, set_))
        return self._paths[key]

    def success(self, target: str, attack: str) -> tuple[np.ndarray, np.ndarray]:
        """Per input of the set: success on the target, and the true label."""
        with open_h5(self.files.adversarial(target, attack)) as h5:
            return h5["success"][:].astype(bool), h5["labels"][:].astype(np.int64)

    def record(self, model: str) -> dict[str, Any]:
        path = self.files.model_record(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; the report needs the record of model {model} "
                                    f"(the training rules write it)")
        return json.loads(path.read_text())

    @property
    def attacks(self) -> list[Row]:
        if self._attacks is None:
            self._attacks = _read_csv_rows(self.files.attacks_table,
                                           ("distortion", "distortion_l2", "confidence", "success_rate"),
                                           ("attacked",))
        return self._attacks

    @property
    def transfer(self) -> list[Row]:
        if self._transfer is None:
            self._transfer = _read_csv_rows(self.files.transfer_table, ("transferability",),
                                            ("successful", "transferred"))
        return self._transfer

    def attack_row(self, target: str, attack: str) -> Row | None:
        for row in self.attacks:
            if row["target"] == target and row["attack"] == attack:
                return row
        return None


# ---------------------------------------------------------------------------------------------------------
# Tables


def distance_from_normal(results: RunResults, model: str, set_: str, normal: str = NORMAL) -> Row:
    """``measured_on, set, normal, iip_distance, oip_distance``: the distances of ``set_``'s aggregated IIP
    and OIP on ``model`` from those of ``normal`` on the same model."""
    adversarial, reference = results.aggregate(model, set_), results.aggregate(model, normal)
    return {"measured_on": model, "set": set_, "normal": normal,
            "iip_distance": aggregated_distance(adversarial["iip"], reference["iip"]),
            "oip_distance": aggregated_distance(adversarial["oip"], reference["oip"]),
            "gp_flag": _gp_flag(adversarial, reference)}


@dataclass
class Tables:
    """The report's tables as rows (file name -> rows), the aggregates of Q5's subsets, and notes on
    what was skipped."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    subsets: dict[tuple[str, str, str, str], dict[str, AggregatedPath]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    cases: dict[str, list[decisions.Case]] = field(default_factory=dict)

    def note(self, question: str, text: str) -> None:
        self.notes.setdefault(question, []).append(text)
        log.info("%s: %s", question, text)


def _success_rate(results: RunResults, target: str, attack: str) -> float:
    row = results.attack_row(target, attack)
    return float(row["success_rate"]) if row else math.nan


def table3_rows(study: Study, results: RunResults) -> list[Row]:
    """Q2, Table III: normal_train, then each attack set on good_init, against normal on good_init."""
    rows = [{**distance_from_normal(results, Q2_MODEL, NORMAL_TRAIN), "attack": "", "success_rate": math.nan}]
    for attack in study.attacks_on(Q2_MODEL):
        for name in (attack, CONTROL_PREFIX + attack):  # each attack, then its random control
            rows.append({**distance_from_normal(results, Q2_MODEL, set_name(name, Q2_MODEL)), "attack": name,
                         "success_rate": _success_rate(results, Q2_MODEL, name)})
    return rows


def table5_rows(study: Study, results: RunResults) -> tuple[list[Row], list[str]]:
    """Q3, Table V: on each of good_init and compressed, sets targeting itself and the other model."""
    rows, missing = [], []
    for attack in study.q3_attacks:
        for model in Q3_MODELS:
            other = Q3_MODELS[1] if model == Q3_MODELS[0] else Q3_MODELS[0]
            for target, relation in ((model, "itself"), (other, "other")):
                set_ = set_name(attack, target)
                if not study.measured(model, set_):
                    missing.append(f"{set_} on {model}")
                    continue
                row = distance_from_normal(results, model, set_)
                rows.append({**row, "attack": attack, "target": target, "relation": relation,
                             "average_distance": (row["iip_distance"] + row["oip_distance"]) / 2})
    return rows, missing


def q4_rows(study: Study, results: RunResults) -> list[Row]:
    """Q4: the regular (control) and adaptive JSMA sets on the distilled model against normal."""
    rows = []
    for attack in Q4_ATTACKS:
        if attack in study.attacks_on(Q4_MODEL):
            for name in (attack, CONTROL_PREFIX + attack):
                row = results.attack_row(Q4_MODEL, name) or {}
                rows.append({**distance_from_normal(results, Q4_MODEL, set_name(name, Q4_MODEL)), "attack": name,
                             "success_rate": float(row.get("success_rate", math.nan)),
                             "attacked": row.get("attacked", "")})
    return rows


def table5_gap_rows(study: Study, results: RunResults) -> list[Row]:
    """Table V as the paper reads it: on each model, the distance between the aggregated paths of the set
    targeting it and the set targeting the other model."""
    rows = []
    for attack in study.q3_attacks:
        for model in Q3_MODELS:
            other = Q3_MODELS[1] if model == Q3_MODELS[0] else Q3_MODELS[0]
            own, foreign = set_name(attack, model), set_name(attack, other)
            if not (study.measured(model, own) and study.measured(model, foreign)):
                continue
            a, b = results.aggregate(model, own), results.aggregate(model, foreign)
            iip, oip = aggregated_distance(a["iip"], b["iip"]), aggregated_distance(a["oip"], b["oip"])
            rows.append({"attack": attack, "measured_on": model, "iip_gap": iip, "oip_gap": oip,
                         "average_gap": (iip + oip) / 2})
    return rows


def table9_rows(study: Study, results: RunResults) -> list[Row]:
    """Q5, Table IX: each attack's set targeting each model of the group, measured on each model."""
    rows = []
    for attack in study.q5_attacks:
        for target in study.q5_group:
            for model in study.q5_group:
                set_ = set_name(attack, target)
                if study.measured(model, set_):
                    rows.append({**distance_from_normal(results, model, set_), "attack": attack, "target": target})
    return rows


def transferable_split(results: RunResults, target: str, attack: str, model: str) -> dict[str, np.ndarray]:
    """Masks over the inputs of ``attack@target`` measured on ``model``: ``transferable`` (successful on the
    target and misclassified by ``model``) and ``non_transferable`` (successful on the target, classified
    correctly by ``model``)."""
    set_ = set_name(attack, target)
    paths = results.input_paths(model, set_)
    success, labels = results.success(target, attack)
    if success.size != paths.inputs.size or not np.array_equal(paths.inputs, np.arange(success.size)):
        raise ValueError(f"{results.files.paths(model, set_)}: inputs {paths.inputs.tolist()} do not match the "
                         f"{success.size} inputs of {results.files.adversarial(target, attack)}")
    if not np.array_equal(paths.label, labels):
        raise ValueError(f"{results.files.paths(model, set_)}: labels differ from those of "
                         f"{results.files.adversarial(target, attack)}; the two files are not of the same set")
    fooled = paths.prediction != paths.label
    return {"transferable": success & fooled, "non_transferable": success & ~fooled}


def q5_transferable_rows(study: Study, results: RunResults, *, seed: int, grid_step: float
                         ) -> tuple[list[Row], dict[tuple[str, str, str, str], dict[str, AggregatedPath]]]:
    """Q5: per set crafted on T and measured on M != T, the GP aggregates of its transferable and
    non-transferable inputs on M and their distances from normal on M (NaN below :data:`MIN_SUBSET`)."""
    rows, subsets = [], {}
    for attack in study.q5_attacks:
        for target in study.q5_group:
            for model in study.q5_group:
                set_ = set_name(attack, target)
                if model == target or not study.measured(model, set_):
                    continue
                masks = transferable_split(results, target, attack, model)
                paths = results.input_paths(model, set_)
                normal = results.aggregate(model, NORMAL)
                for subset, mask in masks.items():
                    row = {"attack": attack, "target": target, "measured_on": model, "set": set_, "subset": subset,
                           "inputs": int(mask.sum()), "normal": NORMAL, "iip_distance": math.nan,
                           "oip_distance": math.nan}
                    if mask.sum() >= MIN_SUBSET:
                        k = paths.layers.size
                        layers = np.tile(paths.layers, int(mask.sum()))
                        try:
                            aggregated = aggregate_frame(layers, paths.mu_s[mask].reshape(-1),
                                                         paths.mu_t[mask].reshape(-1), seed=seed,
                                                         grid_step=grid_step)
                        except (ValueError, RuntimeError) as error:
                            raise RuntimeError(f"the GP fit of the {int(mask.sum())} {subset} inputs of {set_} on "
                                               f"{model} failed (seed {seed}): {error}") from error
                        assert aggregated["iip"].layers.size == k
                        subsets[(attack, target, model, subset)] = aggregated
                        row["iip_distance"] = aggregated_distance(aggregated["iip"], normal["iip"])
                        row["oip_distance"] = aggregated_distance(aggregated["oip"], normal["oip"])
                    rows.append(row)
    return rows, subsets


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(path_distance(torch.as_tensor(a), torch.as_tensor(b)))


def q1_rows(results: RunResults) -> list[Row]:
    """Q1: for each trajectory seed and step, the IIP and OIP distance of that step's path from step 0's
    (single inputs' paths, not aggregates)."""
    paths = results.input_paths("good_init", TRAJECTORY)
    if paths.seed is None or paths.step is None:
        raise ValueError(f"{results.files.paths('good_init', TRAJECTORY)}: a trajectory paths CSV needs the columns "
                         f"seed and step")
    rows = []
    for seed in sorted(set(paths.seed.tolist()), key=_natural):
        mine = np.flatnonzero(paths.seed == seed)
        mine = mine[np.argsort(paths.step[mine], kind="stable")]
        start = mine[0]
        if paths.step[start] != 0:
            raise ValueError(f"{results.files.paths('good_init', TRAJECTORY)}: seed {seed} has no step 0")
        for i in mine:
            rows.append({"seed": _natural(seed), "step": int(paths.step[i]), "input": int(paths.inputs[i]),
                         "label": int(paths.label[i]), "prediction": int(paths.prediction[i]),
                         "iip_deviation": _distance(paths.mu_s[i], paths.mu_s[start]),
                         "oip_deviation": _distance(paths.mu_t[i], paths.mu_t[start])})
    return rows


def _natural(value: str) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


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


def compute_tables(study: Study, results: RunResults, *, seed: int = 0) -> Tables:
    """Every table the config's sets allow; notes say which were skipped and why."""
    tables = Tables()
    grid_step = float((study.config.get("aggregate") or {}).get("grid_step", 0.05))

    if study.has_trajectories:
        tables.rows["q1_trajectory.csv"] = q1_rows(results)
    else:
        tables.note("q1", "skipped: the config records no JSMA trajectories on good_init (attack_sets.good_init "
                          "lacks jsma, or trajectories.n is 0)")

    if study.attacks_on(Q2_MODEL):
        tables.rows["table3_distance_from_normal.csv"] = table3_rows(study, results)
    else:
        tables.note("q2", "skipped: attack_sets.good_init is empty, so there are no attack sets to compare")
    attack_targets = [Q2_MODEL] + ([Q3_MODELS[1]] if study.q3_attacks else [])
    def attack_rows(targets: Iterable[str], attacks_of: Any) -> list[Row]:
        """Rows of tables/attacks.csv for each target's attacks, each attack followed by its control."""
        return [row for t in targets for a in attacks_of(t) for name in (a, CONTROL_PREFIX + a)
                for row in [results.attack_row(t, name)] if row is not None]

    table2 = attack_rows(attack_targets, lambda t: study.attacks_on(t) if t == Q2_MODEL else study.q3_attacks)
    if table2:
        tables.rows["table2_attacks.csv"] = table2

    if study.q3_attacks:
        if "compressed" in study.models and "good_init" in study.models:
            tables.rows["table4_models.csv"] = model_rows(results, Q3_MODELS, ratio_to=Q3_MODELS[0])
        rows, missing = table5_rows(study, results)
        tables.rows["table5_complexity.csv"] = rows
        tables.rows["table5_gap.csv"] = table5_gap_rows(study, results)
        if missing:
            tables.note("q3", f"not measured (good_init and compressed share no transfer group, or the attack is "
                              f"missing on one of them): {', '.join(missing)}")
        table6 = [r for r in results.transfer if {r["target"], r["measured_on"]} == set(Q3_MODELS)
                  and r["attack"] in study.q3_attacks]
        if table6:
            tables.rows["table6_transferability.csv"] = table6
    else:
        tables.note("q3", "skipped: the config crafts no attack on both good_init and compressed")

    if any(a in study.attacks_on(Q4_MODEL) for a in Q4_ATTACKS):
        tables.rows["q4_defense.csv"] = q4_rows(study, results)
        tables.rows["q4_perturbation.csv"] = q4_perturbation_rows(study, results)
        absent = [a for a in Q4_ATTACKS if a not in study.attacks_on(Q4_MODEL)]
        if absent:
            tables.note("q4", f"attack_sets.distilled lacks {', '.join(absent)}: the comparison needs both")
    else:
        tables.note("q4", "skipped: attack_sets.distilled has neither jsma_control nor jsma_adaptive")

    if study.q5_attacks:
        group = study.q5_group
        tables.rows["table7_models.csv"] = model_rows(results, group)
        tables.rows["table8_attacks.csv"] = attack_rows(group, lambda t: study.q5_attacks)
        tables.rows["table9_transfer.csv"] = table9_rows(study, results)
        rows, subsets = q5_transferable_rows(study, results, seed=seed, grid_step=grid_step)
        tables.rows["q5_transferable.csv"] = rows
        tables.subsets = subsets
        transfer = [r for r in results.transfer if r["measured_on"] in group and r["attack"] in study.q5_attacks
                    and (r["target"] in group or r["target"] == "ensemble")]
        if transfer:
            tables.rows["q5_transferability.csv"] = transfer
    else:
        tables.note("q5", "skipped: no transfer group of three attacked models shares an attack "
                          "(transfer_groups, attack_sets)")
    add_statistics(study, results, tables, seed=seed)
    return tables


def q4_perturbation_rows(study: Study, results: RunResults) -> list[Row]:
    """Q4: per-input perturbation size of each attack on the distilled model (and its control): L0 / L2 mean and
    median over all attacked inputs, and how many inputs were left unchanged (L0 = 0)."""
    rows = []
    for attack in Q4_ATTACKS:
        if attack not in study.attacks_on(Q4_MODEL):
            continue
        for name in (attack, CONTROL_PREFIX + attack):
            with open_h5(results.files.adversarial(Q4_MODEL, name)) as h5:
                success, l0, l2 = h5["success"][:].astype(bool), h5["norms_r/l0"][:], h5["norms_r/l2"][:]
            rows.append({"attack": name, "attacked": int(success.size), "successful": int(success.sum()),
                         "success_rate": float(success.mean()) if success.size else math.nan,
                         "unchanged": int((l0 == 0).sum()), "l0_mean": float(l0.mean()),
                         "l0_median": float(np.median(l0)), "l2_mean": float(l2.mean()),
                         "l2_median": float(np.median(l2))})
    return rows


def statistical_cases(study: Study, results: RunResults, *, seed: int, toggled: bool = False
                      ) -> dict[str, list[decisions.Case]]:
    """Every case of Q1-Q5 decided by paired, standardized shifts with intervals (:mod:`advflow.decisions`);
    ``toggled`` uses the other MI estimator (with / without the bias correction) than the run's."""
    evidence = decisions.Evidence(results, resamples=study.resamples, seed=seed, corrected=study.bias_corrected,
                                  toggled=toggled)
    cases: dict[str, list[decisions.Case]] = {key: [] for key in QUESTIONS}
    if study.has_trajectories:
        cases["q1"].append(decisions.q1_trajectories(evidence, model="good_init"))
    for attack in study.attacks_on(Q2_MODEL):
        cases["q2"].append(decisions.q2_attack(evidence, Q2_MODEL, attack))
    for attack in study.q3_attacks:
        original, compressed = Q3_MODELS
        if study.measured(original, set_name(attack, compressed)) and study.measured(compressed,
                                                                                     set_name(attack, original)):
            cases["q3"].append(decisions.q3_attack(evidence, attack, original=original, compressed=compressed))
    if all(a in study.attacks_on(Q4_MODEL) for a in Q4_ATTACKS):
        cases["q4"].append(decisions.q4_adaptive(evidence, model=Q4_MODEL, adaptive=Q4_ATTACKS[1],
                                                 regular=Q4_ATTACKS[0]))
    for attack in study.q5_attacks:
        for model in study.q5_group:
            for other in study.q5_group:
                if other != model and study.measured(model, set_name(attack, other)):
                    cases["q5"].append(decisions.q5_itself_vs_other(evidence, attack, model, other))
        for target in study.q5_group:
            for model in study.q5_group:
                if model != target and study.measured(model, set_name(attack, target)):
                    cases["q5"].append(decisions.q5_transferable(evidence, attack, target, model))
    return cases


def verdict_rows(cases: Mapping[str, Sequence[decisions.Case]]) -> list[Row]:
    return [{"question": c.question, "case": c.case, "verdict": c.verdict, "inputs": c.inputs,
             "note": "; ".join(c.notes)} for q in cases.values() for c in q]


def sensitivity_rows(study: Study, results: RunResults, cases: Mapping[str, Sequence[decisions.Case]], *,
                     seed: int) -> tuple[list[Row], str]:
    """Each case's verdict with the run's MI estimator and with the other one (bias correction toggled)."""
    try:
        other = statistical_cases(study, results, seed=seed, toggled=True)
    except LookupError as error:
        return [], f"not available: {error}"
    rows = []
    for key, mine in cases.items():
        for a, b in zip(mine, other.get(key, [])):
            rows.append({"question": key, "case": a.case, "verdict": a.verdict, "verdict_other_estimator": b.verdict,
                         "changed": a.verdict != b.verdict})
    changed = sum(r["changed"] for r in rows)
    return rows, f"{changed} of {len(rows)} verdicts change"


def dead_map_rows(study: Study, results: RunResults) -> list[Row]:
    """Per measuring model and layer, over the normal inputs: the share of dead (constant) maps, and the
    spread of mu_s and mu_t that scales every shift; a layer whose maps are all dead, or whose spread is 0
    (it carries no information: e.g. 1x1 target maps give an OIP identically 0), is flagged."""
    rows = []
    for model in sorted(study.measuring_models(), key=_model_order):
        normal = [results.input_paths(model, p) for p in (NORMAL_TRAIN, NORMAL)]
        dead = (np.concatenate([p.dead for p in normal]) if all(p.dead is not None for p in normal) else None)
        spread_s = shifts.layer_scale(np.concatenate([p.mu_s for p in normal]))
        spread_t = shifts.layer_scale(np.concatenate([p.mu_t for p in normal]))
        for k, layer in enumerate(normal[0].layers):
            share = float(dead[:, k].mean()) if dead is not None else math.nan
            flags = []
            if dead is not None and np.all(dead[:, k] == 1):
                flags.append("every map dead")
            if not math.isfinite(spread_s[k]):
                flags.append("IIP carries no information (zero spread)")
            if not math.isfinite(spread_t[k]):
                flags.append("OIP carries no information (zero spread)")
            rows.append({"model": model, "layer": int(layer), "dead_share": share,
                         "all_dead": bool(dead is not None and np.all(dead[:, k] == 1)),
                         "iip_spread": float(spread_s[k]), "oip_spread": float(spread_t[k]), "flag": "; ".join(flags)})
    return rows


def gp_flags(results: RunResults) -> list[str]:
    """Aggregates read for this report whose GP fit cannot carry information
    (:func:`advflow.aggregate.fit_flags`: curve, band, lengthscale or likelihood not finite)."""
    flagged = []
    for (model, set_), aggregated in sorted(results._aggregates.items()):
        for name, path in aggregated.items():
            flags = fit_flags(path)
            if flags:
                flagged.append(f"{name.upper()} of {set_} on {model} ({', '.join(flags)})")
    return flagged


def _gp_flag(*aggregates: Mapping[str, AggregatedPath]) -> str:
    """The fit flags of these aggregates' IIP and OIP, for a table's ``gp_flag`` column."""
    return "; ".join(f"{name.upper()}: {', '.join(flags)}" for a in aggregates for name in ("iip", "oip")
                     if (flags := fit_flags(a[name])))


def add_statistics(study: Study, results: RunResults, tables: Tables, *, seed: int) -> None:
    """The statistical verdicts, their intervals, the estimator's sensitivity and diagnostics, as tables."""
    cases = statistical_cases(study, results, seed=seed)
    tables.cases = cases
    tables.rows["verdicts.csv"] = verdict_rows(cases)
    tables.rows["intervals.csv"] = decisions.interval_rows([c for q in cases.values() for c in q])
    rows, summary = sensitivity_rows(study, results, cases, seed=seed)
    tables.rows["sensitivity.csv"] = rows
    estimator = "bias-corrected (shuffled-map MI subtracted)" if study.bias_corrected else "the paper's (uncorrected)"
    tables.note("diagnostics", f"MI estimator of this run: {estimator}; with the other estimator {summary}.")
    if study.measuring_models():
        tables.rows["dead_maps.csv"] = dead_map_rows(study, results)
        flagged = sorted({f"{r['model']} layer {r['layer']}: {r['flag']}" for r in tables.rows["dead_maps.csv"]
                          if r["flag"]})
        if flagged:
            tables.note("diagnostics", "layers that cannot carry information (left out of every shift): "
                        + "; ".join(flagged))
    flagged_gp = gp_flags(results)
    if flagged_gp:
        tables.note("diagnostics", "GP aggregates whose fit cannot carry information (their distances are not usable): "
                    + "; ".join(flagged_gp))


def write_table(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV with the given columns (floats written exactly, NaN as ``nan``), atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else (repr(float(row[c])) if isinstance(row.get(c), float)
                                                            else row.get(c, "")) for c in columns])


# ---------------------------------------------------------------------------------------------------------
# Findings


def compute_findings(tables: Tables) -> dict[str, findings.Finding]:
    """The statistical verdict of each question (:mod:`advflow.decisions`), from its cases."""
    return {key: findings.statistical(key, tables.cases.get(key, []), decisions.overall(tables.cases.get(key, [])))
            for key in QUESTIONS}


def compute_literal_findings(tables: Tables) -> dict[str, findings.Finding]:
    """The paper's five findings as the paper compared them (raw distances of aggregated paths), each from
    the tables it rests on (absent tables: cannot be checked); control rows are left out."""
    rows = tables.rows
    attacks_only = [r for r in rows.get("table3_distance_from_normal.csv", [])
                    if not str(r["attack"]).startswith(CONTROL_PREFIX)]
    q4 = [r for r in rows.get("q4_defense.csv", []) if not str(r["attack"]).startswith(CONTROL_PREFIX)]
    return {
        "q1": findings.crafting_process(rows.get("q1_trajectory.csv", [])),
        "q2": findings.attack_mechanisms(attacks_only),
        "q3": findings.model_complexity(rows.get("table5_gap.csv", []), complex_model=Q3_MODELS[0],
                                        simple_model=Q3_MODELS[1]),
        "q4": findings.adaptive_attack(q4, adaptive=Q4_ATTACKS[1], regular=Q4_ATTACKS[0]),
        "q5": findings.transferability(rows.get("table9_transfer.csv", []), rows.get("q5_transferable.csv", [])),
    }


# ---------------------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True)
class Curve:
    """One aggregated set in a figure: its label, ``{"iip", "oip"}`` aggregates and line style."""

    label: str
    paths: Mapping[str, AggregatedPath]
    color: Any
    linestyle: str = "-"
    band: bool = True


PANEL_LABELS = (("IIP", "conv layer k", "mean S$^{(k)}$ (nats)"), ("OIP", "conv layer k", "mean T$^{(k)}$ (nats)"),
                ("IOC", "IIP: mean S$^{(k)}$", "OIP: mean T$^{(k)}$"))


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """Seaborn's white-grid style and paper context, for the figures drawn inside the block only."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        yield


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def band_limits(path: AggregatedPath) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % band drawn at the layers: the GP's, with its lower edge clipped at 0 where the path is
    MI itself (never negative); a bias-corrected path (which can be negative) is drawn as it is."""
    floor = 0.0 if np.all(path.mean >= 0) else -np.inf
    return np.maximum(path.lower, floor), path.upper


def _draw_row(axes: Sequence[Any], curves: Sequence[Curve], title: str | None = None) -> None:
    """IIP | OIP | IOC panels of aggregated curves: the GP mean at the conv layers (points joined by lines;
    between layers it has no meaning), its 95 % band there (:func:`band_limits`), IOC markers per layer."""
    for ax, (name, xlabel, ylabel) in zip(axes, PANEL_LABELS):
        ax.set_title(f"{name}{' — ' + title if title else ''}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for curve in curves:
        for ax, name in zip(axes[:2], ("iip", "oip")):
            path = curve.paths[name]
            if curve.band:
                ax.fill_between(path.layers, *band_limits(path), color=curve.color, alpha=0.15, lw=0)
            ax.plot(path.layers, path.mean, color=curve.color, ls=curve.linestyle, lw=1.6 if curve.band else 1.0,
                    marker="o", ms=2.5, label=curve.label)
            _integer_ticks(ax)
        iip, oip = curve.paths["iip"], curve.paths["oip"]
        axes[2].plot(iip.mean, oip.mean, color=curve.color, ls=curve.linestyle, lw=1.2, marker="o", ms=3.5,
                     label=curve.label)
    if curves:
        first = curves[0].paths
        for index in (0, -1):  # mark where the first curve's IOC starts (layer 1) and ends (layer K)
            axes[2].annotate(f"k={first['iip'].layers[index]:g}", (first["iip"].mean[index], first["oip"].mean[index]),
                             textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes[2].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


# Figure resolution, the config's ``report.dpi`` (set by :func:`build_report` for the figures it draws).
_FIGURE = {"dpi": 100}


class FigureBytes(bytes):
    """A figure's PNG, with its vector version (PDF) in ``pdf``, written beside it for print."""

    pdf: bytes = b""


def _png(figure: Any) -> FigureBytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_FIGURE["dpi"], metadata={"Software": None})
    png = FigureBytes(buffer.getvalue())
    vector = io.BytesIO()
    # No dates or tool versions in the file, so the same figure is the same bytes.
    figure.savefig(vector, format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None})
    png.pdf = vector.getvalue()
    return png


def _palette(n: int) -> list[Any]:
    import seaborn as sns

    return list(sns.color_palette("deep", max(n, 1)))


def _rows_figure(rows: Sequence[tuple[str | None, Sequence[Curve]]]) -> bytes:
    with _style():
        figure = _new_figure(13.5, 3.5 * len(rows))
        axes = figure.subplots(len(rows), 3, squeeze=False)
        for ax_row, (title, curves) in zip(axes, rows):
            _draw_row(ax_row, curves, title)
        return _png(figure)


NORMAL_COLOR = (0.1, 0.1, 0.1)
TRAIN_COLOR = (0.55, 0.55, 0.55)


def _normal_curve(results: RunResults, model: str) -> Curve:
    return Curve(f"normal ({NORMAL})", results.aggregate(model, NORMAL), NORMAL_COLOR)


def figure_q1(results: RunResults, trajectory_rows: Sequence[Row]) -> tuple[bytes, str]:
    """Fig. 3: per-step IIP, OIP, IOC of one seed (dark = step 0, light = the adversarial input), and every
    seed's IIP and OIP deviation from step 0 against the step."""
    import seaborn as sns
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    paths = results.input_paths("good_init", TRAJECTORY)
    steps_of: dict[Any, int] = {}
    for row in trajectory_rows:
        steps_of[row["seed"]] = max(steps_of.get(row["seed"], 0), int(row["step"]))
    shown = max(steps_of, key=lambda s: (steps_of[s], -_order(s)))  # the longest trajectory, first on ties
    mine = np.flatnonzero(np.array([_natural(s) for s in paths.seed], dtype=object) == shown)
    mine = mine[np.argsort(paths.step[mine], kind="stable")]
    last = int(paths.step[mine[-1]])
    cmap = sns.color_palette("rocket", as_cmap=True)
    norm = Normalize(0, max(last, 1) / 0.85)  # the last step stays short of the colormap's near-white end
    with _style():
        figure = _new_figure(13.5, 7.0)
        grid = figure.add_gridspec(2, 6)
        top = [figure.add_subplot(grid[0, 2 * i:2 * i + 2]) for i in range(3)]
        bottom = [figure.add_subplot(grid[1, 0:3]), figure.add_subplot(grid[1, 3:6])]
        for ax, (name, xlabel, ylabel) in zip(top, PANEL_LABELS):
            ax.set_title(f"{name} of seed {shown} at each step")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        for i in mine:
            step = int(paths.step[i])
            color = "black" if step == 0 else cmap(norm(step))
            width = 2.0 if step in (0, last) else 1.0
            top[0].plot(paths.layers, paths.mu_s[i], color=color, lw=width)
            top[1].plot(paths.layers, paths.mu_t[i], color=color, lw=width)
            top[2].plot(paths.mu_s[i], paths.mu_t[i], color=color, lw=width, marker="o", ms=2.5)
        for ax in top[:2]:
            _integer_ticks(ax)
        figure.colorbar(ScalarMappable(norm=Normalize(0, last), cmap=cmap), ax=top[2], label="step i")
        colors = _palette(len(steps_of))
        for color, seed in zip(colors, steps_of):
            mine_rows = sorted((r for r in trajectory_rows if r["seed"] == seed), key=lambda r: r["step"])
            steps = [r["step"] for r in mine_rows]
            for ax, key in zip(bottom, ("iip_deviation", "oip_deviation")):
                ax.plot(steps, [r[key] for r in mine_rows], color=color, marker="o", ms=3,
                        lw=2.0 if seed == shown else 1.2, label=f"seed {seed}")
        for ax, name in zip(bottom, ("IIP", "OIP")):
            ax.set_title(f"{name} deviation from step 0")
            ax.set_xlabel("step i")
            ax.set_ylabel(f"distance of {name}(x_i) from {name}(x_0)")
            _integer_ticks(ax)
        bottom[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        png = _png(figure)
    caption = (f"Q1 (cf. Fig. 3): JSMA crafting on good_init. Top: IIP, OIP and IOC of seed {shown} at each of its "
               f"{last + 1} steps (black: the seed, step 0; lighter: later steps, up to the final input at step "
               f"{last}). "
               f"Bottom: distance of each step's IIP and OIP from step 0's, for all {len(steps_of)} recorded seeds.")
    return png, caption


def _order(seed: Any) -> int:
    return seed if isinstance(seed, int) else 0


#: Attack families, one row each in Q2's figure (as the paper's Figs. 8-11 group them by norm).
ATTACK_FAMILIES = (("L∞ gradient attacks", ("fgsm", "igsm", "pgd")), ("JSMA (L0)", ("jsma",)),
                   ("minimal L2 attacks", ("deepfool", "cw")), ("EAD (L1)", ("ead_l1", "ead_en")))


def figure_q2(study: Study, results: RunResults) -> tuple[bytes, str]:
    """Fig. 4: normal and each attack's aggregated paths on good_init, one row per attack family (each
    attack keeps one colour across rows and its control is dotted in that colour)."""
    attacks = study.attacks_on(Q2_MODEL)
    colors = dict(zip(attacks, _palette(len(attacks))))
    families = [(name, [a for a in members if a in attacks]) for name, members in ATTACK_FAMILIES]
    grouped = {a for _, members in families for a in members}
    families.append(("other attacks", [a for a in attacks if a not in grouped]))
    rows = []
    for family, members in families:
        if not members:
            continue
        curves = [_normal_curve(results, Q2_MODEL),
                  Curve(f"normal ({NORMAL_TRAIN})", results.aggregate(Q2_MODEL, NORMAL_TRAIN), TRAIN_COLOR, "--",
                        band=False)]
        for a in members:
            curves.append(Curve(a, results.aggregate(Q2_MODEL, set_name(a, Q2_MODEL)), colors[a]))
            curves.append(Curve(f"{a} control", results.aggregate(Q2_MODEL, set_name(CONTROL_PREFIX + a, Q2_MODEL)),
                                colors[a], ":", band=False))
        rows.append((f"{family} on {Q2_MODEL}", curves))
    caption = (f"Q2 (cf. Fig. 4): aggregated IIP, OIP and IOC on {Q2_MODEL}, one row per attack family, of the clean "
               f"seeds ({NORMAL}), the normal training inputs ({NORMAL_TRAIN}, dashed grey) and the adversarial sets of "
               f"{', '.join(attacks)} (GP posterior mean at each conv layer, shaded 95 % band), each with its random "
               f"control of the same size per input (dotted, same colour, no band).")
    return _rows_figure(rows), caption


def figure_q3(study: Study, results: RunResults) -> tuple[bytes, str]:
    """Fig. 5, 8, 9: on each of good_init and compressed, normal and each Q3 attack's sets targeting the
    inference model (solid) and the other model (dashed)."""
    rows = []
    colors = dict(zip(study.q3_attacks, _palette(len(study.q3_attacks))))
    for model in Q3_MODELS:
        other = Q3_MODELS[1] if model == Q3_MODELS[0] else Q3_MODELS[0]
        curves = [_normal_curve(results, model)]
        for attack in study.q3_attacks:
            for target, style in ((model, "-"), (other, "--")):
                if study.measured(model, set_name(attack, target)):
                    curves.append(Curve(f"{attack} → {target}", results.aggregate(model, set_name(attack, target)),
                                        colors[attack], style))
        rows.append((f"on {model}", curves))
    caption = (f"Q3 (cf. Fig. 5, 8, 9): aggregated IPs on {Q3_MODELS[0]} (top) and {Q3_MODELS[1]} (bottom) of normal "
               f"inputs and of the sets of {', '.join(study.q3_attacks)} targeting the inference model (solid) or the "
               f"other model (dashed); 'a → t' is attack a crafted on model t.")
    return _rows_figure(rows), caption


def figure_q4(study: Study, results: RunResults) -> tuple[bytes, str]:
    """Fig. 6: normal, the regular (control) JSMA and the adaptive JSMA on the distilled model."""
    attacks = [a for a in Q4_ATTACKS if a in study.attacks_on(Q4_MODEL)]
    curves = [_normal_curve(results, Q4_MODEL)]
    for a, c in zip(attacks, _palette(len(Q4_ATTACKS))):
        curves.append(Curve(a, results.aggregate(Q4_MODEL, set_name(a, Q4_MODEL)), c))
        curves.append(Curve(f"{a} control", results.aggregate(Q4_MODEL, set_name(CONTROL_PREFIX + a, Q4_MODEL)), c,
                            ":", band=False))
    caption = (f"Q4 (cf. Fig. 6): aggregated IPs on the defensively distilled model of normal inputs and of the "
               f"adversarial inputs (successful and failed) of {' and '.join(attacks)}, each with its random control "
               f"(dotted).")
    return _rows_figure([(Q4_MODEL, curves)]), caption


def _q5_attack(study: Study, tables: Tables | None = None) -> str:
    """The attack Q5's figures show: JSMA as in the paper's Fig. 7 unless it is not in the group's attacks
    (or, for the subset figure, none of its subsets could be aggregated)."""
    candidates = list(study.q5_attacks)
    if tables is not None:
        fitted = [a for a in candidates if any(key[0] == a for key in tables.subsets)]
        candidates = fitted or candidates
    return FIGURE_ATTACK if FIGURE_ATTACK in candidates else candidates[0]


def figure_q5(study: Study, results: RunResults) -> tuple[bytes, str]:
    """Fig. 7: on each model of the group, normal and the attack's sets targeting each of the models."""
    attack = _q5_attack(study)
    colors = dict(zip(study.q5_group, _palette(len(study.q5_group))))
    rows = []
    for model in study.q5_group:
        curves = [_normal_curve(results, model)]
        for target in study.q5_group:
            if study.measured(model, set_name(attack, target)):
                curves.append(Curve(f"{attack} → {target}", results.aggregate(model, set_name(attack, target)),
                                    colors[target], "-" if target == model else "--"))
        rows.append((f"on {model}", curves))
    caption = (f"Q5 (cf. Fig. 7, 10, 11): aggregated IPs on each of {', '.join(study.q5_group)} (one row per inference "
               f"model) of normal inputs and of {attack}'s sets targeting each model (solid: the inference model "
               f"itself; dashed: another model).")
    return _rows_figure(rows), caption


def figure_q5_transferable(study: Study, results: RunResults, tables: Tables) -> tuple[bytes, str]:
    """On each model of the group: normal, and the transferable (solid) and non-transferable (dotted)
    inputs of the attack's sets crafted on the other models."""
    attack = _q5_attack(study, tables)
    colors = dict(zip(study.q5_group, _palette(len(study.q5_group))))
    counts = {(r["target"], r["measured_on"], r["subset"]): r["inputs"]
              for r in tables.rows.get("q5_transferable.csv", []) if r["attack"] == attack}
    rows, missing = [], []
    for model in study.q5_group:
        curves = [_normal_curve(results, model)]
        for target in study.q5_group:
            for subset, style in (("transferable", "-"), ("non_transferable", ":")):
                key = (attack, target, model, subset)
                if key in tables.subsets:
                    curves.append(Curve(f"{attack} → {target}, {subset.replace('_', '-')} "
                                        f"(n={counts[(target, model, subset)]})", tables.subsets[key], colors[target],
                                        style))
                elif (target, model, subset) in counts:
                    missing.append(f"{subset.replace('_', '-')} {attack} → {target} on {model} "
                                   f"(n={counts[(target, model, subset)]})")
        rows.append((f"on {model}", curves))
    caption = (f"Q5: aggregated IPs on each inference model of the transferable (solid) and non-transferable "
               f"(dotted) inputs of {attack}'s sets crafted on the other models (successful on their target; "
               f"transferable: also misclassified by the inference model), with normal inputs."
               + (f" Not shown (fewer than {MIN_SUBSET} inputs): {'; '.join(missing)}." if missing else ""))
    return _rows_figure(rows), caption


# ---------------------------------------------------------------------------------------------------------
# HTML

TABLE_CAPTIONS = {
    "q1_trajectory.csv": "Q1: distance of each JSMA crafting step's IIP and OIP from step 0's (single inputs on "
                         "good_init).",
    "table2_attacks.csv": "Table II: adversarial sets on good_init and compressed: distortion ‖r‖p/‖x‖p in the "
                          "attack's norm, distortion (L2), confidence (mean softmax probability of the adversarial "
                          "class over successful inputs), success rate.",
    "table3_distance_from_normal.csv": "Table III: IIP and OIP distance of each attack's aggregated paths on good_init "
                                       "from normal (normal_test, the clean seeds); first row: normal_train for scale.",
    "table4_models.csv": "Table IV: the original and compressed models.",
    "table5_complexity.csv": "Table V: IIP and OIP distance from normal on each model of sets targeting the model "
                             "itself and the other model.",
    "table6_transferability.csv": "Table VI: transferability between good_init and compressed (share of inputs "
                                  "successful on the target that the other model also misclassifies).",
    "q4_defense.csv": "Q4: distance from normal on the distilled model of the regular (control) and adaptive JSMA "
                      "sets, with their success rates.",
    "table7_models.csv": "Table VII: the models of the transferability study.",
    "table8_attacks.csv": "Table VIII: adversarial sets targeting the three models.",
    "table9_transfer.csv": "Table IX: IIP and OIP distance from normal of each set (attack, target) on each inference "
                           "model.",
    "q5_transferable.csv": "Q5: distance from normal of the transferable and non-transferable inputs of each set on "
                           "each other model (each subset GP-aggregated; NaN: fewer than 2 inputs).",
    "q5_transferability.csv": "Transferability within the three-model group and from the ensemble to its members.",
    "table5_gap.csv": "Table V as the paper reads it: on each model, the distance between the aggregated paths of "
                      "the set targeting that model and the set targeting the other model (the paper's claim: larger "
                      "on compressed).",
    "q4_perturbation.csv": "Q4: perturbation size per input on the distilled model (L0 = changed pixels, L2 in "
                           "model space; mean and median over all attacked inputs) and inputs left unchanged.",
    "verdicts.csv": "Every case's statistical verdict: holds / fails / inconclusive by the 95 % paired-bootstrap "
                    "interval of its compared difference (see intervals), or why it could not be tested.",
    "intervals.csv": "Every compared quantity with its 95 % paired-bootstrap interval. Shifts are (1/K') Σ_k "
                     "|mean_i Δ_ik / σ_k|: paired differences from the seeds, per layer in units of the normal "
                     "inputs' spread σ_k. A row with a verdict is a difference whose claim is '> 0'.",
    "sensitivity.csv": "Each verdict with the run's MI estimator and with the other (the MI bias correction — "
                       "subtracting the MI of position-shuffled maps — toggled).",
    "dead_maps.csv": "Estimator diagnostics per model and layer over the normal inputs: share of dead (constant) "
                     "maps, whose MI is 0 and which are averaged into μ; the spread σ_k of μ_s and μ_t that scales "
                     "every shift (NaN: zero spread, the layer carries no information and is left out).",
}

COLUMN_HEADERS = {
    "measured_on": "inference model", "set": "set", "normal": "normal", "iip_distance": "IIP distance",
    "oip_distance": "OIP distance", "average_distance": "average distance", "success_rate": "success rate",
    "distortion_l2": "distortion (L2)", "iip_deviation": "IIP deviation", "oip_deviation": "OIP deviation",
    "test_accuracy": "test accuracy", "parameter_ratio": "parameter ratio", "inputs": "inputs",
}

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

QUESTIONS = {
    "q1": "Q1: How are adversarial inputs crafted to trigger DNNs to misbehave?",
    "q2": "Q2: How do adversarial inputs of different attacks differ in their mechanisms?",
    "q3": "Q3: Are more complex DNN models more vulnerable to adversarial inputs?",
    "q4": "Q4: Why are defenses often vulnerable to adaptive attacks?",
    "q5": "Q5: How do transferable adversarial inputs differ from non-transferable ones?",
}


def _format(value: Any, column: str) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value if value is not None else ""))
    if isinstance(value, int):
        return f"{value:,}" if column == "parameters" else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if column in ("success_rate", "transferability", "test_accuracy", "dead_share"):
            return findings.percent(value)  # rates as the findings' text writes them
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
        cells = "".join(f'<td class="{"text" if isinstance(row.get(c), str) else "num"}">{_format(row.get(c), c)}</td>'
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    wrapper = ' class="scroll"' if len(rows) > 25 else ""
    return (f'<div{wrapper}><table data-table="{html.escape(name)}"><caption>{html.escape(caption)} '
            f"<code>{html.escape(name)}</code></caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></div>")


def _settings_text(config: Mapping[str, Any], attacks: Iterable[str]) -> str:
    parts = []
    for attack in attacks:
        try:
            settings = attack_settings(dict(config), attack)
        except ConfigError:
            settings = {}
        described = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in settings.items())
        parts.append(f"<b>{html.escape(attack)}</b> ({html.escape(described)})" if described else
                     f"<b>{html.escape(attack)}</b>")
    return "; ".join(parts)


def _finding_html(finding: findings.Finding, kind: str = "statistical") -> str:
    css = VERDICT_CSS.get(finding.verdict, "unknown")
    return (f'<div class="finding {css}" data-kind="{kind}" data-verdict="{html.escape(finding.verdict)}" '
            f'data-holds="{str(finding.holds).lower()}"><span class="verdict">'
            f"{html.escape(finding.verdict)}</span>{html.escape(finding.text)}</div>")


@dataclass
class _Section:
    key: str
    setting: str = ""
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)


def _departures(config: Mapping[str, Any]) -> list[str]:
    """The run's settings that differ from the paper's (:func:`advflow.config.paper_departures`)."""
    try:
        return paper_departures(dict(config))
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        return [f"not determined ({error})"]


def _settings_html(study: Study, tables: Tables) -> dict[str, _Section]:
    """Each question's setting, from the config, and the figures and tables it shows."""
    n = "N = " + (str(study.n) if study.n is not None else "?")
    sections = {key: _Section(key) for key in QUESTIONS}
    if study.has_trajectories:
        sections["q1"].setting = (f"JSMA ({_settings_text(study.config, ['jsma'])}) on good_init; every "
                                  f"intermediate input of the first {study.trajectories} seeds is recorded and "
                                  f"measured on good_init. Deviation of step i = distance of the single input's path "
                                  f"from step 0's.")
    if study.attacks_on(Q2_MODEL):
        sections["q2"].setting = (f"Attacks on {Q2_MODEL}, each on the same {n} seeds (test inputs every attacked "
                                  f"model classifies correctly): "
                                  f"{_settings_text(study.config, study.attacks_on(Q2_MODEL))}. "
                                  f"Settings in the models' [-1, 1] space. Normal = {NORMAL} (the clean seeds); the "
                                  f"paper's normal profile was N random training inputs, {NORMAL_TRAIN} here, whose "
                                  f"distance from {NORMAL} is Table III's first row.")
    if study.q3_attacks:
        sections["q3"].setting = (f"{Q3_MODELS[1]} is {Q3_MODELS[0]} after Network Trimming (Table IV). Attacks "
                                  f"crafted on both ({n} seeds each): "
                                  f"{_settings_text(study.config, study.q3_attacks)}; each set is measured on both "
                                  f"models.")
    q4 = [a for a in Q4_ATTACKS if a in study.attacks_on(Q4_MODEL)]
    if q4:
        try:
            temperature = f"T = {model_settings(dict(study.config), Q4_MODEL)['temperature']:g}"
        except (ConfigError, KeyError, TypeError, ValueError):
            temperature = "T as configured"
        sections["q4"].setting = (f"Defensive distillation ({temperature}); attacks on the distilled model ({n} "
                                  f"seeds): {_settings_text(study.config, q4)}. jsma_control is the regular JSMA "
                                  f"(T = 1) at the adaptive attack's θ and γ; the aggregates include successful and "
                                  f"failed inputs.")
    if study.q5_attacks:
        sections["q5"].setting = (f"Models {', '.join(study.q5_group)} (Table VII); attacks on each ({n} seeds): "
                                  f"{_settings_text(study.config, study.q5_attacks)}; every set is measured on all "
                                  f"three models. Transferable inputs: successful on their target and misclassified by "
                                  f"the inference model; non-transferable: successful on the target, classified "
                                  f"correctly by the inference model.")
    layout = {"q1": ["q1_trajectory.csv"], "q2": ["table2_attacks.csv", "table3_distance_from_normal.csv"],
              "q3": ["table4_models.csv", "table5_gap.csv", "table5_complexity.csv", "table6_transferability.csv"],
              "q4": ["q4_defense.csv", "q4_perturbation.csv"],
              "q5": ["table7_models.csv", "table8_attacks.csv", "table9_transfer.csv", "q5_transferable.csv",
                     "q5_transferability.csv"]}
    for key, names in layout.items():
        sections[key].tables = [name for name in names if name in tables.rows]
    return sections


def _title(study: Study) -> str:
    title = (study.config.get("report") or {}).get("title")
    return str(title) if title else f"Information flow of adversarial inputs: {study.dataset}"


def _question_intervals(tables: Tables, key: str) -> list[Row]:
    return [r for r in tables.rows.get("intervals.csv", []) if r["question"] == key]


def render_html(study: Study, results: RunResults, tables: Tables, found: Mapping[str, findings.Finding],
                figures: Mapping[str, bytes], captions: Mapping[str, str], sections: Mapping[str, _Section],
                literal: Mapping[str, findings.Finding] | None = None) -> str:
    """The self-contained report page."""
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    esc = html.escape
    config = study.config
    models_rows = []
    for model in study.models:
        if results.files.model_record(model).is_file():
            record = results.record(model)
            models_rows.append({"model": model, "parameters": int(record.get("parameters", 0)),
                                "test_accuracy": float(record.get("test_accuracy", math.nan))})
    sets_rows = [{"target": t, "attacks": ", ".join(a)} for t, a in study.attack_sets.items()]
    summary = [
        ("dataset", study.dataset), ("models", ", ".join(study.models)),
        ("N (inputs per profile)", "?" if study.n is None else str(study.n)), ("seed", str(study.seed)),
        ("transfer groups", "; ".join(", ".join(g) for g in study.transfer_groups) or "none"),
        ("JSMA trajectories (Q1)", str(study.trajectories)),
        ("MI buckets B", str((config.get("mi") or {}).get("buckets", 8))),
        ("GP grid step", str((config.get("aggregate") or {}).get("grid_step", 0.05))),
        ("normal profile", f"{NORMAL} (baseline: {NORMAL_TRAIN})"),
        ("departs from the paper", "; ".join(_departures(config)) or "nothing (the paper's settings)"),
        ("generated", date),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', '<link rel="icon" href="data:,">',
        f"<title>advflow report: {esc(study.dataset)}</title><style>{CSS}</style>",
        f"<script>{IMAGE_CHECK}</script></head><body>",
        f"<h1>{esc(_title(study))}</h1>",
        ('<p class="meta">A reproduction of Ji &amp; Wang, “On the Dynamics of Adversarial Input Attacks”, Section '
         'IV. Distances are (1/K) Σ<sub>k</sub> |μ<sub>1</sub><sup>(k)</sup> − μ<sub>2</sub><sup>(k)</sup>| between '
         "GP-aggregated paths (posterior means at the conv layers).</p>"),
        "<table data-summary=\"run\"><tbody>" + "".join(
            f'<tr><th class="text">{esc(k)}</th><td class="text">{esc(v)}</td></tr>' for k, v in summary)
        + "</tbody></table>",
        "<h2>Verdicts</h2>",
        html_table("verdict_summary", [{"question": QUESTIONS[k].split(":")[0], "verdict": found[k].verdict,
                                        "literal (paper's comparison)": (literal or {}).get(k).verdict
                                        if literal and k in literal else ""} for k in QUESTIONS],
                   ("question", "verdict", "literal (paper's comparison)"),
                   f"Each question's verdict from paired, standardized shifts with 95 % bootstrap intervals "
                   f"({study.resamples} resamples) beside random-perturbation controls; beside it the paper's own raw "
                   f"comparison of aggregated distances, which carries no uncertainty."),
        '<nav class="contents" aria-label="Contents"><b>Contents</b><ol>'
        + "".join(f'<li><a href="#{key}">{esc(question)}</a></li>' for key, question in QUESTIONS.items())
        + '<li><a href="#diagnostics">Estimator diagnostics</a></li></ol></nav>',
        "<h3>Models</h3>",
        html_table("models", models_rows, ("model", "parameters", "test_accuracy"),
                   "Models of this run (parameters, accuracy on the whole test split)."),
        "<h3>Attack sets</h3>",
        html_table("attack_sets", sets_rows, ("target", "attacks"), "Attacks crafted on each target model."),
    ]
    for key, question in QUESTIONS.items():
        section = sections[key]
        parts.append(f'<section id="{key}" data-question="{key}"><h2>{esc(question)}</h2>')
        if section.setting:
            parts.append(f'<p class="setting"><b>Setting.</b> {section.setting}</p>')
        for note in tables.notes.get(key, []):
            parts.append(f'<p class="note">Note: {esc(note)}</p>')
        for name in section.figures:
            data = base64.b64encode(figures[name]).decode("ascii")
            parts.append(f'<figure data-figure="{esc(name)}"><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{esc(captions[name])} <code>{esc(name)}</code></figcaption></figure>")
        for name in section.tables:
            parts.append(html_table(name, tables.rows[name], TABLE_COLUMNS[name], captions[name]))
        parts.append("<h3>Finding</h3>" + _finding_html(found[key]))
        mine = _question_intervals(tables, key)
        if mine:
            parts.append(html_table(f"intervals_{key}", mine, TABLE_COLUMNS["intervals.csv"][1:],
                                    captions.get("intervals.csv", "")))
        if literal and key in literal:
            parts.append("<h3>The paper's literal comparison</h3>" + _finding_html(literal[key], "literal"))
        parts.append("</section>")
    parts.append('<section id="diagnostics" data-question="diagnostics"><h2>Estimator diagnostics</h2>')
    for note in tables.notes.get("diagnostics", []):
        parts.append(f'<p class="note">{esc(note)}</p>')
    for name in ("sensitivity.csv", "dead_maps.csv", "verdicts.csv", "intervals.csv"):
        if name in tables.rows:
            parts.append(html_table(name, tables.rows[name], TABLE_COLUMNS[name], captions.get(name, "")))
    parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The stage


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def findings_record(tables: Tables, found: Mapping[str, findings.Finding], literal: Mapping[str, findings.Finding],
                    config: Mapping[str, Any]) -> dict[str, Any]:
    """The findings as data (``findings.json`` beside the report): per question its verdict and text, the
    paper's literal comparison, every case with its verdict and every interval it was decided from."""
    cases = verdict_rows(tables.cases)
    intervals = tables.rows.get("intervals.csv", [])
    return {
        "questions": {key: {"question": QUESTIONS[key], "verdict": found[key].verdict, "text": found[key].text,
                            "literal_verdict": literal[key].verdict if key in literal else None,
                            "literal_text": literal[key].text if key in literal else None,
                            "cases": [r for r in cases if r["question"] == key],
                            "intervals": [r for r in intervals if r["question"] == key]}
                      for key in QUESTIONS if key in found},
        "departs_from_paper": _departures(config),
        "bootstrap_resamples": int((config.get("report") or {}).get("bootstrap_resamples", 1000)),
    }


def build_report(results: Path, config: Mapping[str, Any], *, out_html: Path, tables_dir: Path, figures_dir: Path,
                 seed: int = 0) -> dict[str, str]:
    """Tables (CSV, ``tables_dir``), figures (PNG + ``.rst`` caption, ``figures_dir``), ``out_html`` and
    ``findings.json`` beside it (:func:`findings_record`) of the
    run under ``results`` (``results/{dataset}``), for the sets ``config`` asks for. ``seed`` seeds the GP fits
    of Q5's transferable / non-transferable subsets. Returns ``{file name: caption}`` of every table and figure
    written."""
    results, out_html, tables_dir, figures_dir = Path(results), Path(out_html), Path(tables_dir), Path(figures_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such folder; it should hold the run's models/, paths/, aggregates/, "
                                f"adv/ and tables/")
    study = Study.from_config(config)
    _FIGURE["dpi"] = int((config.get("report") or {}).get("dpi", 100))
    run = RunResults(ResultFiles(results))
    tables = compute_tables(study, run, seed=seed)
    found = compute_findings(tables)
    literal = compute_literal_findings(tables)
    captions: dict[str, str] = {}
    for name, rows in tables.rows.items():
        write_table(tables_dir / name, rows, TABLE_COLUMNS[name])
        captions[name] = TABLE_CAPTIONS[name]

    sections = _settings_html(study, tables)
    figures: dict[str, bytes] = {}
    plans = []
    if "q1_trajectory.csv" in tables.rows:
        plans.append(("q1", "q1_trajectory.png", lambda: figure_q1(run, tables.rows["q1_trajectory.csv"])))
    if "table3_distance_from_normal.csv" in tables.rows:
        plans.append(("q2", "q2_attacks.png", lambda: figure_q2(study, run)))
    if "table5_complexity.csv" in tables.rows:
        plans.append(("q3", "q3_complexity.png", lambda: figure_q3(study, run)))
    if "q4_defense.csv" in tables.rows:
        plans.append(("q4", "q4_defense.png", lambda: figure_q4(study, run)))
    if "table9_transfer.csv" in tables.rows:
        plans.append(("q5", "q5_transfer.png", lambda: figure_q5(study, run)))
        plans.append(("q5", "q5_transferable.png", lambda: figure_q5_transferable(study, run, tables)))
    for key, name, draw in plans:
        png, caption = draw()
        figures[name], captions[name] = png, caption
        _write_bytes(figures_dir / name, png)
        if getattr(png, "pdf", b""):
            _write_bytes(figures_dir / f"{Path(name).stem}.pdf", png.pdf)
        _write_text(figures_dir / f"{Path(name).stem}.rst", caption + "\n")
        sections[key].figures.append(name)

    page = render_html(study, run, tables, found, figures, captions, sections, literal)
    _write_text(out_html, page)
    _write_text(out_html.with_name("findings.json"), json.dumps(findings_record(tables, found, literal, config),
                                                                indent=1, allow_nan=True) + "\n")
    for key, finding in found.items():
        log.info("%s: %s", key, finding.text)
        log.info("%s (literal): %s", key, literal[key].text)
    log.info("report: %d tables, %d figures, %s", len(tables.rows), len(figures), out_html)
    return captions
