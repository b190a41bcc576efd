"""The workflow as a user runs it: dry run of the default config, the tiny config end to end,
minimal reruns after a changed setting, and Snakemake's linter."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from advflow.workflow.catalog import MODELS
from advflow.data import load_prepared
from advflow.models.architectures import count_parameters, load_checkpoint
from advflow.models.training import soft_labels
from conftest import REPO, planned_jobs, snakemake


def test_dry_run_of_the_default_config_plans_every_stage(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "config.yaml"), workdir=tmp_path)
    # The default config adds seed 003's PGD and EAD on good_init to the tiny config's matrix: 3 more
    # attack sets and controls, 6 more measurements.
    assert planned_jobs(result) == {
        "prepare_data": 1, "train_model": 3, "train_distillation_teacher": 1, "distill": 1, "compress": 1,
        "ensemble": 1, "select_normal_train": 1, "select_inputs": 1, "attack": 22, "control": 19, "jsma_trajectories": 1,
        "trajectory_control": 1, "attack_tables": 1, "features": MEASUREMENTS + 6, "mi": MEASUREMENTS + 6,
        "aggregate": AGGREGATES + 6, "aggregate_subsets": SUBSETS, "report": 1, "all": 1,
        # The defense stage: 47 sweep sets (PGD, BIM at 10 ε; C&W, EAD-L1, EAD-EN at 9 κ), each scored, and the
        # validation and clean images and the study's 8 sets on good_init scored; 3 detectors fitted on clean images.
        "defense_inputs": 1, "train_autoencoder": 2, "fit_mid": 1, "fit_detector": 3, "defense_attack": 47,
        "defense_scores": 49 + 8,
        "defense_tables": 1,
        # The adaptive attacks: 9 targets (undefended, the defense, 7 judged detectors) x 7 sets (PGD at 3 ε and
        # C&W at 2 κ, each attack again longer at its largest budget), and their tables.
        "adaptive_attack": 63, "adaptive_tables": 1,
        # Seed 001: one job each for the statistics of every set, the grid and the dropout vote.
        "perturbation_stats": 1, "average_grid": 1, "dropout_vote": 1,
    }


@pytest.mark.slow
def test_tiny_config_trains_all_six_models_end_to_end(tiny_run):
    models = tiny_run / "results" / "synthetic" / "models"
    for name in MODELS:
        record = json.loads((models / f"{name}.json").read_text())
        model = load_checkpoint(models / f"{name}.pt")  # weights_only=True inside
        assert record["model"] == name and record["seed"] == 0
        assert record["parameters"] == count_parameters(model)
        assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_size"] == 200
        assert record["architecture"] == model.arch
        assert {"epochs", "batch_size", "lr"} <= set(record["settings"]) or name == "ensemble"
    for rule in ("train/good_init", "train/compressed", "train/distilled", "train/ensemble"):
        assert (tiny_run / "results" / "synthetic" / "logs" / f"{rule}.log").stat().st_size > 0
        assert (tiny_run / "results" / "synthetic" / "benchmarks" / f"{rule}.tsv").exists()
    assert "epoch 1/10 batch" in (tiny_run / "results/synthetic/logs/train/good_init.log").read_text()


@pytest.mark.slow
def test_training_logs_show_validation_accuracy_and_no_noise(tiny_run):
    """Each epoch's held-out accuracy is in the log; no line twice (Lightning's handler and ours), none of
    Lightning's accelerator lines, tips or Slurm hints."""
    for rule in ("train/good_init", "train/distilled_teacher", "train/distilled"):
        text = (tiny_run / "results" / "synthetic" / "logs" / f"{rule}.log").read_text()
        assert "epoch 10/10 validation accuracy" in text or "epoch 20/20 validation accuracy" in text, rule
        messages = [line.split(": ", 1)[-1] for line in text.splitlines() if line.strip()]
        assert len(messages) == len(set(messages)), rule
        for noise in ("GPU available", "TPU available", "Tip:", "srun", "Trainer.fit` stopped"):
            assert noise not in text, (rule, noise)
    record = json.loads((tiny_run / "results" / "synthetic" / "models" / "good_init.json").read_text())
    assert len(record["history"]["val_accuracy"]) == 10
    for log in ("aggregate/good_init/fgsm@good_init.log", "report.log"):
        text = (tiny_run / "results" / "synthetic" / "logs" / log).read_text()
        assert "Warning" not in text, (log, text[:2000])


