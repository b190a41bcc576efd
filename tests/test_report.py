"""The report stage (advflow.report): every distance table is the paper's distance of the
aggregated paths it names; the transferable split follows success on the target and misclassification on
the inference model; the report holds every section, figure and table and renders in a headless browser
with every image decoded and no console error; every finding's verdict is computed from the numbers.

Most tests use a small synthetic run written here (paths, adversarial sets, model records, attack tables
and aggregates made directly, no GP fit but Q5's subsets), so they take seconds; one slow test builds the
report of the tiny workflow run (``tiny_run``)."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from advflow.information.aggregate import (AggregatedPath, aggregate_frame, aggregate_subsets, read_aggregate,
                               read_transfer_masks, write_aggregate)
from advflow.information.paths import read_input_paths
from advflow.workflow.catalog import CONTROL_PREFIX, control_trajectory_set, transfer_subsets
from advflow.report import NORMAL, NORMAL_TRAIN, TABLE_COLUMNS, Study, band_limits, build_report, set_name
from advflow.report import findings as fx
from advflow.report import q1, q2, q3, q4, q5

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4  # conv layers of the synthetic models
N = 8  # inputs per set
CLASSES = 4
SUCCESS = np.array([True, True, True, True, False, True, True, True])  # success of every synthetic set on its target
FOOLED_ELSEWHERE = np.array([True, True, False, False, True, True, False, True])  # misclassified by another model
TRAJECTORY_STEPS = 4
SUBSET_SEED = 3  # the seed of the aggregate stage's GP fits of Q5's subsets

SYNTHETIC_CONFIG = {
    "seed": 0,
    "dataset": "synthetic",
    "models": {"good_init": {}, "deep_conv": {}, "vgg_like": {}, "compressed": {}, "distilled": {"temperature": 40}},
    "inputs": {"n": N},
    "trajectories": {"n": 2},
    "attacks": {"jsma": {"theta": 1.0, "gamma": 0.1}},
    "attack_sets": {"good_init": ["fgsm", "jsma", "cw"], "compressed": ["fgsm", "jsma"], "deep_conv": ["jsma"],
                    "vgg_like": ["jsma"], "distilled": ["jsma_adaptive", "jsma_control"]},
    "transfer_groups": [["good_init", "compressed"], ["good_init", "deep_conv", "vgg_like"]],
}
DISTANCE_TABLES = ("table3_distance_from_normal.csv", "table5_complexity.csv", "q4_defense.csv", "table9_transfer.csv")
ALL_TABLES = set(TABLE_COLUMNS)
ALL_FIGURES = {"q1_trajectory.png", "q2_attacks.png", "q3_complexity_fgsm.png", "q3_complexity_jsma.png",
               "q4_defense.png", "q5_transfer_jsma.png", "q5_transferable_jsma.png"}


# ---------------------------------------------------------------------------------------------------------
# A synthetic run


def _write_paths(path: Path, mu_s: np.ndarray, mu_t: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                 seeds: np.ndarray | None = None, steps: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "layer", "layer_name", "mu_s", "mu_t", "label", "prediction"]
                        + (["seed", "step"] if seeds is not None else []))
        for i in range(mu_s.shape[0]):
            for k in range(K):
                writer.writerow([i, k + 1, f"conv{k + 1}", repr(float(mu_s[i, k])), repr(float(mu_t[i, k])),
                                 int(labels[i]), int(predictions[i])]
                                + ([int(seeds[i]), int(steps[i])] if seeds is not None else []))


def _aggregate_without_fit(mu: np.ndarray) -> AggregatedPath:
    """A stand-in aggregate (the per-layer means with a fixed band): the report only reads aggregates."""
    layers = np.arange(1.0, K + 1)
    mean = mu.mean(axis=0)
    grid = np.linspace(1.0, K, 3 * K - 2)
    grid_mean = np.interp(grid, layers, mean)
    return AggregatedPath(layers, mean, mean - 0.01, mean + 0.01, grid, grid_mean, grid_mean - 0.01, grid_mean + 0.01)


def make_synthetic_run(root: Path, config: dict, fooled_elsewhere: np.ndarray = FOOLED_ELSEWHERE, *,
                       fit_subsets: bool = False) -> Path:
    """results/synthetic with every file the report reads, for the sets ``config`` asks for; an adversarial
    input is misclassified by a model other than its target where ``fooled_elsewhere``. Q5's subsets are
    GP-fitted as the aggregate stage fits them with ``fit_subsets``, else stand-in aggregates of the same inputs."""
    results = root / "results" / "synthetic"
    study = Study.from_config(config)
    rng = np.random.default_rng(7)
    labels = np.arange(N) % CLASSES
    base_s = {m: rng.uniform(0.2, 0.6, K) for m in study.models}
    base_t = {m: rng.uniform(0.1, 0.3, K) for m in study.models}

    attacked = [(a, t) for t, attacks in study.attack_sets.items() for a in attacks]
    attacked += [(CONTROL_PREFIX + a, t) for a, t in attacked]  # every attack's random control
    sets = [NORMAL, NORMAL_TRAIN] + [set_name(a, t) for a, t in attacked]
    for model in study.models:
        (results / "models").mkdir(parents=True, exist_ok=True)
        record = {"model": model, "parameters": int(1_000_000 * rng.uniform(0.5, 1.5)),
                  "test_accuracy": float(rng.uniform(0.8, 0.95))}
        (results / "models" / f"{model}.json").write_text(json.dumps(record))
        for set_ in sets:
            if not study.measured(model, set_):
                continue
            shift = 0.0 if set_.startswith("normal") else rng.uniform(0.005, 0.05)
            if set_.startswith(CONTROL_PREFIX):
                shift /= 4
            mu_s = base_s[model] + rng.normal(0, 0.01, (N, K)) + shift / 3
            mu_t = base_t[model] + rng.normal(0, 0.01, (N, K)) + shift
            predictions = labels.copy()
            if "@" in set_:
                target = set_.split("@")[1]
                fooled = SUCCESS if target == model else fooled_elsewhere
                predictions = np.where(fooled, (labels + 1) % CLASSES, labels)
            _write_paths(results / "paths" / model / f"{set_}.csv", mu_s, mu_t, labels, predictions)
            aggregated = {"iip": _aggregate_without_fit(mu_s), "oip": _aggregate_without_fit(mu_t)}
            write_aggregate(results / "aggregates" / model / f"{set_}.csv", aggregated)

    attack_rows, transfer_rows = [], []
    for target, attacks in study.attack_sets.items():
        for attack in [*attacks, *(CONTROL_PREFIX + a for a in attacks)]:
            with h5py.File(_mkdir(results / "adv" / target / f"{attack}.h5"), "w") as h5:
                h5["success"], h5["labels"] = SUCCESS, labels
                h5["norms_r/l0"], h5["norms_r/l2"] = np.where(SUCCESS, 5.0, 0.0), np.where(SUCCESS, 0.5, 0.0)
            attack_rows.append({"target": target, "attack": attack, "norm": "l2", "distortion": 0.05,
                                "distortion_l2": 0.05, "confidence": 0.6, "success_rate": float(SUCCESS.mean()),
                                "attacked": N})
            if attack.startswith(CONTROL_PREFIX):
                continue
            for model in study.models:
                if model != target and study.measured(model, set_name(attack, target)):
                    transferred = int((SUCCESS & fooled_elsewhere).sum())
                    transfer_rows.append({"attack": attack, "target": target, "measured_on": model,
                                          "successful": int(SUCCESS.sum()), "transferred": transferred,
                                          "transferability": transferred / SUCCESS.sum()})
    _write_rows(results / "tables" / "attacks.csv", attack_rows)
    _write_rows(results / "tables" / "transferability.csv", transfer_rows)
    write_subsets(results, config, fit=fit_subsets)

    if study.has_trajectories:
        seeds = np.repeat(np.arange(2), TRAJECTORY_STEPS + 1)
        steps = np.tile(np.arange(TRAJECTORY_STEPS + 1), 2)
        drift = steps[:, None] * np.array([0.002, 0.004])[seeds][:, None]
        model = study.trajectory_model  # the trajectories role's (good_init by default)
        mu_s = base_s[model] + drift / 2 + rng.normal(0, 1e-4, (seeds.size, K))
        mu_t = base_t[model] + drift
        predictions = np.where(steps == TRAJECTORY_STEPS, 1, 0)
        _write_paths(results / "paths" / model / f"{study.trajectory_set}.csv", mu_s, mu_t, np.zeros(seeds.size),
                     predictions, seeds, steps)
        _write_paths(results / "paths" / model / f"{control_trajectory_set(model)}.csv", mu_s - drift / 2,
                     mu_t - drift * 0.8, np.zeros(seeds.size), np.zeros(seeds.size), seeds, steps)
        with h5py.File(_mkdir(results / "trajectories" / model / "jsma.h5"), "w") as h5:
            h5["success"] = np.array([True, True])
    return results


def write_subsets(results: Path, config: dict, fit: bool) -> None:
    """Q5's transferable / non-transferable aggregates, as the aggregate stage writes them (rule
    aggregate_subsets, seeded by the run's seed), or stand-ins of the same inputs (no fit, fast)."""
    study = Study.from_config(config)
    pairs = {(m, s) for m, s, _ in transfer_subsets({t: list(a) for t, a in study.attack_sets.items()},
                                                       [list(g) for g in study.transfer_groups])}
    for model, set_ in sorted(pairs):
        attack, target = set_.split("@")
        paths_csv, adversarial = results / "paths" / model / f"{set_}.csv", results / "adv" / target / f"{attack}.h5"
        if fit:
            fitted = aggregate_subsets(paths_csv, adversarial, seed=SUBSET_SEED)
        else:
            paths = read_input_paths(paths_csv)
            masks = read_transfer_masks(paths_csv, adversarial)
            fitted = {subset: (int(m.sum()), {"iip": _aggregate_without_fit(paths.mu_s[m]),
                                              "oip": _aggregate_without_fit(paths.mu_t[m])} if m.sum() >= 2 else {})
                      for subset, m in masks.items()}
        for subset, (_, aggregated) in fitted.items():
            write_aggregate(results / "aggregates" / model / f"{set_}.{subset}.csv", aggregated)


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def build_synthetic_report(root: Path) -> dict:
    """A synthetic run of :data:`SYNTHETIC_CONFIG` and its report under ``root`` (the session fixture
    ``synthetic_report`` of conftest.py builds it once for every module that reads it)."""
    results = make_synthetic_run(root, SYNTHETIC_CONFIG, fit_subsets=True)
    out = {"results": results, "html": root / "report.html", "tables": root / "tables", "figures": root / "figures"}
    out["captions"] = build_report(results, SYNTHETIC_CONFIG, out_html=out["html"], tables_dir=out["tables"],
                                   figures_dir=out["figures"], seed=3)
    return out


