"""Shared fixtures: the repository, a runner for Snakemake, and one tiny end-to-end run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import logging

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from advflow.data import to_model_space  # noqa: E402
from advflow.models.architectures import ConvNet, architecture  # noqa: E402
from advflow.models.training import TrainSettings, fit  # noqa: E402


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


def dry_run_with(tiny_run: Path, tmp_path: Path, change) -> dict[str, int]:
    """The jobs a dry run of the finished tiny run plans after ``change(config)`` on its tiny.yaml (written back
    with sorted keys: their order must not matter)."""
    import yaml

    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    for name in config["models"]:
        config["models"][name] = config["models"][name] or {}
    change(config)
    changed = tiny_run / f"changed-{tmp_path.name}.yaml"
    changed.write_text(yaml.safe_dump(config))
    return planned_jobs(snakemake("-n", "--configfile", changed.name, workdir=tiny_run))


#: How the tests run the tiny config: its jobs are small and mostly process start-up, so those that
#: declare several threads get one, and two of them run at once on a 2-core machine. Every run that is
#: compared with the tiny run uses the same threads (float reductions depend on them).
TINY_ARGS = ("--set-threads", "train_model=1", "train_distillation_teacher=1", "distill=1", "compress=1", "ensemble=1",
             "attack=1", "jsma_trajectories=1", "features=1", "mi=1")


def assert_same_h5(ours: Path, reference: Path) -> None:
    """Two HDF5 files hold the same datasets with equal values."""
    import h5py

    def datasets(h5: h5py.File) -> list[str]:
        names: list[str] = []
        h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return names

    with h5py.File(ours, "r") as a, h5py.File(reference, "r") as b:
        assert datasets(a) == datasets(b), ours
        for name in datasets(b):
            assert np.array_equal(a[name][()], b[name][()]), (ours, name)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny.yaml run end to end once, in a temporary directory; returns that directory.
    ADVFLOW_TINY_RUN=DIR reuses (and completes) a run in DIR instead, to iterate on the tests."""
    reuse = os.environ.get("ADVFLOW_TINY_RUN")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny_run")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "configs" / "tiny.yaml", workdir / "tiny.yaml")
    snakemake("--cores", "2", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=workdir)
    return workdir


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tests/test_report.py's synthetic run and its report, built once for every module that reads it."""
    from test_report import build_synthetic_report

    return build_synthetic_report(tmp_path_factory.mktemp("report"))


# ------------------------------------------------------------ a small trained model for attack tests

BLOB_CLASSES = 4
BLOB_SIZE = 12


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 12x12 images of a dark noisy background with one bright 3x3 blob; the class is the
    quadrant of the blob, so increasing pixels elsewhere can move an image to any other class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % BLOB_CLASSES
    images = rng.integers(0, 60, (n, 1, BLOB_SIZE, BLOB_SIZE))
    half = BLOB_SIZE // 2
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        y, x = row * half + rng.integers(0, half - 3), col * half + rng.integers(0, half - 3)
        images[i, 0, y:y + 3, x:x + 3] = rng.integers(180, 256, (3, 3))
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(one_thread) -> nn.Module:
    """deep_conv trained for ~2 s on blobs; classifies every test seed correctly."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    images, labels = blobs(400, seed=0)
    torch.manual_seed(0)
    net = ConvNet(architecture("deep_conv", 1, (BLOB_SIZE, BLOB_SIZE), BLOB_CLASSES))
    fit(net, images, labels, TrainSettings(epochs=3, batch_size=32, lr=3e-3, log_every=1000), seed=0,
        device=torch.device("cpu"))
    return net.eval()


@pytest.fixture(scope="module")
def seeds(model) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = blobs(16, seed=1)
    x = torch.as_tensor(to_model_space(images.astype(np.float32)))
    y = torch.as_tensor(labels)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y), "the fixture model must classify its seeds correctly"
    return x, y