@pytest.mark.slow
def test_the_runs_jobs_forked_from_its_warm_worker_and_it_stopped(tiny_run):
    """The tiny run's jobs after training ran as children of the run's warm worker (docs/warm-worker.md), and the
    worker stopped with the run and removed its socket."""
    logs = tiny_run / "results" / "synthetic" / "logs"
    for rule in ("mi", "features", "aggregate"):
        texts = [path.read_text() for path in (logs / rule).rglob("*.log")]
        assert texts, rule
        forked = sum("warm worker child:" in text for text in texts)
        assert forked >= len(texts) // 2, (rule, forked, len(texts))  # not those that started while it imported
    worker_log = (tiny_run / ".snakemake" / "log" / "advflow-worker.log").read_text()
    served = [int(line.split("stopped after ")[1].split()[0]) for line in worker_log.splitlines() if "stopped after" in line]
    assert served and served[-1] > 0, worker_log
    socket = worker_log.rsplit("socket ", 1)[1].split()[0]
    assert not Path(socket).exists()


@pytest.mark.slow
def test_compressed_model_is_physically_smaller_than_good_init(tiny_run):
    models = tiny_run / "results" / "synthetic" / "models"
    good_init, compressed = load_checkpoint(models / "good_init.pt"), load_checkpoint(models / "compressed.pt")
    record = json.loads((models / "compressed.json").read_text())
    assert count_parameters(compressed) < count_parameters(good_init)
    assert count_parameters(compressed) <= record["target_parameters"]
    assert sum(b.conv.out_channels for b in compressed.blocks) < sum(b.conv.out_channels for b in good_init.blocks)
    assert (models / "compressed_trimming.csv").read_text().startswith("round,parameters_before")


@pytest.mark.slow
def test_distilled_models_soft_labels_come_from_the_teacher_at_T40(tiny_run):
    models = tiny_run / "results" / "synthetic" / "models"
    teacher = load_checkpoint(models / "distilled_teacher.pt")
    data = load_prepared(tiny_run / "data" / "synthetic.h5")
    with h5py.File(models / "distilled_soft_labels.h5") as h5:
        assert h5.attrs["temperature"] == 40.0
        indices, stored = h5["indices"][:], torch.as_tensor(h5["soft_labels"][:])
    expected = soft_labels(teacher, data.train.images[indices], 40.0, torch.device("cpu"))
    torch.testing.assert_close(stored, expected)
    record = json.loads((models / "distilled.json").read_text())
    assert record["temperature"] == 40.0 and record["architecture"]["blocks"] == teacher.arch["blocks"]


@pytest.mark.slow
def test_tiny_run_is_up_to_date_after_it_finishes(tiny_run):
    assert planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", workdir=tiny_run)) == {}


# Every attack set starts from the same seeds, test images every attacked model classifies correctly,
# so a retrained model reruns the seed selection and the attack stage after it.
# (measuring model, set) pairs of the tiny config's matrix: good_init 27 (2 profiles, its 5 sets and their
# 5 random controls, FGSM/JSMA/C&W of compressed, deep_conv and vgg_like, the trajectories and their
# control), compressed 11, deep_conv 14, vgg_like 14, distilled 6 (each model's own sets with controls).
MEASUREMENTS = 68
AGGREGATES = MEASUREMENTS - 2  # every measured set but the trajectories and their control
# Q5's transferable / non-transferable aggregates: FGSM, JSMA and C&W crafted on each of the three models,
# each measured on the two others.
SUBSETS = 3 * 3 * 2
AGGREGATE_STAGE = {"aggregate": AGGREGATES, "aggregate_subsets": SUBSETS, "report": 1, "all": 1}
# Seed 001's statistics read every set, its dropout vote the sets crafted on the defense classifier (good_init),
# every detector scores those sets too (its 5 study sets), and the defense tables judge them.
SEED001_SETS = {"perturbation_stats": 1, "dropout_vote": 1, "defense_scores": 5, "defense_tables": 1,
                "adaptive_tables": 1}  # the adaptive tables read the vote's scores of the transfer sweeps
