"""profiles/slurm proven on a real Slurm: a one-node cluster started on this machine (slurm_cluster.py).

Run alone with ``pytest -m slurm``. Skipped, with the reason, where Slurm cannot start (not root,
slurm-wlm or munge not installed, or a Slurm already configured on the machine).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_ARGS, assert_same_h5, planned_jobs, snakemake
from slurm_cluster import PARTITION, OneNodeSlurm, SlurmUnavailable

D = Path("results/synthetic")

#: Two runs of the tiny config through Slurm, on a copy of the finished local run, between them passing
#: every kind of job the study runs per set and a training job:
#: - a chain whose outputs are deleted: the seed profiles, one attack set, then the features, MI and
#:   paths of a normal and an adversarial set and the GP aggregate of the normal one;
#: - the distillation teacher, deleted and retrained (no job of the chain reads it).
CHAIN = [D / "aggregates/good_init/normal_train.csv", D / "paths/good_init/fgsm@good_init.csv"]
CHAIN_JOBS = {"select_normal_train": 1, "select_inputs": 1, "attack": 1, "features": 2, "mi": 2, "aggregate": 1}
DELETED = ["inputs/normal_train.h5", "inputs/normal_test.h5", "adv/good_init/fgsm.h5",
           *(f"{stage}/good_init/{s}.{ext}" for stage, ext in (("features", "h5"), ("mi", "h5"), ("paths", "csv"))
             for s in ("normal_train", "fgsm@good_init")),
           "aggregates/good_init/normal_train.csv", "models/distilled_teacher.pt", "models/distilled_teacher.json"]
TEACHER = [D / "models/distilled_teacher.pt"]
LOGS = ["inputs.log", "normal_train.log", "attack/good_init/fgsm.log", "train/distilled_teacher.log", "aggregate/good_init/normal_train.log",
        *(f"{stage}/good_init/{s}.log" for stage in ("features", "mi") for s in ("normal_train", "fgsm@good_init"))]
#: The chain's files, compared with the local run's.
CHAIN_H5 = ["inputs/normal_train.h5", "inputs/normal_test.h5", "adv/good_init/fgsm.h5",
            "features/good_init/normal_train.h5", "features/good_init/fgsm@good_init.h5",
            "mi/good_init/normal_train.h5", "mi/good_init/fgsm@good_init.h5"]
CHAIN_TABLES = ["paths/good_init/normal_train.csv", "paths/good_init/fgsm@good_init.csv",
                "aggregates/good_init/normal_train.csv"]


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
    for output in DELETED:
        (work / D / output).unlink()
    assert planned_jobs(snakemake(*map(str, CHAIN), "-n", "--configfile", "tiny.yaml", workdir=work)) == CHAIN_JOBS

    options = [
        "--profile", str(repo / "profiles/slurm"), "--configfile", "tiny.yaml", *TINY_ARGS,
        "--max-threads", str(slurm.cpus),  # a rule's threads beyond the node's CPUs could not be scheduled
        "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
        "--default-resources", f"slurm_partition={PARTITION}", "mem_mb=1000", "runtime=30"]
    # The chain first: its DAG reaches back to the teacher (through the distilled model), so the teacher
    # is retrained after it, and the two runs cannot overlap (Snakemake's directory lock).
    outputs = [snakemake(*map(str, targets), *options, workdir=work) for targets in (CHAIN, TEACHER)]
    assert planned_jobs(outputs[0]) == CHAIN_JOBS
    assert planned_jobs(outputs[1]) == {"train_distillation_teacher": 1}

    # Every job ran inside a Slurm job, on this cluster's node, and the controller saw it complete.
    ran = {}
    for log in sorted((work / D / "logs").rglob("*.log")):
        found = re.findall(r"Slurm job (\d+) on (\S+)", log.read_text())
        if found:
            assert len(found) == 1, log
            ran[log.relative_to(work / D / "logs").as_posix()] = found[0]
    assert sorted(ran) == sorted(LOGS)
    assert len({job for job, _ in ran.values()}) == len(ran)
    for log, (job, node) in ran.items():
        state = slurm.job(job)
        assert node == slurm.node and state.get("JobState") == "COMPLETED", (log, state)
        assert state.get("Partition") == PARTITION

    # ... and the results equal the local run's.
    ours = torch.load(work / D / "models/distilled_teacher.pt", weights_only=True)["state_dict"]
    local = torch.load(tiny_run / D / "models/distilled_teacher.pt", weights_only=True)["state_dict"]
    assert ours.keys() == local.keys() and all(torch.equal(ours[k], local[k]) for k in local)
    for h5 in CHAIN_H5:
        assert_same_h5(work / D / h5, tiny_run / D / h5)
    for table in CHAIN_TABLES:
        assert _rows(work / D / table) == _rows(tiny_run / D / table), table


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
