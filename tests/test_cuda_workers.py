"""CUDA workers (advflow.workflow.worker, docs/warm-worker.md): one process runs many jobs, one after another, and
each job finds the process as a fresh child of the warm worker would be (streams, directory, environment, import
path, logging, random streams, PyTorch's flags), gets its own exit status, signals and start-up figure.

``ADVFLOW_WORKER_REUSE=all`` lets every job into a CUDA worker on this CPU machine: what is checked here is the
reuse itself; tests/test_cuda.py checks the CUDA part where there is a GPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from advflow.workflow import worker
from test_worker import gone

REPO = Path(__file__).resolve().parents[1]

# A job script as Snakemake writes it: the preamble's ``snakemake`` object, then start() (which hands the script to
# the worker, and sends its log to job.log), then the body: what it sees, then what it leaves behind for the next job.
JOB = textwrap.dedent("""
    import json, logging, os, signal, sys, time, types
    __real_file__ = __file__
    snakemake = types.SimpleNamespace(log=["job.log"], threads=int(os.environ.get("JOB_THREADS", "1")),
                                      config={"device": os.environ.get("JOB_DEVICE", "cpu")}, rule="a_rule", wildcards={},
                                      resources={"gpu_mem_mb": int(os.environ.get("JOB_GPU_MB", "0"))})
    from advflow.workflow import ready, start
    start(snakemake)
    import numpy as np, random, torch
    from threadpoolctl import threadpool_info
    logging.getLogger("advflow").info("the line of %s", os.environ["JOB_NAME"])
    print("stdout of", os.environ["JOB_NAME"], flush=True)
    seen = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv[1:],
            "age": ready(), "leftover": os.environ.get("LEFTOVER"), "path": "left-on-the-path" in sys.path,
            "torch": torch.rand(2).tolist(), "numpy": np.random.rand(2).tolist(), "random": random.random(),
            "grad": torch.is_grad_enabled(), "dtype": str(torch.get_default_dtype()), "threads": torch.get_num_threads(),
            "pools": sorted({pool["num_threads"] for pool in threadpool_info()}),
            "benchmark": torch.backends.cudnn.benchmark, "precision": torch.get_float32_matmul_precision(),
            "root": len(logging.getLogger().handlers), "extra": len(logging.getLogger("a.job.logger").handlers),
            "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "cuda": torch.cuda.is_initialized()}
    with open("seen.json", "w") as fh:
        json.dump(seen, fh)
    # What a careless job leaves in its process.
    os.environ["LEFTOVER"] = "yes"
    sys.path.append("left-on-the-path")
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("medium")
    torch.manual_seed(123); np.random.seed(123); random.seed(123)
    logging.getLogger("a.job.logger").addHandler(logging.StreamHandler(sys.stderr))
    mode = os.environ.get("JOB_MODE", "")
    if mode == "sleep":
        time.sleep(float(os.environ.get("JOB_SLEEP", "60")))
    if mode == "fail":
        raise RuntimeError("the job's own error")
    sys.exit(int(os.environ.get("JOB_EXIT", "0")))
""")


def launch(log: Path, cuda_workers: int, reuse: str | None) -> tuple[subprocess.Popen, str]:
    """A worker launched as the Snakefile's onstart does; ``reuse``: ADVFLOW_WORKER_REUSE in its environment."""
    process = worker.launch(log, cuda_workers=cuda_workers, reuse=reuse or "")
    path = os.environ[worker.SOCKET_ENV]
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None, log.read_text()
        assert time.time() < deadline, "the worker was not ready within 120 s"
        time.sleep(0.2)
    return process, path