ATTACK_STAGE = {"select_inputs": 1, "attack": 19, "control": 16, "jsma_trajectories": 1, "trajectory_control": 1,
                "attack_tables": 1, "features": MEASUREMENTS, "mi": MEASUREMENTS, "aggregate": AGGREGATES,
                "aggregate_subsets": SUBSETS, "report": 1, "all": 1, **SEED001_SETS}
MEASURING_MODELS = 5  # good_init, compressed, deep_conv, vgg_like, distilled: each measures normal_train


def retrained(models: int) -> dict[str, int]:
    """The attack stage after retraining ``models`` of the measuring models: the seeds (which every attacked model
    must classify correctly) and all that follows them, but normal_train (a job of its own that no model enters)
    is re-measured on the retrained models only."""
    kept = MEASURING_MODELS - models
    return {**ATTACK_STAGE, "features": MEASUREMENTS - kept, "mi": MEASUREMENTS - kept,
            "aggregate": AGGREGATES - kept}


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    (lambda c: c["models"]["deep_conv"].update(epochs=5), {"train_model": 1, "ensemble": 1, **retrained(1)}),
    (lambda c: c["models"]["distilled"].update(epochs=5), {"distill": 1, **retrained(1)}),
    (lambda c: c["models"]["distilled"].update(teacher_epochs=5),
     {"train_distillation_teacher": 1, "distill": 1, **retrained(1)}),
    # The temperature retrains the teacher and the student; normal_train is not redrawn nor re-measured on the
    # four other models (it used to come out of the seeds' job).
    (lambda c: c["models"]["distilled"].update(temperature=20),
     {"train_distillation_teacher": 1, "distill": 1, **retrained(1)}),
    # good_init is also the defense stage's classifier and seed 001's grid model: its seeds, attacks, MID, the
    # clean-fitted detectors, scores (its study sets' too), the adaptive attacks and the grid follow (not the
    # autoencoders: data alone).
    (lambda c: c["models"]["good_init"].update(lr=0.01),
     {"train_model": 1, "compress": 1, "ensemble": 1, **retrained(2), "defense_inputs": 1, "defense_attack": 10,
      "fit_mid": 1, "fit_detector": 3, "defense_scores": 12 + 5, "defense_tables": 1, "average_grid": 1,
      "adaptive_attack": 16}),
    (lambda c: c["models"]["compressed"].update(step=0.2), {"compress": 1, **retrained(1)}),
    # An attack's setting reruns that attack's sets (one per target), their controls, the tables and the
    # sets' measurements (FGSM: 4 on good_init's set, 2 on compressed's, 3 each on deep_conv's and
    # vgg_like's, 4 controls on their targets; the ensemble's set is not measured), nothing upstream.
    (lambda c: c["attacks"].update(fgsm={"epsilon": 0.05}),
     {"attack": 5, "control": 4, "attack_tables": 1, "features": 16, "mi": 16, "aggregate": 16,
      "aggregate_subsets": 6, "report": 1, "all": 1, **SEED001_SETS, "defense_scores": 1}),  # its study set
    (lambda c: c["attacks"]["jsma"].update(theta=0.5),
     {"attack": 5, "control": 4, "jsma_trajectories": 1, "trajectory_control": 1, "attack_tables": 1,
      "features": 18, "mi": 18, "aggregate": 16, "aggregate_subsets": 6, "report": 1, "all": 1, **SEED001_SETS,
      "defense_scores": 1}),
    # (distilled's sets: seed 001's statistics, not the dropout vote of good_init)
    (lambda c: c["attacks"]["jsma_adaptive"].update(gamma=0.3),
     {"attack": 2, "control": 2, "attack_tables": 1, "features": 4, "mi": 4, "aggregate": 4, "report": 1,
      "all": 1, "perturbation_stats": 1}),
    (lambda c: c["inputs"].update(n=5), {"select_normal_train": 1, **ATTACK_STAGE}),
    # B reruns the MI stage and what follows; the storage precision the features and what follows;
    # the GP settings the aggregates only.
    (lambda c: c.update(mi={"buckets": 4}), {"mi": MEASUREMENTS, **AGGREGATE_STAGE}),
    (lambda c: c.update(features={"dtype": "float32"}),
     {"features": MEASUREMENTS, "mi": MEASUREMENTS, **AGGREGATE_STAGE}),
    (lambda c: c.update(aggregate={"grid_step": 0.1}), AGGREGATE_STAGE),
    # A report-only setting re-renders the report and nothing else; the resamples also set the defense tables'
    # AUC intervals.
    (lambda c: c.update(report={"dpi": 80}), {"report": 1, "all": 1}),
    (lambda c: c.update(report={"bootstrap_resamples": 200}), {"defense_tables": 1, "report": 1, "all": 1}),
    # Batch sizes change no result and rerun nothing; nor do the features' lossless compression filter and level.
    (lambda c: c.update(features={"batch_size": 7}, mi={"batch_size": 3}), {}),
    (lambda c: c.update(features={"compression_level": 9}), {}),
    (lambda c: c.update(features={"compression": "lzf"}), {}),
])
def test_changing_one_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, expected):
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    for name in config["models"]:
        config["models"][name] = config["models"][name] or {}
    change(config)
    changed = tiny_run / f"changed-{tmp_path.name}.yaml"
    changed.write_text(yaml.safe_dump(config))  # sorted keys: order must not matter
    assert planned_jobs(snakemake("-n", "--configfile", changed.name, workdir=tiny_run)) == expected