# ---------------------------------------------------------------------------------------------------------
# Checks shared by the synthetic and the tiny run


def assert_distance_tables_follow_the_formula(results: Path, tables: Path) -> int:
    """Every row of every distance table equals (1/K) sum_k |mean_1 - mean_2| of the aggregates it names."""
    checked = 0
    for name in DISTANCE_TABLES:
        for row in read_rows(tables / name):
            adversarial = read_aggregate(results / "aggregates" / row["measured_on"] / f"{row['set']}.csv")
            normal = read_aggregate(results / "aggregates" / row["measured_on"] / f"{row['normal']}.csv")
            for path, column in (("iip", "iip_distance"), ("oip", "oip_distance")):
                expected = float(np.mean(np.abs(adversarial[path].mean - normal[path].mean)))
                assert float(row[column]) == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, row)
                checked += 1
    return checked


def assert_report_holds_everything(html_text: str, captions: dict[str, str], tables: Path, figures: Path) -> None:
    for key in ("q1", "q2", "q3", "q4", "q5"):
        assert f'<section id="{key}"' in html_text, f"section {key} missing"
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs == sorted(n for n in captions if n.endswith(".png"))
    images = re.findall(r"<img [^>]*>", html_text)
    # The defense stage's and seed 001's sections show their own stages' figures, not the report's.
    questions = re.sub(r'<section id="(defense|seed001)".*?</section>', "", html_text, flags=re.S)
    assert len(re.findall(r"<img [^>]*>", questions)) == len(pngs)
    assert all('src="data:image/png;base64,' in tag for tag in images)
    for name in pngs:
        assert f'data-figure="{name}"' in html_text
        assert (figures / f"{Path(name).stem}.rst").read_text().strip() == captions[name]
        assert (figures / f"{Path(name).stem}.pdf").read_bytes()[:5] == b"%PDF-"  # vector copy for print
    written = sorted(n for n in captions if n.endswith(".csv"))
    assert written == sorted(p.name for p in tables.glob("*.csv"))
    for name in written:
        assert f'data-table="{name}"' in html_text
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html_text), "the report must be self-contained"
    assert html_text.count('class="finding ') == 10  # each question: the statistical and the literal finding
    assert html_text.count('data-kind="literal" data-verdict') == 5


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium is not installed (apt-get install chromium)")