def stop_only(process: subprocess.Popen) -> None:
    """Stop this worker only (worker.stop() stops every worker this process launched)."""
    worker._LAUNCHED.remove(process)
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def reusing_worker(tmp_path_factory: pytest.TempPathFactory):
    """A worker with at most two CUDA workers that take every job."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process, path = launch(log, cuda_workers=2, reuse="all")
    yield process, path, log
    worker.stop()
    assert process.poll() is not None
    assert "of them in CUDA workers" in log.read_text()


def start_job(folder: Path, path: str, name: str, **env: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.py").write_text(JOB)
    environ = {**os.environ, "JOB_NAME": name, **env}
    environ[worker.SOCKET_ENV] = path
    return subprocess.Popen([sys.executable, "job.py", f"argument-of-{name}"], cwd=folder, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_job(folder: Path, path: str, name: str, **env: str) -> tuple[subprocess.Popen, str, str, dict]:
    job = start_job(folder, path, name, **env)
    out, err = job.communicate(timeout=120)  # returns only when no process holds the job's streams open
    seen = json.loads((folder / "seen.json").read_text()) if (folder / "seen.json").exists() else {}
    return job, out, err, seen


def test_jobs_run_one_after_another_in_one_cuda_worker_each_as_a_fresh_child_would(reusing_worker, tmp_path):
    process, path, _ = reusing_worker
    first = run_job(tmp_path / "first", path, "first")
    time.sleep(2)  # the CUDA worker is now 2 s older than the second job
    second = run_job(tmp_path / "second", path, "second")
    for job, out, err, seen in (first, second):
        assert job.returncode == 0, err
        assert seen["ppid"] == process.pid and seen["pid"] != job.pid
    seen1, seen2 = first[3], second[3]
    assert seen2["pid"] == seen1["pid"]  # the same process ran both
    # Each job has its own directory, arguments, streams and log.
    assert seen2["cwd"] == str(tmp_path / "second") and seen2["argv"] == ["argument-of-second"]
    log1, log2 = ((tmp_path / name / "job.log").read_text() for name in ("first", "second"))
    for line in ("the line of", "stdout of"):  # logging and print, both sent to the job's log by start()
        assert f"{line} first" in log1 and f"{line} second" not in log1
        assert f"{line} second" in log2 and f"{line} first" not in log2
    assert f"warm worker's CUDA worker {seen1['pid']}, job 2:" in log2
    assert "warm worker's CUDA worker" in log1 and "warm worker child" not in log1 + log2
    # What the first job left behind is gone: the second sees what the first saw.
    for key in ("leftover", "path", "torch", "numpy", "random", "grad", "dtype", "threads", "pools", "benchmark",
                "precision", "root", "extra", "sigterm"):
        assert seen2[key] == seen1[key], key
    assert seen1["leftover"] is None and not seen1["path"] and seen1["grad"] and seen1["extra"] == 0
    assert seen1["dtype"] == "torch.float32" and seen1["root"] == 1 and seen1["sigterm"]
    # Start-up counts from when the CUDA worker took the job, not from when that process started.
    assert 0 <= seen2["age"] < 1.5, seen2["age"]


def test_a_job_that_asks_for_more_threads_gets_them_and_the_next_job_gets_one(reusing_worker, tmp_path):
    _, path, _ = reusing_worker
    _, _, err, two = run_job(tmp_path / "two", path, "two", JOB_THREADS="2", OMP_NUM_THREADS="2")
    _, _, _, one = run_job(tmp_path / "one", path, "one")
    assert two["threads"] == 2 and max(two["pools"]) == 2, err
    assert one["pid"] == two["pid"] and one["threads"] == 1 and one["pools"] == [1]


@pytest.mark.parametrize("mode, expected", [({"JOB_EXIT": "3"}, 3), ({"JOB_MODE": "fail"}, 1)])
def test_a_failed_job_gets_its_status_and_retires_its_cuda_worker(reusing_worker, tmp_path, mode, expected):
    _, path, _ = reusing_worker
    _, _, _, before = run_job(tmp_path / "before", path, "before")
    job, _, err, failed = run_job(tmp_path / "failed", path, "failed", **mode)
    assert job.returncode == expected
    assert failed["pid"] == before["pid"]
    if expected == 1:
        assert "RuntimeError: the job's own error" in (tmp_path / "failed" / "job.log").read_text()
    after = run_job(tmp_path / "after", path, "after")
    assert after[0].returncode == 0
    assert after[3]["pid"] != failed["pid"]  # a fresh CUDA worker: the failed job's process is gone
    assert gone(failed["pid"])


def wait_for(path: Path, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    return json.loads(path.read_text())


@pytest.mark.parametrize("how", ["signal", "kill"])
def test_a_job_stopped_mid_run_stops_its_cuda_worker_and_the_next_job_gets_a_fresh_one(reusing_worker, tmp_path, how):
    _, path, _ = reusing_worker
    job = start_job(tmp_path / "stopped", path, "stopped", JOB_MODE="sleep")
    seen = wait_for(tmp_path / "stopped" / "seen.json")
    if how == "signal":  # Snakemake cancelling the job: forwarded to the process that runs it
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=60)
        assert job.returncode == 128 + signal.SIGTERM
    else:  # the job's process killed outright
        job.kill()
        job.communicate(timeout=60)
    assert gone(seen["pid"])
    after = run_job(tmp_path / "after", path, "after")
    assert after[0].returncode == 0 and after[3]["pid"] != seen["pid"]


def test_jobs_beyond_the_cuda_workers_fork_a_child_as_before(reusing_worker, tmp_path):
    process, path, _ = reusing_worker
    jobs = [start_job(tmp_path / f"j{i}", path, f"j{i}", JOB_MODE="sleep", JOB_SLEEP="3") for i in range(3)]
    seen = [wait_for(tmp_path / f"j{i}" / "seen.json") for i in range(3)]
    for job in jobs:
        job.communicate(timeout=120)
        assert job.returncode == 0
    assert len({s["pid"] for s in seen}) == 3 and all(s["ppid"] == process.pid for s in seen)
    logs = [(tmp_path / f"j{i}" / "job.log").read_text() for i in range(3)]
    assert sum("warm worker's CUDA worker" in log for log in logs) == 2  # at most two CUDA workers
    assert sum("warm worker child:" in log for log in logs) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA: tests/test_cuda.py")
def test_without_cuda_a_gpu_job_forks_a_child(tmp_path):
    """Without ADVFLOW_WORKER_REUSE, only a job that declares GPU memory may go to a CUDA worker, and only where
    the worker finds CUDA: here it does not, so every job forks."""
    log = tmp_path / "worker.log"
    process, path = launch(log, cuda_workers=2, reuse=None)
    try:
        results = [run_job(tmp_path / name, path, name, JOB_GPU_MB=mb) for name, mb in (("gpu", "2000"), ("cpu", "0"))]
    finally:
        stop_only(process)
    for job, _, err, seen in results:
        assert job.returncode == 0, err
        assert seen["ppid"] == process.pid
    assert all("warm worker child:" in (tmp_path / name / "job.log").read_text() for name in ("gpu", "cpu"))
    assert "CUDA not found: GPU jobs run in forked children" in log.read_text()


def test_a_jobs_start_up_is_its_processs_age_to_the_clocks_tick(tmp_path):
    """advflow.workflow.process_age in a fresh process is at most the wall time since it was started: psutil's
    create_time adds Linux's boot time in whole seconds, which made every age too long by up to a second."""
    code = "from advflow.workflow import process_age; print(process_age())"
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - began
    assert 0 <= float(out) <= wall + 0.02, (float(out), wall)