@pytest.mark.slow
def test_changing_mi_bias_correction_reruns_the_mi_stage_and_what_follows_and_nothing_upstream(tiny_run, tmp_path):
    from advflow.config import config_errors, load_schema

    default = yaml.safe_load((REPO / "config.yaml").read_text())
    assert default["mi"]["bias_correction"] is False  # the paper's estimator
    assert config_errors(default, load_schema(REPO / "schemas" / "config.schema.yaml")) == []
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    for name in config["models"]:
        config["models"][name] = config["models"][name] or {}
    config.setdefault("mi", {})["bias_correction"] = True
    changed = tiny_run / f"changed-{tmp_path.name}.yaml"
    changed.write_text(yaml.safe_dump(config))
    assert planned_jobs(snakemake("-n", "--configfile", changed.name, workdir=tiny_run)) == {
        "mi": MEASUREMENTS, **AGGREGATE_STAGE}


def test_code_digest_follows_the_library_modules_a_script_imports_but_not_comments(tmp_path):
    from advflow.workflow.digests import code_digest, code_modules

    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "sub" / "__init__.py").write_text("from .inner import f\n")
    (lib / "sub" / "inner.py").write_text("def f():\n    return 1\n")
    (lib / "lazy.py").write_text("X = 1\n")
    (lib / "unused.py").write_text("Y = 1\n")
    (lib / "top.py").write_text("from lib.sub import f\n\ndef g():\n    from lib import lazy\n    return lazy.X\n")
    script = tmp_path / "script.py"
    script.write_text("import numpy\nfrom lib.top import g\n")
    assert list(code_modules(script, lib)) == ["lib", "lib.lazy", "lib.sub", "lib.sub.inner", "lib.top"]

    def digest():
        code_digest.cache_clear()
        from advflow.workflow.digests import _read_module
        _read_module.cache_clear()
        return code_digest(script, lib)

    before = digest()
    inner = lib / "sub" / "inner.py"
    inner.write_text('"""Docstring."""\n\n# a comment\ndef f():  # another\n    return 1\n')
    assert digest() == before  # comments, docstrings and formatting: same code
    inner.write_text("def f():\n    return 2\n")
    assert digest() != before  # a module imported two levels down changed
    inner.write_text("def f():\n    return 1\n")
    (lib / "unused.py").write_text("Y = 2\n")
    assert digest() == before  # a module the script never imports


