"""One home per default: the config schema. Snakemake's validate fills its defaults into the workflow's config and
advflow.config.with_defaults into any other; rules and the report read them from there and write none of their own.
The library functions' own parameter defaults (an API usable without a config) must equal the schema's."""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.utils import validate

import advflow.config as cfg
from advflow.config import resolve, with_defaults
from conftest import REPO

SCHEMA = REPO / "schemas" / "config.schema.yaml"
RULE_FILES = sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]
MINIMAL = {"seed": 0, "dataset": "synthetic", "models": {"good_init": {}}}


def schema_defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every ``default:`` of the schema's (nested) properties, as {dotted key: default}."""
    found = {}
    for key, sub in (schema.get("properties") or {}).items():
        if "default" in sub:
            found[f"{prefix}{key}"] = sub["default"]
        found.update(schema_defaults(sub, f"{prefix}{key}."))
    return found


def at(config: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


DEFAULTS = schema_defaults(yaml.safe_load(SCHEMA.read_text()))
#: The leaf settings: a section's default ({}) is only where its keys' defaults go.
LEAVES = {k: v for k, v in DEFAULTS.items() if not isinstance(v, dict)}


def test_the_schema_states_the_defaults_the_run_relies_on():
    """A guard on the parser above (an empty DEFAULTS would make every test here pass)."""
    expected = {"aggregate.grid_step": 0.05, "mi.buckets": 8, "report.bootstrap_resamples": 1000, "report.dpi": 100,
                "inputs.n": 50, "trajectories.n": 10, "attacks.batch_size": 100, "device": "auto"}
    assert {key: LEAVES.get(key) for key in expected} == expected


@pytest.mark.parametrize("path", ["config.yaml", "configs/tiny.yaml", "configs/paper-cifar10.yaml", None])
def test_with_defaults_fills_what_the_workflow_gets(path):
    """with_defaults(config) is the config the rules read: what Snakemake's validate (rules/common.smk) makes of it."""
    config = yaml.safe_load((REPO / path).read_text()) if path else copy.deepcopy(MINIMAL)
    validated = copy.deepcopy(config)
    validate(validated, schema=str(SCHEMA))
    filled = with_defaults(config)
    assert filled == validated
    assert filled is not config and config == (yaml.safe_load((REPO / path).read_text()) if path else MINIMAL)


def test_with_defaults_fills_every_default_and_keeps_what_the_config_sets():
    filled = with_defaults(MINIMAL)
    for key, default in LEAVES.items():
        assert at(filled, key) == default, key
    stated = with_defaults({**MINIMAL, "mi": {"buckets": 4}, "report": None})
    assert stated["mi"] == {**with_defaults(MINIMAL)["mi"], "buckets": 4}
    assert stated["report"] == with_defaults(MINIMAL)["report"]  # a section set to null counts as left out
    # The filled values are copies: changing one changes neither the schema's nor another call's.
    filled["mi"]["buckets"] = 99
    assert with_defaults(MINIMAL)["mi"]["buckets"] == LEAVES["mi.buckets"]


CHANGED = {"aggregate.grid_step": 0.125, "mi.buckets": 5, "mi.bias_correction": True,
           "report.bootstrap_resamples": 321, "report.dpi": 77, "inputs.n": 7, "trajectories.n": 3, "device": "cpu"}


@pytest.fixture
def changed_schema(tmp_path, monkeypatch) -> Path:
    """A copy of the schema whose defaults of :data:`CHANGED` differ, read by every with_defaults call."""
    schema = yaml.safe_load(SCHEMA.read_text())
    for key, value in CHANGED.items():
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert node["default"] != value, key
        node["default"] = value
    path = tmp_path / "config.schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    monkeypatch.setattr(cfg, "SCHEMA_PATH", path)
    return path


def test_the_library_reads_its_defaults_from_the_schema(changed_schema):
    """Change a default in the schema alone: the report and the resolved config follow it."""
    from advflow.report.page import _run_summary
    from advflow.report.study import Study

    study = Study.from_config(MINIMAL)
    assert (study.resamples, study.dpi, study.bias_corrected, study.n, study.trajectories) == (321, 77, True, 7, 3)
    summary = dict(_run_summary(study))
    assert summary["MI buckets B"] == "5" and summary["GP grid step"] == "0.125"
    resolved = resolve(MINIMAL)
    assert resolved["device"] == "cpu" and resolved["aggregate"]["grid_step"] == 0.125
    assert resolved["inputs"]["n"] == 7 and resolved["trajectories"]["n"] == 3
    assert cfg._inputs_n(MINIMAL) == 7
    # What a config states still wins.
    stated = Study.from_config({**MINIMAL, "report": {"bootstrap_resamples": 200}, "inputs": {"n": 4}})
    assert (stated.resamples, stated.dpi, stated.n) == (200, 77, 4)


def test_the_report_states_the_schemas_defaults():
    from advflow.report.page import _run_summary
    from advflow.report.study import Study

    study = Study.from_config(MINIMAL)
    assert (study.resamples, study.dpi, study.bias_corrected) == (
        LEAVES["report.bootstrap_resamples"], LEAVES["report.dpi"], LEAVES["mi.bias_correction"])
    assert (study.n, study.trajectories) == (LEAVES["inputs.n"], LEAVES["trajectories.n"])
    summary = dict(_run_summary(study))
    assert summary["MI buckets B"] == str(LEAVES["mi.buckets"])
    assert summary["GP grid step"] == str(LEAVES["aggregate.grid_step"])


def literal_defaults(text: str, keys: set[str]) -> list[str]:
    """Where ``text`` writes a default of its own for one of ``keys``: ``.get("key", x)``, ``.get("key") or x``,
    ``.setdefault("key", x)``, or ``"key": literal`` (a dict of defaults that the config's section updates)."""
    names = "|".join(sorted(map(re.escape, keys)))
    literal = r"""(?:-?\d[\d.e+-]*|True|False|None|"[^"\n]*"|'[^'\n]*'|\[|\{)"""
    patterns = [rf"""\.get\(\s*["']({names})["']\s*,""", rf"""\.get\(\s*["']({names})["']\s*\)\s*or\b""",
                rf"""\.setdefault\(\s*["']({names})["']\s*,""", rf"""["']({names})["']\s*:\s*{literal}"""]
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        for pattern in patterns:
            found += [f"{number}: {line.strip()}" for _ in re.finditer(pattern, code)]
    return found


#: The keys with a schema default, by their last part (``report.dpi`` -> ``dpi``) and whole.
DEFAULT_KEYS = {k.rpartition(".")[2] for k in DEFAULTS}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_no_rule_writes_a_default_the_schema_has(path):
    """The rules read the config as validate filled it (config["report"]["bootstrap_resamples"]), never a literal
    default of their own that could drift from the schema's."""
    assert literal_defaults(path.read_text(), DEFAULT_KEYS) == []


def test_the_rule_check_finds_each_way_of_writing_a_default():
    """The check above on the forms it removed (rules/common.smk and rules/defenses.smk before issue 26)."""
    planted = '''
GP = {"grid_step": 0.05, **(config.get("aggregate") or {})}
export_hdf5_locking(config.get("hdf5_locking", "auto"))
config.setdefault("inputs", {}).setdefault("n", 50)
        resamples=(config.get("report") or {}).get("bootstrap_resamples", 1000),
FEATURES = {
    "dtype": "float16",
'''
    assert len(literal_defaults(planted, DEFAULT_KEYS)) == 8
    assert literal_defaults('resamples=config["report"]["bootstrap_resamples"],  # .get("dpi", 1)', DEFAULT_KEYS) == []


def _parameter(function: Any, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


def api_defaults() -> list[tuple[str, Any, str]]:
    """(where, the library's own default, the schema key it stands for): the API's defaults, for calls without a
    config; the workflow always passes the config's value."""
    from advflow.attacks.sets import craft_set
    from advflow.defenses import metrics, tables
    from advflow.information import aggregate, features, mi, stage

    return [
        ("aggregate.fit_path(grid_step)", _parameter(aggregate.fit_path, "grid_step"), "aggregate.grid_step"),
        ("aggregate.aggregate_paths(grid_step)", _parameter(aggregate.aggregate_paths, "grid_step"),
         "aggregate.grid_step"),
        ("aggregate.aggregate_subsets(grid_step)", _parameter(aggregate.aggregate_subsets, "grid_step"),
         "aggregate.grid_step"),
        ("mi.DEFAULT_BUCKETS", mi.DEFAULT_BUCKETS, "mi.buckets"),
        ("stage.measure_set(buckets)", _parameter(stage.measure_set, "buckets"), "mi.buckets"),
        ("stage.measure_set(batch_size)", _parameter(stage.measure_set, "batch_size"), "mi.batch_size"),
        ("stage.measure_set(bias_correction)", _parameter(stage.measure_set, "bias_correction"),
         "mi.bias_correction"),
        ("features.record_features(dtype)", _parameter(features.record_features, "dtype"), "features.dtype"),
        ("features.record_features(compression)", _parameter(features.record_features, "compression"),
         "features.compression"),
        ("features.record_features(level)", _parameter(features.record_features, "level"),
         "features.compression_level"),
        ("features.record_features(batch_size)", _parameter(features.record_features, "batch_size"),
         "features.batch_size"),
        ("sets.craft_set(batch_size)", _parameter(craft_set, "batch_size"), "attacks.batch_size"),
        ("metrics.RESAMPLES", metrics.RESAMPLES, "report.bootstrap_resamples"),
        ("tables.write_defense_tables(resamples)", _parameter(tables.write_defense_tables, "resamples"),
         "report.bootstrap_resamples"),
        ("tables.write_defense_tables(dpi)", _parameter(tables.write_defense_tables, "dpi"), "report.dpi"),
    ]


def test_the_apis_own_defaults_are_the_schemas():
    """Kept as API defaults (a call without a config), they state the same value as the schema: change one and
    this fails until the other follows."""
    drifted = [f"{where} = {value!r}, schema {key} = {LEAVES[key]!r}"
               for where, value, key in api_defaults() if value != LEAVES[key]]
    assert drifted == []
