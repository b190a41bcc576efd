"""Recovery from a killed run: temporary outputs, Snakemake's stale locks, and a run SIGKILLed while it
writes an HDF5 output, which the next plain `snakemake` rebuilds to the uninterrupted run's results."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_ARGS, assert_same_h5, planned_jobs, snakemake

from advflow.workflow.digests import release_stale_locks
from advflow.workflow.io import atomic_path

D = Path("results/synthetic")


def test_a_temporary_file_left_by_a_killed_job_is_removed_when_the_output_is_written_again(tmp_path):
    stale = tmp_path / ".out.h5.k1ll3d.tmp"
    stale.write_text("half")
    other = tmp_path / ".other.h5.abc.tmp"  # another output's: not ours to remove
    other.write_text("half")
    with atomic_path(tmp_path / "out.h5") as tmp:
        tmp.write_text("whole")
    assert (tmp_path / "out.h5").read_text() == "whole"
    assert not stale.exists() and other.exists()


HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from advflow.workflow.digests import release_stale_locks
release_stale_locks(sys.argv[2])
print("holding", flush=True)
time.sleep(60)
"""


def test_locks_are_removed_only_when_the_run_that_left_them_is_dead(tmp_path):
    folder = tmp_path / ".snakemake"
    (folder / "locks").mkdir(parents=True)
    lock = folder / "locks" / "0.output.lock"
    # A live run (it holds the shared flock from when it read the Snakefile), then its locks: they stay.
    live = subprocess.Popen([sys.executable, "-c", HOLD, str(REPO / "src"), str(folder)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert live.stdout.readline().strip() == "holding"
        lock.write_text("results/x.h5\n")
        assert release_stale_locks(folder) == [] and lock.exists()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    # Killed (SIGKILL: it cleaned nothing up): its locks are stale and go.
    assert release_stale_locks(folder) == [lock] and not lock.exists()


def test_locks_are_kept_when_a_run_on_another_host_used_the_folder(tmp_path):
    # Some shared filesystems keep a flock on its own host: a run elsewhere cannot be seen, so its
    # locks are never taken for stale.
    folder = tmp_path / ".snakemake"
    (folder / "locks").mkdir(parents=True)
    release_stale_locks(folder, host="login2")  # a run on another host read the Snakefile
    lock = folder / "locks" / "0.output.lock"
    lock.write_text("results/x.h5\n")
    assert release_stale_locks(folder, host="login1") == [] and lock.exists()
    assert release_stale_locks(folder, host="login2") == [] and lock.exists()  # login1 is on record now
    lock.unlink()  # what `snakemake --unlock` does; Snakemake's message says so
    release_stale_locks(folder, host="login1")  # no locks: the record starts again
    assert (folder / "advflow-running").read_text() == "login1\n"
    lock.write_text("results/x.h5\n")
    assert release_stale_locks(folder, host="login1") == [lock] and not lock.exists()


@pytest.mark.slow
def test_a_run_killed_while_writing_hdf5_is_rebuilt_by_the_next_run_to_the_uninterrupted_results(
        tiny_run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    # The features of one set must be written again, and what is measured from them.
    pair = "good_init/trajectory@good_init"
    for stage, suffix in (("features", "h5"), ("mi", "h5"), ("paths", "csv")):
        (work / D / stage / f"{pair}.{suffix}").unlink()
    output = work / D / "features" / f"{pair}.h5"
    pattern = f".{output.name}.*.tmp"

    # Small batches, so the file is written in many steps (batch sizes change no result).
    (work / "batch1.yaml").write_text("features: {batch_size: 1}\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2",
         "--configfile", "tiny.yaml", "batch1.yaml", *TINY_ARGS],
        cwd=work, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline and not partial and run.poll() is None:
        partial = list(output.parent.glob(pattern))
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and the job it runs, mid-write
    run.wait()
    assert partial, "the features file was never seen being written"
    time.sleep(1)
    assert not output.exists()  # the half-written file never appears under the output's name
    assert list(output.parent.glob(pattern)), "the killed job's temporary file should be left behind"
    assert list((work / ".snakemake/incomplete").iterdir()), "Snakemake marks the killed job incomplete"

    rerun = snakemake("--cores", "2", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=work)
    log = rerun.stdout + rerun.stderr
    assert "left by a Snakemake run that was killed" in log  # the stale lock, removed
    assert "rule features:" in log and "wildcards: dataset=synthetic, model=good_init, set=trajectory@good_init" in log
    assert not list(output.parent.glob(pattern))  # cleaned when the output was written again
    assert_same_h5(output, tiny_run / D / "features" / f"{pair}.h5")
    assert_same_h5(work / D / "mi" / f"{pair}.h5", tiny_run / D / "mi" / f"{pair}.h5")
    assert _rows(work / D / "paths" / f"{pair}.csv") == _rows(tiny_run / D / "paths" / f"{pair}.csv")
    # And the workflow is complete again.
    assert planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", workdir=work)) == {}


#: Put first on a job's PYTHONPATH, this makes the job SIGKILL its whole run (Snakemake and every job: a power
#: cut) right after it renames the output whose path ends with ADVFLOW_KILL_AFTER into place. The mi rule writes
#: the MI file, then the paths CSV: killing after the first leaves one of its two outputs written.
KILL_AFTER_RENAME = """
import os, signal
_target = os.environ.get("ADVFLOW_KILL_AFTER")
if _target:
    _replace = os.replace

    def replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if os.fspath(dst).endswith(_target):
            os.killpg(os.getpgid(0), signal.SIGKILL)

    os.replace = replace
"""


def _start(work: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2",
         "--configfile", "tiny.yaml", *TINY_ARGS],
        cwd=work, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_run_killed_at_random_points_then_rerun_plainly_ends_with_the_uninterrupted_results(tiny_run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    # A small workflow to rebuild: two sets measured on good_init (features -> mi -> paths -> aggregate), a
    # set's adversarial file and its control, and what depends on them (the report, the tables).
    rebuilt = []
    for pair in ("good_init/fgsm@good_init", "good_init/normal_test"):
        rebuilt += [work / D / "features" / f"{pair}.h5", work / D / "mi" / f"{pair}.h5",
                    work / D / "paths" / f"{pair}.csv", work / D / "aggregates" / f"{pair}.csv"]
    rebuilt += [work / D / "adv/good_init/igsm.h5", work / D / "adv/good_init/random_igsm.h5"]
    for path in rebuilt:
        path.unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    # Killed (SIGKILL, the whole run) at seeded random moments, each next run starting where the last stopped.
    rng = np.random.default_rng(16)
    for delay in rng.uniform(3.0, 12.0, size=4):  # from Snakemake still starting to jobs half done
        run = _start(work, env)
        try:
            run.wait(timeout=float(delay))
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # And once between the two outputs of an mi job: its MI file renamed into place, its paths CSV not written.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_AFTER_RENAME)
    mi_h5, paths_csv = work / D / "mi/good_init/normal_test.h5", work / D / "paths/good_init/normal_test.csv"
    for path in (mi_h5, paths_csv):  # whatever the random kills left of this job: it runs again
        path.unlink(missing_ok=True)
    run = _start(work, {**env, "PYTHONPATH": f"{hooks}{os.pathsep}{REPO / 'src'}",
                        "ADVFLOW_KILL_AFTER": "mi/good_init/normal_test.h5"})
    assert run.wait(timeout=600) != 0, "the run should have been killed by the mi job"
    assert mi_h5.exists() and not paths_csv.exists(), "killed between the mi job's two outputs"

    # A plain rerun (the workflow profile's rerun-incomplete) rebuilds what the kills left, to the same results.
    snakemake("--cores", "2", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=work)
    for path in rebuilt:
        reference = tiny_run / path.relative_to(work)
        if path.suffix == ".h5":
            assert_same_h5(path, reference)
        else:
            assert path.read_bytes() == reference.read_bytes(), path
    assert paths_csv.read_bytes() == (tiny_run / paths_csv.relative_to(work)).read_bytes()
    for table in ("tables/attacks.csv", "tables/transferability.csv", "findings.json"):
        assert (work / D / table).read_bytes() == (tiny_run / D / table).read_bytes(), table
    assert not list((work / D).rglob("*.tmp")), "no temporary file is left once the outputs are written again"
    assert planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", workdir=work)) == {}


def _cut_at_half_a_row_boundary(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + (len(lines) - 1) // 2]))  # the 91 -> 45 lines: well formed


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.slow
@pytest.mark.parametrize("name, damage, aggregate", [
    ("paths/good_init/fgsm@good_init.csv", _cut_at_half_a_row_boundary, "aggregates/good_init/fgsm@good_init.csv"),
    # IGSM's set: measured on good_init alone (no transfer group attacks with it), so the rebuild stays small
    ("adv/good_init/igsm.h5", _truncate, "aggregates/good_init/igsm@good_init.csv"),
])
def test_a_damaged_file_fails_its_reader_is_moved_aside_and_the_plain_rerun_rebuilds_it(tiny_run, tmp_path, name,
                                                                                          damage, aggregate):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    path = work / D / name
    damage(path)
    damaged = path.read_bytes()
    failed = snakemake("--cores", "2", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=work, check=False)
    assert failed.returncode != 0, "a damaged file must never be used"
    # The first job that reads it says so in its log (several read an adversarial set; which runs first varies).
    said = [log for log in (work / D / "logs").rglob("*.log")
            if f"{D / name}: damaged (" in log.read_text() and "Run snakemake again" in log.read_text()]
    assert said, failed.stderr[-3000:]
    assert path.with_name(path.name + ".damaged").read_bytes() == damaged  # kept for inspection, not deleted
    snakemake("--cores", "2", "--configfile", "tiny.yaml", *TINY_ARGS, workdir=work)
    reference = tiny_run / D / name
    if path.suffix == ".h5":
        assert_same_h5(path, reference)
    else:
        assert path.read_bytes() == reference.read_bytes()
    assert (work / D / aggregate).read_bytes() == (tiny_run / D / aggregate).read_bytes()
    assert planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", workdir=work)) == {}


@pytest.mark.slow
def test_every_intermediate_file_missing_is_rebuilt_by_a_plain_run(tiny_run, tmp_path):
    # Snakemake does not rebuild a file that only feeds outputs already there (a file deleted, moved aside as
    # damaged, or removed when its job failed): every file the workflow writes is a target of rule all.
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    missing = {
        "prepare_data": "data/synthetic.h5",
        "train_model": f"{D}/models/deep_conv.pt",
        "train_distillation_teacher": f"{D}/models/distilled_teacher.pt",
        "distill": f"{D}/models/distilled_soft_labels.h5",
        "compress": f"{D}/models/compressed_trimming.csv",
        "select_normal_train": f"{D}/inputs/normal_train.h5",
        "select_inputs": f"{D}/inputs/normal_test.h5",
        "features": f"{D}/features/vgg_like/cw@vgg_like.h5",
        "mi": f"{D}/mi/deep_conv/fgsm@deep_conv.h5",
        "defense_inputs": f"{D}/defense/inputs/seeds.h5",
        "train_autoencoder": f"{D}/defense/autoencoders/ae_ii.pt",
        "fit_mid": f"{D}/defense/detectors/mid.pt",
        "defense_attack": f"{D}/defense/adv/pgd_eps0.1.h5",
        "defense_scores": f"{D}/defense/scores/clean.csv",
        "adaptive_attack": f"{D}/defense/adaptive/infopath/pgd_eps0.3.h5",
    }
    for rule, name in missing.items():
        assert (work / name).is_file(), f"{name} ({rule}) is not in the tiny run; update this test"
        (work / name).unlink()
    planned = planned_jobs(snakemake("-n", "--configfile", "tiny.yaml", workdir=work))
    assert set(missing) <= set(planned), f"not rebuilt: {sorted(set(missing) - set(planned))}"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