@pytest.mark.parametrize("bad", [-1, 1.5, "four", True, float("nan")])
def test_a_bad_cuda_workers_setting_is_refused_with_its_key(bad):
    import yaml

    from advflow.config import ConfigError, check_config

    config = {**yaml.safe_load((REPO / "config.yaml").read_text()), "cuda_workers": bad}
    with pytest.raises(ConfigError, match="cuda_workers"):
        check_config(config, REPO / "schemas" / "config.schema.yaml")


def test_an_idle_cuda_worker_ignores_a_ctrl_c_as_the_worker_does(reusing_worker, tmp_path):
    """A Ctrl-C in the terminal reaches every process of Snakemake's group: it stops the jobs, and an idle CUDA
    worker stays for the next job."""
    _, path, _ = reusing_worker
    _, _, _, first = run_job(tmp_path / "first", path, "first")
    os.kill(first["pid"], signal.SIGINT)
    time.sleep(0.5)
    _, _, _, second = run_job(tmp_path / "second", path, "second")
    assert second["pid"] == first["pid"]


D = Path("results/synthetic")


@pytest.mark.slow
def test_settings_of_the_worker_change_no_result_and_rerun_nothing(tiny_run, tmp_path):
    from conftest import dry_run_with

    assert dry_run_with(tiny_run, tmp_path, lambda c: c.update(cuda_workers=0, warm_worker=False)) == {}
    assert dry_run_with(tiny_run, tmp_path, lambda c: c.update(cuda_workers=16)) == {}