# A library change reruns the rules whose scripts import the changed module, and what depends on
# their outputs; a comment reruns nothing.
@pytest.mark.slow
@pytest.mark.parametrize("module, expected", [
    ("report/q5.py", {"report": 1, "all": 1}),
    ("report/findings.py", {"report": 1, "all": 1}),
    ("information/aggregate.py", AGGREGATE_STAGE),
    # The information-path detector measures MI with the library's code: its fit, every score table (the scoring jobs
    # import every detector module), the defense tables (its per-layer view) and the adaptive attacks (every job
    # imports every detector module) follow; the transfer attacks do not.
    ("information/mi.py", {"mi": MEASUREMENTS, **AGGREGATE_STAGE, "fit_detector": 3, "defense_scores": 17,
                           "defense_tables": 1, "adaptive_attack": 16, "adaptive_tables": 1}),
    ("information/features.py", {"features": MEASUREMENTS, "mi": MEASUREMENTS, **AGGREGATE_STAGE}),
    ("comment-only", {}),
    # A workflow script's comment or modification time reruns nothing (Snakemake's mtime-based "code" trigger is
    # off in profiles/default); a change to what it runs reruns its rule's jobs.
    ("script-comment", {}),
    ("script-touch", {}),
    ("script-code", {"mi": MEASUREMENTS, **AGGREGATE_STAGE}),
])
def test_changing_library_code_reruns_only_the_rules_that_use_it(tiny_run, tmp_path, module, expected):
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "config.yaml", "rules", "workflow_scripts", "schemas", "envs", "report", "profiles",
                 "src"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, copy / part)
    script = copy / "workflow_scripts/mi.py"
    if module == "comment-only":
        with open(copy / "src/advflow/information/mi.py", "a") as fh:
            fh.write("\n# A comment changes no result.\n")
    elif module == "script-comment":
        with open(script, "a") as fh:
            fh.write("# A comment changes no result.\n")
    elif module == "script-touch":
        later = script.stat().st_mtime + 3600
        os.utime(script, (later, later))
    elif module == "script-code":
        with open(script, "a") as fh:
            fh.write("sm.params.buckets  # a statement: the rule's code digest changes\n")
    else:
        with open(copy / "src/advflow" / module, "a") as fh:
            fh.write("\n\ndef _changed():\n    return 1\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(tiny_run), "-n",
           "--configfile", "tiny.yaml"]
    dry = subprocess.run(cmd, capture_output=True, text=True, cwd=tiny_run,
                         env={**os.environ, "PYTHONPATH": str(copy / "src")})
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert planned_jobs(dry) == expected


def test_snakemake_lint_is_clean(tmp_path):
    result = snakemake("--lint", "--configfile", str(REPO / "configs" / "tiny.yaml"), workdir=tmp_path, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out


@pytest.mark.skipif(shutil.which("snakefmt") is None, reason="snakefmt is not installed")
def test_snakefmt_is_clean():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "rules").glob("*.smk")))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_tiny_run_writes_every_adversarial_set_with_its_records_and_tables(tiny_run):
    import csv

    import numpy as np

    from advflow.attacks.sets import summarize

    results = tiny_run / "results" / "synthetic"
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    rows = {(r["target"], r["attack"]): r for r in csv.DictReader(open(results / "tables" / "attacks.csv"))}
    with h5py.File(results / "inputs" / "normal_test.h5") as h5:
        seeds = h5["images"][:]
    for target, attacks in config["attack_sets"].items():
        for attack in attacks:
            path = results / "adv" / target / f"{attack}.h5"
            with h5py.File(path) as h5:
                adv, success = h5["adversarial"][:], h5["success"][:]
                assert adv.shape == seeds.shape and adv.min() >= -1 and adv.max() <= 1
                assert np.array_equal(h5["success"][:], h5["pred_after"][:] != h5["labels"][:])
                assert np.array_equal(h5["pred_before"][:], h5["labels"][:])  # seeds are correct on the target
                assert {"l0", "l1", "l2", "linf"} <= set(h5["norms_r"]) and h5.attrs["attack"] == attack
            expected = summarize(path)
            row = rows[(target, attack)]
            assert float(row["success_rate"]) == pytest.approx(expected["success_rate"])
            assert row["norm"] == expected["norm"] and int(row["attacked"]) == len(success)
    # Beside every attack set but the ensemble's, its random control: the same seeds, and per input the
    # attack's own L-infinity norm (FGSM, IGSM), L0 (JSMA), or L2 (DeepFool, C&W).
    matched = {"fgsm": "linf", "igsm": "linf", "jsma": "l0", "jsma_adaptive": "l0", "jsma_control": "l0",
               "deepfool": "l2", "cw": "l2"}
    controls = 0
    for target, attacks in config["attack_sets"].items():
        for attack in attacks:
            control = results / "adv" / target / f"random_{attack}.h5"
            if target == "ensemble":
                assert not control.exists()
                continue
            with h5py.File(results / "adv" / target / f"{attack}.h5") as a, h5py.File(control) as c:
                norm = matched[attack]
                assert c.attrs["attack"] == f"random_{attack}" and c.attrs["norm"] == norm
                assert np.array_equal(c["indices"][:], a["indices"][:])
                np.testing.assert_allclose(c[f"norms_r/{norm}"][:], a[f"norms_r/{norm}"][:], rtol=1e-5, atol=1e-5)
                assert c["adversarial"][:].min() >= -1 and c["adversarial"][:].max() <= 1
                assert ((target, f"random_{attack}")) in rows
            controls += 1
    assert controls == 16
    transfer = list(csv.DictReader(open(results / "tables" / "transferability.csv")))
    assert {(r["target"], r["measured_on"]) for r in transfer} >= {
        ("good_init", "compressed"), ("compressed", "good_init"), ("deep_conv", "vgg_like"),
        ("ensemble", "good_init"), ("ensemble", "deep_conv"), ("ensemble", "vgg_like")}


