"""Shared fixtures: the repository, a runner for Snakemake, and one tiny end-to-end run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def snakemake(*args: str, workdir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow of this repository with ``workdir`` as its working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(dry_run: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    jobs: dict[str, int] = {}
    lines = (dry_run.stdout + dry_run.stderr).splitlines()
    if "Job stats:" not in lines:
        return jobs
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny.yaml run end to end once, in a temporary directory; returns that directory."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    shutil.copy(REPO / "configs" / "tiny.yaml", workdir / "tiny.yaml")
    snakemake("--cores", "2", "--configfile", "tiny.yaml", workdir=workdir)
    return workdir