@pytest.mark.slow
def test_a_run_whose_jobs_share_one_cuda_worker_gives_the_tiny_runs_results(tiny_run, tmp_path, monkeypatch):
    """The chain test_slurm.py reruns (seed profiles, an attack, features, MI, paths, a GP aggregate) and the
    distillation (teacher and student trained with Lightning), run on one core with every job let into a CUDA worker:
    all but the first jobs (those that start while the worker imports) run one after another in one process, and give
    the results the tiny run's forked children gave, byte for byte; each log holds its own job's lines only."""
    import shutil

    from conftest import TINY_ARGS, assert_same_h5, planned_jobs, snakemake
    from test_slurm import CHAIN, CHAIN_H5, CHAIN_JOBS, CHAIN_TABLES, DELETED, LOGS, TEACHER

    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    for output in DELETED:
        (work / D / output).unlink()
    monkeypatch.setenv(worker.REUSE_ENV, "all")
    run = snakemake(*map(str, CHAIN + TEACHER), "--cores", "1", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=work)
    assert planned_jobs(run) == {**CHAIN_JOBS, "train_distillation_teacher": 1, "distill": 1}

    ran, began = {}, {}
    for log in [*LOGS, "train/distilled.log"]:
        ours = (work / D / "logs" / log).read_text()  # written again (Snakemake removes a rerun job's log)
        assert len(re.findall(r"advflow INFO: rule \w+: \d+ thread", ours)) == 1, (log, ours[-2000:])  # its own only
        began[log] = ours[:23]  # the first line's time
        found = re.findall(r"warm worker's CUDA worker (\d+), job (\d+):", ours)
        if found:
            ran[log] = found[0]
    # The jobs that started while the worker imported ran in their own processes (1 to 3 of them, as Snakemake
    # ordered them); every job after those ran in the CUDA worker, the distillation's training among them.
    assert "train/distilled.log" in ran and len(ran) >= 4, sorted(ran)
    first = min(began[log] for log in ran)
    assert all(began[log] <= first for log in began if log not in ran), (began, sorted(ran))
    assert len({pid for pid, _ in ran.values()}) == 1  # one process ran them all
    assert sorted(int(job) for _, job in ran.values()) == list(range(1, len(ran) + 1))

    for model in ("distilled_teacher", "distilled"):
        ours = torch.load(work / D / f"models/{model}.pt", weights_only=True)["state_dict"]
        local = torch.load(tiny_run / D / f"models/{model}.pt", weights_only=True)["state_dict"]
        assert ours.keys() == local.keys() and all(torch.equal(ours[k], local[k]) for k in local), model
    for h5 in CHAIN_H5:
        assert_same_h5(work / D / h5, tiny_run / D / h5)
    for table in CHAIN_TABLES:
        assert (work / D / table).read_text() == (tiny_run / D / table).read_text(), table


def test_an_idle_cuda_workers_context_fits_in_what_any_gpu_job_declares():
    """docs/warm-worker.md: an idle CUDA worker holds its context in memory its last job declared and freed, so every
    GPU rule declares more than a context."""
    from advflow.workflow.resources import CONTEXT_MB, GPU_MEMORY_MB

    assert min(GPU_MEMORY_MB.values()) >= 1600 > CONTEXT_MB