@pytest.mark.slow
def test_jsma_trajectory_starts_at_the_seed_and_ends_at_the_adversarial_input(tiny_run):
    from advflow.data import to_model_space

    results = tiny_run / "results" / "synthetic"
    with h5py.File(results / "inputs" / "normal_test.h5") as h5:
        seeds = to_model_space(h5["images"][:].astype("float32"))
    with h5py.File(results / "adv" / "good_init" / "jsma.h5") as h5:
        adversarial = h5["adversarial"][:]
    with h5py.File(results / "trajectories" / "good_init" / "jsma.h5") as h5:
        assert len(h5["steps"]) == 2
        for i in range(2):
            steps = h5["steps"][str(i)][:]
            assert np.allclose(steps[0], seeds[i])
            assert np.allclose(steps[-1], adversarial[i])
            assert len(steps) == h5["iterations"][i] + 1
            changed = (steps[-1] != steps[0]).sum()
            assert changed <= 0.1 * steps[0].size + 1e-9
            assert (np.diff(steps, axis=0) != 0).sum(axis=0).max() <= 1  # each pixel changes at most once
    with h5py.File(results / "trajectories" / "good_init" / "random_jsma.h5") as h5:  # Q1's control
        for i in range(2):
            steps = h5["steps"][str(i)][:]
            assert np.allclose(steps[0], seeds[i]) and (np.diff(steps, axis=0) != 0).reshape(len(steps) - 1, -1).sum(1).max() <= 2


@pytest.mark.slow
def test_tiny_run_measures_every_pair_with_paths_of_every_layer(tiny_run):
    import csv
    import math

    results = tiny_run / "results" / "synthetic"
    paths = sorted((results / "paths").glob("*/*.csv"))
    assert len(paths) == MEASUREMENTS
    assert (results / "paths" / "compressed" / "cw@good_init.csv").exists()  # Q3: measured on both models
    assert (results / "paths" / "vgg_like" / "jsma@deep_conv.csv").exists()  # Q5: measured on all three
    assert (results / "paths" / "good_init" / "random_cw@good_init.csv").exists()  # a control, on its target
    assert not (results / "paths" / "compressed" / "random_cw@good_init.csv").exists()  # ... and only there
    for path in paths:
        rows = list(csv.DictReader(open(path)))
        with h5py.File(results / "features" / path.parent.name / f"{path.stem}.h5") as h5:
            layers, n = json.loads(h5.attrs["layers"]), len(h5["input"])
        assert len(rows) == n * len(layers)
        for row in rows:
            assert -1e-6 <= float(row["mu_s"]) <= math.log(8) and -1e-6 <= float(row["mu_t"]) <= math.log(8)
    trajectory = list(csv.DictReader(open(results / "paths" / "good_init" / "trajectory@good_init.csv")))
    assert {"seed", "step"} <= set(trajectory[0]) and {r["step"] for r in trajectory} >= {"0", "1"}


