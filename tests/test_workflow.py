"""The workflow as a user runs it: dry run of the default config, the tiny config end to end,
minimal reruns after a changed setting, and Snakemake's linter."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import yaml

from advflow.catalog import MODELS
from advflow.data import load_prepared
from advflow.models import count_parameters, load_checkpoint
from advflow.training import soft_labels
from conftest import REPO, planned_jobs, snakemake


def test_dry_run_of_the_default_config_plans_data_and_training(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "config.yaml"), workdir=tmp_path)
    assert planned_jobs(result) == {
        "prepare_data": 1, "train_model": 3, "train_distillation_teacher": 1, "distill": 1, "compress": 1,
        "ensemble": 1, "all": 1,
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
ATTACK_STAGE = {"select_inputs": 1, "attack": 22, "jsma_trajectories": 1, "attack_tables": 1, "all": 1}


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    (lambda c: c["models"]["deep_conv"].update(epochs=5), {"train_model": 1, "ensemble": 1, **ATTACK_STAGE}),
    (lambda c: c["models"]["distilled"].update(epochs=5), {"distill": 1, **ATTACK_STAGE}),
    (lambda c: c["models"]["distilled"].update(teacher_epochs=5),
     {"train_distillation_teacher": 1, "distill": 1, **ATTACK_STAGE}),
    (lambda c: c["models"]["good_init"].update(lr=0.01),
     {"train_model": 1, "compress": 1, "ensemble": 1, **ATTACK_STAGE}),
    (lambda c: c["models"]["compressed"].update(step=0.2), {"compress": 1, **ATTACK_STAGE}),
    # An attack's setting reruns that attack's sets (one per target) and the tables, nothing upstream.
    (lambda c: c["attacks"].update(fgsm={"epsilon": 0.05}), {"attack": 5, "attack_tables": 1, "all": 1}),
    (lambda c: c["attacks"]["jsma"].update(theta=0.5),
     {"attack": 5, "jsma_trajectories": 1, "attack_tables": 1, "all": 1}),
    (lambda c: c["attacks"]["jsma_adaptive"].update(gamma=0.3), {"attack": 2, "attack_tables": 1, "all": 1}),
    (lambda c: c["inputs"].update(n=5), ATTACK_STAGE),
])
def test_changing_one_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, expected):
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    for name in config["models"]:
        config["models"][name] = config["models"][name] or {}
    change(config)
    changed = tiny_run / f"changed-{tmp_path.name}.yaml"
    changed.write_text(yaml.safe_dump(config))  # sorted keys: order must not matter
    assert planned_jobs(snakemake("-n", "--configfile", changed.name, workdir=tiny_run)) == expected


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

    from advflow.adversarial import summarize

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