def render_in_chromium(page: Path, screenshot: Path) -> tuple[str, str]:
    """The DOM after load (virtual time budget 5 s) and Chromium's log; then a 1280x4000 screenshot."""
    common = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dump = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
                           page.resolve().as_uri()], check=False, capture_output=True, text=True, timeout=180)
    assert dump.returncode == 0, dump.stderr[-3000:]
    shot = subprocess.run([*common, "--window-size=1280,4000", f"--screenshot={screenshot}", page.resolve().as_uri()],
                          check=False, capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0, shot.stderr[-3000:]
    return dump.stdout, dump.stderr


def assert_renders_cleanly(page: Path, screenshot: Path) -> None:
    dom, log = render_in_chromium(page, screenshot)
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "console messages:\n" + "\n".join(console)
    body = re.search(r"<body[^>]*>", dom).group(0)
    decoded = re.search(r'data-images-decoded="(\d+)"', body)
    total = re.search(r'data-images-total="(\d+)"', body)
    assert decoded and total, f"the load script did not run: {body}"
    assert int(decoded.group(1)) == int(total.group(1)) == len(re.findall(r"<img ", page.read_text()))
    assert screenshot.is_file() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------
# Tables


def test_distance_tables_equal_the_path_distance_of_the_aggregates_they_name(synthetic_report):
    assert assert_distance_tables_follow_the_formula(synthetic_report["results"], synthetic_report["tables"]) > 0


def test_distance_tables_cover_every_set_the_config_asks_for(synthetic_report):
    tables = synthetic_report["tables"]
    table3 = read_rows(tables / "table3_distance_from_normal.csv")
    assert [(r["attack"], r["set"]) for r in table3] == [("", NORMAL_TRAIN)] + [
        (name, f"{name}@good_init") for a in ("fgsm", "jsma", "cw") for name in (a, CONTROL_PREFIX + a)]
    table5 = read_rows(tables / "table5_complexity.csv")  # Q3's attacks: crafted on both models
    assert {(r["attack"], r["measured_on"], r["target"], r["relation"]) for r in table5} == {
        (a, m, t, "itself" if m == t else "other") for a in ("fgsm", "jsma") for m in ("good_init", "compressed")
        for t in ("good_init", "compressed")}
    assert all(float(r["average_distance"]) == pytest.approx((float(r["iip_distance"]) + float(r["oip_distance"])) / 2)
               for r in table5)
    q4 = read_rows(tables / "q4_defense.csv")
    assert [r["attack"] for r in q4] == ["jsma_control", "random_jsma_control", "jsma_adaptive",
                                         "random_jsma_adaptive"]
    assert all(float(r["success_rate"]) == pytest.approx(SUCCESS.mean()) for r in q4)
    table9 = read_rows(tables / "table9_transfer.csv")  # Q5's attacks: crafted on all three models (jsma)
    group = ("good_init", "deep_conv", "vgg_like")
    assert {(r["attack"], r["target"], r["measured_on"]) for r in table9} == {
        ("jsma", t, m) for t in group for m in group}


def test_q5_split_is_success_on_the_target_and_misclassification_on_the_inference_model(synthetic_report):
    results, tables = synthetic_report["results"], synthetic_report["tables"]
    rows = read_rows(tables / "q5_transferable.csv")
    transfer = {(r["attack"], r["target"], r["measured_on"]): r for r in read_rows(results / "tables" /
                                                                                   "transferability.csv")}
    assert len(rows) == 2 * 6  # subsets x (target, other model) pairs of the one shared attack
    for row in rows:
        with h5py.File(results / "adv" / row["target"] / f"{row['attack']}.h5") as h5:
            success = h5["success"][:]
        paths = read_rows(results / "paths" / row["measured_on"] / f"{row['set']}.csv")
        fooled = np.array([r["prediction"] != r["label"] for r in paths if r["layer"] == "1"])
        mask = success & (fooled if row["subset"] == "transferable" else ~fooled)
        assert int(row["inputs"]) == mask.sum()
        counts = transfer[(row["attack"], row["target"], row["measured_on"])]
        expected = int(counts["transferred"]) if row["subset"] == "transferable" else \
            int(counts["successful"]) - int(counts["transferred"])
        assert int(row["inputs"]) == expected

    # One subset refitted here: the same GP (aggregate_frame, the aggregate stage's seed) gives the same distances.
    row = next(r for r in rows if r["subset"] == "transferable" and int(r["inputs"]) >= 2)
    paths = read_rows(results / "paths" / row["measured_on"] / f"{row['set']}.csv")
    fooled = {r["input"] for r in paths if r["prediction"] != r["label"]}
    with h5py.File(results / "adv" / row["target"] / f"{row['attack']}.h5") as h5:
        success = h5["success"][:]
    chosen = [r for r in paths if r["input"] in fooled and success[int(r["input"])]]
    fitted = aggregate_frame(*(np.array([float(r[c]) for r in chosen]) for c in ("layer", "mu_s", "mu_t")), seed=3)
    normal = read_aggregate(results / "aggregates" / row["measured_on"] / f"{NORMAL}.csv")
    assert float(row["oip_distance"]) == pytest.approx(np.mean(np.abs(fitted["oip"].mean - normal["oip"].mean)))
    assert float(row["iip_distance"]) == pytest.approx(np.mean(np.abs(fitted["iip"].mean - normal["iip"].mean)))


def test_subsets_with_fewer_than_two_inputs_are_reported_as_nan(tmp_path):
    one_transferable = np.eye(1, N, dtype=bool)[0]  # input 0 alone
    results = make_synthetic_run(tmp_path, SYNTHETIC_CONFIG, fooled_elsewhere=one_transferable)
    build_report(results, SYNTHETIC_CONFIG, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                 figures_dir=tmp_path / "f", seed=3)
    rows = read_rows(tmp_path / "t" / "q5_transferable.csv")
    for row in rows:
        assert (row["inputs"] == "1") == (row["subset"] == "transferable")
        assert math.isnan(float(row["oip_distance"])) == (row["subset"] == "transferable")


def test_q1_deviation_is_each_steps_distance_from_step_0(synthetic_report):
    results, tables = synthetic_report["results"], synthetic_report["tables"]
    paths = read_rows(results / "paths" / "good_init" / f"{Study.from_config(SYNTHETIC_CONFIG).trajectory_set}.csv")
    by_input: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for r in paths:
        entry = by_input.setdefault((r["seed"], int(r["step"])), {"s": np.zeros(K), "t": np.zeros(K)})
        entry["s"][int(r["layer"]) - 1], entry["t"][int(r["layer"]) - 1] = float(r["mu_s"]), float(r["mu_t"])
    rows = read_rows(tables / "q1_trajectory.csv")
    assert len(rows) == len(by_input) == 2 * (TRAJECTORY_STEPS + 1)
    for row in rows:
        step, start = by_input[(row["seed"], int(row["step"]))], by_input[(row["seed"], 0)]
        assert float(row["iip_deviation"]) == pytest.approx(np.mean(np.abs(step["s"] - start["s"])), abs=1e-15)
        assert float(row["oip_deviation"]) == pytest.approx(np.mean(np.abs(step["t"] - start["t"])), abs=1e-15)


def test_model_and_attack_tables_are_selections_of_the_records_and_attack_tables(synthetic_report):
    results, tables = synthetic_report["results"], synthetic_report["tables"]
    for name, models in (("table4_models.csv", ["good_init", "compressed"]),
                         ("table7_models.csv", ["good_init", "deep_conv", "vgg_like"])):
        rows = read_rows(tables / name)
        assert [r["model"] for r in rows] == models
        for row in rows:
            record = json.loads((results / "models" / f"{row['model']}.json").read_text())
            assert int(row["parameters"]) == record["parameters"]
            assert float(row["test_accuracy"]) == pytest.approx(record["test_accuracy"])
    attacks = {(r["target"], r["attack"]) for r in read_rows(results / "tables" / "attacks.csv")}
    table2 = [(r["target"], r["attack"]) for r in read_rows(tables / "table2_attacks.csv")]
    assert set(table2) <= attacks
    assert table2 == [("good_init", n) for a in ("fgsm", "jsma", "cw") for n in (a, CONTROL_PREFIX + a)] + [
        ("compressed", n) for a in ("fgsm", "jsma") for n in (a, CONTROL_PREFIX + a)]
    table8 = {(r["target"], r["attack"]) for r in read_rows(tables / "table8_attacks.csv")}
    assert table8 == {(t, n) for t in ("good_init", "deep_conv", "vgg_like") for n in ("jsma", "random_jsma")}
    table6 = {(r["attack"], r["target"], r["measured_on"]) for r in read_rows(tables / "table6_transferability.csv")}
    assert table6 == {(a, t, m) for a in ("fgsm", "jsma") for t, m in (("good_init", "compressed"),
                                                                      ("compressed", "good_init"))}


# ---------------------------------------------------------------------------------------------------------
# The page


def test_report_holds_every_section_figure_and_table(synthetic_report):
    captions = synthetic_report["captions"]
    assert {n for n in captions if n.endswith(".png")} == ALL_FIGURES
    assert {n for n in captions if n.endswith(".csv")} == ALL_TABLES
    assert_report_holds_everything(synthetic_report["html"].read_text(), captions, synthetic_report["tables"],
                                   synthetic_report["figures"])


def test_report_states_each_finding_computed_from_its_tables(synthetic_report):
    page = synthetic_report["html"].read_text()
    table3 = read_rows(synthetic_report["tables"] / "table3_distance_from_normal.csv")
    expected = q2.attack_mechanisms([{**r, "iip_distance": float(r["iip_distance"]),
                                            "oip_distance": float(r["oip_distance"])} for r in table3
                                           if not r["attack"].startswith(CONTROL_PREFIX)])
    assert html.escape(expected.text) in page


def test_report_renders_in_headless_chromium_with_every_image_decoded(synthetic_report, tmp_path):
    assert_renders_cleanly(synthetic_report["html"], tmp_path / "report.png")


def test_sections_without_their_sets_are_skipped_with_a_note(tmp_path):
    config = {**SYNTHETIC_CONFIG, "trajectories": {"n": 0},
              "attack_sets": {k: v for k, v in SYNTHETIC_CONFIG["attack_sets"].items() if k != "distilled"},
              "models": {k: v for k, v in SYNTHETIC_CONFIG["models"].items() if k != "distilled"}}
    results = make_synthetic_run(tmp_path, config)
    captions = build_report(results, config, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                            figures_dir=tmp_path / "f")
    assert "q4_defense.csv" not in captions and "q1_trajectory.csv" not in captions
    assert "q4_defense.png" not in captions and "q1_trajectory.png" not in captions
    page = (tmp_path / "r.html").read_text()
    assert "Note: skipped: attack_sets.distilled has neither" in page
    assert "Note: skipped: the config records no JSMA trajectories" in page
    assert_report_holds_everything(page, captions, tmp_path / "t", tmp_path / "f")
    assert page.count('data-holds="none"') == 4  # Q1 and Q4: statistical and literal


def test_report_prints_to_pdf_with_every_row_of_its_long_tables(synthetic_report, tmp_path):
    """Chromium's --print-to-pdf of the report holds the last row of every table that scrolls on screen
    (a scroll box would cut it), and the table of contents links every question."""
    import pypdf

    page = synthetic_report["html"]
    text = page.read_text()
    assert all(f'href="#{key}"' in text for key in ("q1", "q2", "q3", "q4", "q5", "diagnostics"))
    common = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"]

    def printed(html_file: Path) -> pypdf.PdfReader:
        pdf = html_file.with_suffix(".pdf")
        result = subprocess.run([*common, f"--print-to-pdf={pdf}", html_file.resolve().as_uri()], check=False,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0 and pdf.is_file(), result.stderr[-3000:]
        return pypdf.PdfReader(pdf)

    # A clipped table still carries its hidden rows' text in the PDF, but takes fewer pages: the report
    # must print to as many pages as the same page with no scroll box at all.
    unclipped = tmp_path / "unclipped.html"
    unclipped.write_text(text.replace('<div class="scroll">', "<div>"))
    report = printed(page)
    assert len(report.pages) == len(printed(unclipped).pages)
    words = " ".join(" ".join(p.extract_text() for p in report.pages).split())
    long_tables = re.findall(r'<div class="scroll"><table data-table="([^"]+)".*?<tbody>(.*?)</tbody>', text, re.S)
    assert long_tables, "the synthetic report should have a table long enough to scroll on screen"
    for name, body in long_tables:
        last = re.findall(r"<tr>(.*?)</tr>", body, re.S)[-1]
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", last, re.S)]
        for cell in cells:
            if cell:
                assert " ".join(cell.split()) in words, (name, cell)


def test_a_missing_aggregate_is_an_error_that_names_the_file(tmp_path):
    results = make_synthetic_run(tmp_path, SYNTHETIC_CONFIG)
    (results / "aggregates" / "good_init" / "jsma@good_init.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"aggregates/good_init/jsma@good_init\.csv.*rule aggregate"):
        build_report(results, SYNTHETIC_CONFIG, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                     figures_dir=tmp_path / "f")


def test_q2_figure_has_one_row_per_attack_family(synthetic_report):
    """good_init's fgsm, jsma and cw fall in three families (L∞, L0, minimal L2): three rows of 350 px
    at the report's 100 dpi, not every curve in one panel."""
    import struct

    png = (synthetic_report["figures"] / "q2_attacks.png").read_bytes()
    height = struct.unpack(">I", png[20:24])[0]
    assert height == 3 * 350


def test_rates_are_written_one_way_in_tables_and_findings(synthetic_report):
    """Success rates and accuracies print as the findings' text prints them ("33.3 %"), never 0.3333."""
    page = synthetic_report["html"].read_text()
    rate = fx.percent(float(SUCCESS.mean()))
    table2 = re.search(r'<table data-table="table2_attacks[^"]*">(.*?)</table>', page, re.S).group(1)
    assert f">{rate}</td>" in table2 and f">{SUCCESS.mean():.4f}</td>" not in table2


def test_findings_json_beside_the_report_holds_every_verdict_case_and_interval(synthetic_report):
    record = json.loads((synthetic_report["html"].parent / "findings.json").read_text())
    verdicts = read_rows(synthetic_report["tables"] / "verdicts.csv")
    intervals = read_rows(synthetic_report["tables"] / "intervals.csv")
    assert list(record["questions"]) == ["q1", "q2", "q3", "q4", "q5"]
    page = synthetic_report["html"].read_text()
    for key, question in record["questions"].items():
        assert [c["case"] for c in question["cases"]] == [r["case"] for r in verdicts if r["question"] == key]
        assert [c["verdict"] for c in question["cases"]] == [r["verdict"] for r in verdicts if r["question"] == key]
        assert len(question["intervals"]) == sum(r["question"] == key for r in intervals)
        assert f"<td class=\"text\">{html.escape(question['verdict'])}</td>" in page or question["verdict"] in page
    assert record["bootstrap_resamples"] == 1000 and isinstance(record["departs_from_paper"], list)


def test_figures_draw_paths_at_the_layers_with_bands_never_below_zero():
    """A band whose GP lower edge dips below 0 nats is drawn from 0; the curve is drawn at the layers only."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    from advflow.report.plotting import Curve, draw_row

    layers = np.arange(1.0, K + 1)
    mean = np.linspace(0.01, 0.05, K)
    grid = np.linspace(1.0, K, 4 * K)
    low = AggregatedPath(layers, mean, mean - 0.03, mean + 0.03, grid, np.interp(grid, layers, mean),
                         np.interp(grid, layers, mean) - 0.03, np.interp(grid, layers, mean) + 0.03)
    figure = Figure()
    axes = figure.subplots(1, 3)
    draw_row(axes, [Curve("set", {"iip": low, "oip": low}, "C0")])
    for ax in axes[:2]:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands and all(np.all(p.vertices[:, 1] >= 0) for c in bands for p in c.get_paths())
        assert np.array_equal(ax.lines[0].get_xdata(), layers)  # points at the layers, not the GP grid
    corrected = dataclasses.replace(low, mean=mean - 0.02, lower=mean - 0.05)  # bias-corrected: may be < 0
    assert band_limits(corrected)[0].min() < 0 and band_limits(low)[0].min() == 0


def test_a_gp_fit_without_finite_lengthscale_is_flagged_in_its_table_row_and_diagnostics(tmp_path):
    """An aggregate whose fit has no finite lengthscale or likelihood (an all-equal set) is flagged on the
    distance row that uses it and in the diagnostics; the other rows carry no flag."""
    results = make_synthetic_run(tmp_path, SYNTHETIC_CONFIG)
    target = results / "aggregates" / "good_init" / "fgsm@good_init.csv"
    aggregated = read_aggregate(target)
    flat = {"constant": 0.0, "lengthscale": math.nan, "outputscale": 0.0, "noise": 0.0,
            "log_marginal_likelihood": math.inf}
    write_aggregate(target, {"iip": aggregated["iip"],
                             "oip": dataclasses.replace(aggregated["oip"], hyperparameters=flat)})
    build_report(results, SYNTHETIC_CONFIG, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                 figures_dir=tmp_path / "f")
    rows = {r["set"]: r for r in read_rows(tmp_path / "t" / "table3_distance_from_normal.csv")}
    assert rows["fgsm@good_init"]["gp_flag"] == "OIP: lengthscale nan, log marginal likelihood inf"
    assert all(r["gp_flag"] == "" for s, r in rows.items() if s != "fgsm@good_init")
    page = (tmp_path / "r.html").read_text()
    assert "OIP of fgsm@good_init on good_init (lengthscale nan, log marginal likelihood inf)" in page


# ---------------------------------------------------------------------------------------------------------
# Findings: verdicts follow the numbers


def q2_rows(oip: list[float], iip: float = 0.004) -> list[dict]:
    return [{"attack": "", "set": NORMAL_TRAIN, "iip_distance": 0.001, "oip_distance": 0.002}] + [
        {"attack": a, "set": f"{a}@good_init", "iip_distance": iip, "oip_distance": o}
        for a, o in zip(("fgsm", "igsm", "cw"), oip)]


def test_q2_holds_when_every_attacks_oip_distance_exceeds_its_iip_distance():
    finding = q2.attack_mechanisms(q2_rows([0.0117, 0.0162, 0.0140]))
    assert finding.holds is True
    assert "holds for 3 of 3 attacks" in finding.text
    assert "fgsm: OIP 0.0117 vs IIP 0.004" in finding.text
    assert "from 0.0117 (fgsm) to 0.0162 (igsm)" in finding.text
    assert finding.numbers["attacks_oip_above_iip"] == 3


def test_q2_does_not_hold_when_the_numbers_are_flipped():
    finding = q2.attack_mechanisms(q2_rows([0.001, 0.002, 0.003], iip=0.01))
    assert finding.holds is False
    assert "does not hold" in finding.text and "holds for 0 of 3 attacks" in finding.text
    partly = q2.attack_mechanisms(q2_rows([0.0117, 0.002, 0.0140]))
    assert partly.holds is False and "holds only in part: for 2 of 3 attacks" in partly.text


def test_q2_cannot_be_checked_without_attack_rows():
    finding = q2.attack_mechanisms(q2_rows([]))
    assert finding.holds is None and "cannot be checked" in finding.text


def q3_rows(gap_good_init: float, gap_compressed: float) -> list[dict]:
    """table5_gap rows: on each model, the gap between the sets targeting it and the other model."""
    return [{"attack": attack, "measured_on": model, "iip_gap": value / 3, "oip_gap": value, "average_gap": value}
            for attack in ("fgsm", "jsma", "cw")
            for model, value in (("good_init", gap_good_init), ("compressed", gap_compressed))]


def test_q3_verdict_follows_on_which_model_the_gap_is_larger():
    holds = q3.model_complexity(q3_rows(0.0039, 0.0116))
    assert holds.holds is True and "holds for 3 of 3 attacks" in holds.text and holds.verdict == "holds"
    flipped = q3.model_complexity(q3_rows(0.0116, 0.0039))
    assert flipped.holds is False and flipped.verdict == "fails" and "holds for 0 of 3 attacks" in flipped.text


def q4_rows(adaptive: float, control: float) -> list[dict]:
    return [{"attack": "jsma_control", "iip_distance": 0.001, "oip_distance": control, "success_rate": 0.0},
            {"attack": "jsma_adaptive", "iip_distance": 0.002, "oip_distance": adaptive, "success_rate": 0.3132}]


def test_q4_verdict_follows_the_adaptive_and_regular_oip_distances():
    holds = q4.adaptive_attack(q4_rows(0.0219, 0.0033))
    assert holds.holds is True
    assert "holds (OIP distance 0.0219 for jsma_adaptive vs 0.0033 for jsma_control" in holds.text
    assert "jsma_adaptive 31.3 %, jsma_control 0.0 %" in holds.text
    flipped = q4.adaptive_attack(q4_rows(0.0033, 0.0219))
    assert flipped.holds is False and "does not hold" in flipped.text
    assert q4.adaptive_attack(q4_rows(0.0219, 0.0033)[1:]).holds is None


def q5_rows(own: float, other: float, transferable: float, non_transferable: float) -> tuple[list[dict], list[dict]]:
    group = ("good_init", "deep_conv", "vgg_like")
    table9 = [{"attack": "jsma", "target": t, "measured_on": m, "iip_distance": 0.001,
               "oip_distance": own if t == m else other} for t in group for m in group]
    split = [{"attack": "jsma", "target": t, "measured_on": m, "subset": s, "inputs": 3,
              "oip_distance": transferable if s == "transferable" else non_transferable}
             for t in group for m in group if t != m for s in ("transferable", "non_transferable")]
    return table9, split


def test_q5_verdict_follows_the_transferable_split_and_table_ix():
    holds = q5.transferability(*q5_rows(0.017, 0.011, 0.03, 0.01))
    assert holds.holds is True
    assert "holds for 6 of 6 cases" in holds.text and "holds for 6 of 6 comparisons" in holds.text
    flipped = q5.transferability(*q5_rows(0.011, 0.017, 0.01, 0.03))
    assert flipped.holds is False and "does not hold" in flipped.text
    assert "holds for 0 of 6 cases" in flipped.text and "holds for 0 of 6 comparisons" in flipped.text
    table9, split = q5_rows(0.017, 0.011, math.nan, math.nan)
    unsplit = q5.transferability(table9, split)
    assert unsplit.holds is True and "cannot be checked" in unsplit.text
    assert "as far as it can be checked" in unsplit.text


def q1_rows(grow: bool) -> list[dict]:
    rows = []
    for seed in (0, 1):
        for step in range(5):
            deviation = 0.002 * step if grow else (0.0 if step == 0 else 0.01 - 0.002 * step)
            rows.append({"seed": seed, "step": step, "iip_deviation": deviation / 2, "oip_deviation": deviation})
    return rows


def test_q1_verdict_follows_the_deviation_along_the_steps():
    holds = q1.crafting_process(q1_rows(grow=True))
    assert holds.holds is True and "holds for 2 of 2 seeds" in holds.text
    assert holds.numbers["spearman_oip"] == pytest.approx(1.0)
    flipped = q1.crafting_process(q1_rows(grow=False))
    assert flipped.holds is False and "holds for 0 of 2 seeds" in flipped.text
    short = [r for r in q1_rows(grow=True) if r["step"] < 2]
    assert q1.crafting_process(short).holds is None


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert fx.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


# ---------------------------------------------------------------------------------------------------------
# The tiny workflow run


@pytest.mark.slow
def test_tiny_run_report_holds_everything_and_renders_in_chromium(tiny_run, repo, tmp_path):
    config = yaml.safe_load((repo / "configs" / "tiny.yaml").read_text())
    source = tiny_run / "results" / config["dataset"]
    results = tmp_path / "results" / config["dataset"]
    for folder in ("paths", "adv", "tables", "aggregates", "trajectories", "defense", "seed001"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, results / folder)
    (results / "models").mkdir(parents=True)
    for record in (source / "models").glob("*.json"):
        shutil.copy(record, results / "models" / record.name)
    out = tmp_path / "report"
    captions = build_report(results, config, out_html=out / "report.html", tables_dir=out / "tables",
                            figures_dir=out / "figures", seed=config["seed"])
    study = Study.from_config(config)
    assert {n for n in captions if n.endswith(".png")} == {
        "q1_trajectory.png", "q2_attacks.png", "q4_defense.png", *(f"q3_complexity_{a}.png" for a in study.q3_attacks),
        *(f"q5_{kind}_{a}.png" for a in study.q5_attacks for kind in ("transfer", "transferable"))}
    assert {n for n in captions if n.endswith(".csv")} == ALL_TABLES
    assert assert_distance_tables_follow_the_formula(results, out / "tables") > 0
    page = (out / "report.html").read_text()
    assert_report_holds_everything(page, captions, out / "tables", out / "figures")
    for section in ("defense", "seed001"):  # the defense stage's and seed 001's sections, rendered with the rest
        assert f'<section id="{section}"' in page
    assert_renders_cleanly(out / "report.html", out / "screenshot.png")
    assert_summary_is_the_first_screen(page, out)


def assert_summary_is_the_first_screen(page: str, out: Path) -> None:
    """The first screen at 1400 px holds the summary (every question's verdict and numbers, the smoke-test warning),
    and the summary and findings.json carry the defenses, seed 001 and the provenance."""
    head = page[:page.index('<section id="q1"')]
    assert 'data-warning="smoke-test"' in head and "N = 6" in head
    assert 'data-table="detector_matrix"' in head and "<h3>Seed 001</h3>" in head
    assert 'data-summary="provenance"' in head
    record = json.loads((out / "findings.json").read_text())
    assert record["defenses"]["clean_accuracy"]["n"] > 0 and record["defenses"]["detectors"]
    assert record["seed001"]["grid"]["attempts"] > 0 and record["seed001"]["dropout_vote"]["clean"]["n"] > 0
    assert record["provenance"]["device"] == "cpu" and record["provenance"]["advflow"]
    # Where each question's summary sits on a 1400 x 1000 screen, measured by Chromium.
    layout = """<script>window.addEventListener("load", function () { var out = [];
      document.querySelectorAll("#summary ol.summary > li").forEach(function (li) {
        out.push(li.dataset.question + ":" + Math.round(li.getBoundingClientRect().bottom)); });
      document.body.dataset.layout = out.join(" "); });</script>"""
    probe = out / "first_screen.html"
    probe.write_text(page.replace("</body>", layout + "</body>"))
    common = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1400,1000"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()],
                         check=True, capture_output=True, text=True, timeout=180).stdout
    bottoms = dict(item.split(":") for item in re.search(r'data-layout="([^"]*)"', dom).group(1).split())
    assert list(bottoms) == ["q1", "q2", "q3", "q4", "q5"]
    assert all(int(bottom) <= 1000 for bottom in bottoms.values()), bottoms
    shot = out / "first_screen.png"
    subprocess.run([*common, f"--screenshot={shot}", (out / "report.html").resolve().as_uri()], check=True,
                   capture_output=True, timeout=180)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_fits_no_gaussian_process(tmp_path, monkeypatch):
    """Every aggregate the report reads, Q5's subsets included, comes from the aggregate stage: with GP fitting
    made impossible the report is still built, and Q5's subset distances are those of the stage's files."""
    import advflow.information.aggregate

    def no_fit(*args, **kwargs):
        raise AssertionError("the report fitted a Gaussian process")

    monkeypatch.setattr(advflow.information.aggregate, "fit_path", no_fit)
    monkeypatch.setattr(advflow.information.aggregate, "aggregate_frame", no_fit)
    config = {**SYNTHETIC_CONFIG, "report": {"bootstrap_resamples": 20}}
    results = make_synthetic_run(tmp_path, config)
    build_report(results, config, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t", figures_dir=tmp_path / "f")
    rows = [r for r in read_rows(tmp_path / "t" / "q5_transferable.csv") if int(r["inputs"]) >= 2]
    assert rows
    for row in rows:
        subset = read_aggregate(results / "aggregates" / row["measured_on"] / f"{row['set']}.{row['subset']}.csv")
        normal = read_aggregate(results / "aggregates" / row["measured_on"] / f"{NORMAL}.csv")
        assert float(row["oip_distance"]) == pytest.approx(np.mean(np.abs(subset["oip"].mean - normal["oip"].mean)))


def test_a_missing_subset_aggregate_is_an_error_that_names_the_file_and_its_rule(tmp_path):
    results = make_synthetic_run(tmp_path, SYNTHETIC_CONFIG)
    (results / "aggregates" / "deep_conv" / "jsma@good_init.transferable.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"jsma@good_init\.transferable\.csv.*rule aggregate_subsets"):
        build_report(results, SYNTHETIC_CONFIG, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                     figures_dir=tmp_path / "f")


def test_the_palette_keeps_every_set_distinct_and_apart_from_the_baselines_greys():
    from advflow.report.plotting import BASELINE_COLORS, palette

    for n in (1, 3, 9, 10, 14):
        colors = [tuple(round(v, 6) for v in c) for c in palette(n)]
        assert len(colors) == n and len(set(colors)) == n
        assert not set(colors) & {tuple(c) for c in BASELINE_COLORS}
        assert all(max(c) - min(c) > 0.1 for c in colors), "no grey: a set would look like a baseline"


def test_the_ioc_panel_draws_only_the_sets_not_their_controls_or_baselines():
    from matplotlib.figure import Figure

    from advflow.report.plotting import Curve, draw_row

    layers = np.arange(1.0, K + 1)
    path = AggregatedPath(layers, layers / 10, layers / 10, layers / 10, layers, layers / 10, layers / 10, layers / 10)
    curves = [Curve("normal", {"iip": path, "oip": path}, "k"), Curve("fgsm", {"iip": path, "oip": path}, "C0"),
              Curve("fgsm control", {"iip": path, "oip": path}, "C0", ":", band=False, ioc=False)]
    axes = Figure().subplots(1, 3)
    draw_row(axes, curves)
    assert [line.get_label() for line in axes[2].lines] == ["normal", "fgsm"]
    assert [line.get_label() for line in axes[1].lines] == ["normal", "fgsm", "fgsm control"]
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == ["normal", "fgsm", "fgsm control"]


def test_q3_and_q5_draw_one_figure_per_attack_citing_the_papers_figure(tmp_path):
    """As the paper's Figs. 5/8/9 (Q3) and 7/10/11 (Q5): JSMA, FGSM and C&W each get their own figures."""
    attacks = ["fgsm", "jsma", "cw"]
    config = {**SYNTHETIC_CONFIG, "trajectories": {"n": 0}, "report": {"bootstrap_resamples": 20},
              "attack_sets": {"good_init": attacks, "compressed": attacks, "deep_conv": attacks, "vgg_like": attacks}}
    config["models"] = {m: {} for m in ("good_init", "deep_conv", "vgg_like", "compressed")}
    results = make_synthetic_run(tmp_path, config)
    captions = build_report(results, config, out_html=tmp_path / "r.html", tables_dir=tmp_path / "t",
                            figures_dir=tmp_path / "f")
    cited = {"q3_complexity_jsma.png": "Fig. 5", "q3_complexity_fgsm.png": "Fig. 8", "q3_complexity_cw.png": "Fig. 9",
             "q5_transfer_jsma.png": "Fig. 7", "q5_transfer_fgsm.png": "Fig. 10", "q5_transfer_cw.png": "Fig. 11"}
    for name, figure in cited.items():
        assert f"(cf. {figure})" in captions[name], name
        assert name.split("_")[-1].removesuffix(".png") in captions[name]
    assert {f"q5_transferable_{a}.png" for a in attacks} <= set(captions)


def test_report_only_settings_change_the_page_title_and_figure_resolution(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advflow.report.page import title
    from advflow.report.plotting import render

    study = Study.from_config({"dataset": "synthetic", "models": {"good_init": {}}, "report": {"title": "My run",
                                                                                          "dpi": 200}})
    assert title(study) == "My run" and study.dpi == 200
    assert title(Study.from_config({"dataset": "synthetic", "models": {}})).endswith("synthetic")
    figure = plt.figure(figsize=(2, 1))
    sizes = {dpi: int.from_bytes(render(figure, dpi)[16:20], "big") for dpi in (50, 200)}  # the PNG header's width
    plt.close(figure)
    assert sizes == {50: 100, 200: 400}