@pytest.mark.slow
def test_truncated_features_fail_the_mi_rule_naming_the_file_and_the_rerun_rebuilds_them(tiny_run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    features = work / "results/synthetic/features/good_init/fgsm@good_init.h5"
    paths = work / "results/synthetic/paths/good_init/fgsm@good_init.csv"
    expected = paths.read_text()
    size = features.stat().st_size
    with open(features, "r+b") as fh:
        fh.truncate(size // 3)
    paths.unlink()  # the MI step must run again
    failed = snakemake("--cores", "1", "--configfile", "tiny.yaml", workdir=work, check=False)
    assert failed.returncode != 0
    log = (work / "results/synthetic/logs/mi/good_init/fgsm@good_init.log").read_text()
    assert "fgsm@good_init.h5: damaged (features file:" in log and "Run snakemake again" in log
    assert features.with_name("fgsm@good_init.h5.damaged").exists()  # kept for inspection, not deleted
    rerun = snakemake("--cores", "1", "--configfile", "tiny.yaml", workdir=work)
    assert "rule features:" in rerun.stdout + rerun.stderr
    assert paths.read_text() == expected  # rebuilt, equal to the uninterrupted run's


@pytest.mark.slow
def test_snakemake_report_collects_the_figures_and_tables_with_captions(tiny_run, tmp_path):
    import zipfile

    out = tmp_path / "report.zip"
    snakemake("--configfile", "tiny.yaml", "--report", str(out), workdir=tiny_run)
    names = zipfile.ZipFile(out).namelist()
    figures = sorted(p.name for p in (tiny_run / "results/synthetic/figures").glob("*.png"))
    assert figures and all(any(n.endswith(f"/{f}") for n in names) for f in figures)
    assert any(n.endswith("table3_distance_from_normal.csv") for n in names)
    assert any(n.endswith("report.html") and "/data/raw/" in n for n in names)  # ours, beside Snakemake's page


def test_hdf5_locking_can_be_turned_off_from_the_command_line(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "configs" / "tiny.yaml"), "--config", "hdf5_locking=false",
                       workdir=tmp_path)
    assert planned_jobs(result)["report"] == 1
    bad = snakemake("-n", "--configfile", str(REPO / "configs" / "tiny.yaml"), "--config", "hdf5_locking=never",
                    workdir=tmp_path, check=False)
    assert bad.returncode != 0 and "config key 'hdf5_locking' is 'never'" in bad.stdout + bad.stderr


def test_local_profile_shares_the_gpu_by_a_memory_budget_that_each_gpu_rule_declares(tmp_path):
    """profiles/local offers a GPU memory budget instead of one GPU job at a time; every job of a GPU rule asks for
    its declared peak (advflow.workflow.resources), which fits the budget, and CPU-only rules ask for none."""
    from advflow.workflow.resources import GPU_MEMORY_MB

    profile = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
    assert profile["cores"] == "all" and [r for r in profile["resources"] if r.startswith("gpu=")] == []
    budget = int(next(r for r in profile["resources"] if r.startswith("gpu_mem_mb=")).split("=")[1])
    assert max(GPU_MEMORY_MB.values()) * 4 <= budget  # at least four of the largest at once
    result = snakemake("-n", "--profile", str(REPO / "profiles" / "local"), "--configfile",
                       str(REPO / "configs" / "tiny.yaml"), "--config", "device=auto", workdir=tmp_path)
    import re

    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout + result.stderr)
    asked = {}
    for job in jobs:
        rule = re.match(r"(?:local)?rule (\w+):", job)
        memory = re.search(r"gpu_mem_mb=(\d+)", job)
        if rule and rule.group(1) != "all":
            asked.setdefault(rule.group(1), set()).add(int(memory.group(1)) if memory else 0)
    for rule, values in asked.items():
        assert values == {GPU_MEMORY_MB.get(rule, 0)}, (rule, values)
    assert asked["attack"] == {GPU_MEMORY_MB["attack"]} and asked["mi"] == {GPU_MEMORY_MB["mi"]}
    assert asked["attack_tables"] == {0} and asked["control"] == {0}  # CPU-only rules do not wait for the GPU
    on_cpu = snakemake("-n", "--profile", str(REPO / "profiles" / "local"), "--configfile",
                       str(REPO / "configs" / "tiny.yaml"), "--config", "device=cpu", workdir=tmp_path)
    assert not re.search(r"gpu_mem_mb=[1-9]", on_cpu.stdout + on_cpu.stderr)  # the CPU run asks for no GPU memory