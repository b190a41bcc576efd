"""profiles/slurm proven on a real Slurm: a one-node cluster started on this machine (slurm_cluster.py).

Run alone with ``pytest -m slurm``. Skipped, with the reason, where Slurm cannot start (not root,
slurm-wlm or munge not installed, or a Slurm already configured on the machine).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_ARGS, planned_jobs, snakemake
from slurm_cluster import PARTITION, OneNodeSlurm, SlurmUnavailable

D = Path("results/synthetic")

#: A chain through the tiny config that passes every kind of per-set job the study runs. On a copy of
#: the finished local run, deep_conv is deleted: Slurm retrains it, rebuilds the ensemble of which it
#: is a member and the seed profiles (the seeds must fool no attacked model), crafts one attack set,
#: and records the features, MI and GP aggregates of a normal and an adversarial set.
TARGETS = [
    D / "aggregates/good_init/normal_train.csv",
    D / "aggregates/good_init/fgsm@good_init.csv",
]
RULES = {"train_model": 1, "ensemble": 1, "select_inputs": 1, "attack": 1, "features": 2, "mi": 2, "aggregate": 2}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        pytest.skip(f"Slurm cannot start on this machine: {err}")
    yield cluster
    cluster.stop()


def test_slurm_profile_maps_the_rules_resources_and_leaves_partition_and_account_to_the_user(repo):
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert {"mem_mb", "runtime"} <= set(profile["default-resources"])
    assert not {"slurm_partition", "slurm_account"} & set(profile["default-resources"])
    assert profile["rerun-incomplete"] is True


@pytest.mark.slow
@pytest.mark.slurm
def test_tiny_config_through_slurm_runs_every_job_as_a_slurm_job_with_the_local_runs_results(
        slurm, tiny_run, tmp_path, repo):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    for suffix in ("pt", "json"):
        (work / D / f"models/deep_conv.{suffix}").unlink()
    assert planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", *map(str, TARGETS), workdir=work)) == RULES

    cpus = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    result = snakemake(
        "--profile", str(repo / "profiles/slurm"), "--configfile", "tiny.yaml", *TINY_ARGS,
        "--max-threads", str(cpus),  # a rule's threads beyond the node's CPUs could not be scheduled
        "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2",
        "--default-resources", f"slurm_partition={PARTITION}", "mem_mb=1000", "runtime=30",
        *map(str, TARGETS), workdir=work)
    assert planned_jobs(result) == RULES

    # Every job ran inside a Slurm job, on this cluster's node, and the controller saw it complete.
    ran = {}
    for log in sorted((work / D / "logs").rglob("*.log")):
        found = re.findall(r"Slurm job (\d+) on (\S+)", log.read_text())
        if found:
            assert len(found) == 1, log
            ran[log.relative_to(work / D / "logs").as_posix()] = found[0]
    assert sorted(ran) == sorted([
        "train/deep_conv.log", "train/ensemble.log", "inputs.log", "attack/good_init/fgsm.log",
        *(f"{stage}/good_init/{s}.log" for stage in ("features", "mi", "aggregate")
          for s in ("normal_train", "fgsm@good_init"))])
    assert len({job for job, _ in ran.values()}) == len(ran)
    for log, (job, node) in ran.items():
        state = slurm.job(job)
        assert node == slurm.node and state.get("JobState") == "COMPLETED", (log, state)
        assert state.get("Partition") == PARTITION

    # ... and the results equal the local run's.
    for name in ("deep_conv", "ensemble"):
        ours = torch.load(work / D / f"models/{name}.pt", weights_only=True)
        local = torch.load(tiny_run / D / f"models/{name}.pt", weights_only=True)
        assert ours["state_dict"].keys() == local["state_dict"].keys()
        for key, value in local["state_dict"].items():
            assert torch.equal(ours["state_dict"][key], value), (name, key)
    for h5 in ["inputs/normal_train.h5", "inputs/normal_test.h5", "adv/good_init/fgsm.h5",
               "features/good_init/normal_train.h5", "features/good_init/fgsm@good_init.h5",
               "mi/good_init/normal_train.h5", "mi/good_init/fgsm@good_init.h5"]:
        _assert_same_h5(work / D / h5, tiny_run / D / h5)
    for table in ["paths/good_init/fgsm@good_init.csv", *(str(t.relative_to(D)) for t in TARGETS)]:
        assert _rows(work / D / table) == _rows(tiny_run / D / table), table


def _assert_same_h5(ours: Path, local: Path) -> None:
    with h5py.File(ours, "r") as a, h5py.File(local, "r") as b:
        names_a, names_b = [], []
        a.visititems(lambda n, o: names_a.append(n) if isinstance(o, h5py.Dataset) else None)
        b.visititems(lambda n, o: names_b.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names_a == names_b, ours
        for name in names_b:
            assert np.array_equal(a[name][()], b[name][()]), (ours, name)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
