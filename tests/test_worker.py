"""The warm worker (advflow.workflow.worker): jobs fork from one process that has torch imported, and behave as if they
ran in their own process (exit status, streams, working directory, environment, signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from advflow.workflow import worker

REPO = Path(__file__).resolve().parents[1]

# A job script as Snakemake writes it: its preamble sets __real_file__; the script's first step is start(), which
# delegates. Here the script delegates itself, then writes what the process that runs its body sees.
JOB = textwrap.dedent("""
    import json, os, sys, time
    __real_file__ = __file__
    from advflow.workflow import worker
    status = worker.delegate(__real_file__, 0.25)
    if status is not None:
        os._exit(status)
    from advflow.workflow import process_age
    from threadpoolctl import threadpool_info
    print("body ran in", os.getpid(), flush=True)
    print("on stderr", file=sys.stderr, flush=True)
    with open("seen.json", "w") as fh:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "job_var": os.environ.get("JOB_VAR"),
                   "torch_loaded": "torch" in sys.modules, "age": process_age(), "argv": sys.argv,
                   "pools": sorted({pool["num_threads"] for pool in threadpool_info()})}, fh)
    mode = os.environ.get("JOB_MODE", "")
    if mode == "sleep":
        time.sleep(60)
    if mode == "fail":
        raise RuntimeError("the job's own error")
    sys.exit(int(os.environ.get("JOB_EXIT", "0")))
""")


@pytest.fixture(scope="module")
def running_worker(tmp_path_factory: pytest.TempPathFactory):
    """A worker launched as the Snakefile's onstart does, for this test process; stopped as onsuccess does."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = worker.launch(log)
    path = os.environ[worker.SOCKET_ENV]
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None, log.read_text()
        assert time.time() < deadline, "the worker was not ready within 120 s"
        time.sleep(0.2)
    yield process, path, log
    worker.stop()
    assert process.poll() is not None
    assert not os.path.exists(path)
    assert "stopped after" in log.read_text()


def run_job(tmp_path: Path, path: str | None, python: str = sys.executable, **env: str) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    environ = {**os.environ, **env}  # advflow is installed (pip install -e): the worker has the same PYTHONPATH
    environ.pop(worker.SOCKET_ENV, None)
    if path:
        environ[worker.SOCKET_ENV] = path
    return subprocess.Popen([python, str(script), "an-argument"], cwd=tmp_path, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def seen(tmp_path: Path) -> dict:
    import json

    return json.loads((tmp_path / "seen.json").read_text())


def test_a_job_runs_in_a_child_of_the_worker_with_its_own_directory_environment_and_streams(running_worker, tmp_path):
    process, path, _ = running_worker
    job = run_job(tmp_path, path, JOB_VAR="this job's value")
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    body = seen(tmp_path)
    assert body["ppid"] == process.pid  # forked by the worker, not run in the job's process
    assert body["pid"] != job.pid
    assert body["torch_loaded"]  # imported by the worker before the fork: the job's script never imported it
    assert body["cwd"] == str(tmp_path)
    assert body["job_var"] == "this job's value"
    assert body["argv"][1:] == ["an-argument"]
    assert f"body ran in {body['pid']}" in out  # the child writes to the job's own stdout and stderr
    assert "on stderr" in err
    assert body["age"] >= 0.25  # start-up counts the job process's time before it handed over


@pytest.mark.parametrize("mode, expected", [({"JOB_EXIT": "3"}, 3), ({"JOB_MODE": "fail"}, 1)])
def test_the_job_exits_with_its_childs_status(running_worker, tmp_path, mode, expected):
    job = run_job(tmp_path, running_worker[1], **mode)
    _, err = job.communicate(timeout=120)
    assert job.returncode == expected
    assert seen(tmp_path)["ppid"] == running_worker[0].pid
    if expected == 1:
        assert "RuntimeError: the job's own error" in err  # the traceback reaches the job's stderr (the rule's log)


def wait_for_child(tmp_path: Path, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while not (tmp_path / "seen.json").exists():
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(0.2)
    return seen(tmp_path)["pid"]


def gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_signal_to_the_job_reaches_its_child(running_worker, tmp_path):
    job = run_job(tmp_path, running_worker[1], JOB_MODE="sleep")
    child = wait_for_child(tmp_path)
    job.send_signal(signal.SIGTERM)  # what Snakemake sends a job it cancels
    job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM
    assert gone(child)


def test_a_killed_job_does_not_leave_its_child_running(running_worker, tmp_path):
    job = run_job(tmp_path, running_worker[1], JOB_MODE="sleep")
    child = wait_for_child(tmp_path)
    job.kill()
    job.communicate(timeout=60)
    assert gone(child)


def test_a_job_whose_device_or_hashing_differs_from_the_workers_runs_in_its_own_process(running_worker, tmp_path):
    job = run_job(tmp_path, running_worker[1], PYTHONHASHSEED="7")  # fixed when the interpreter starts
    job.communicate(timeout=120)
    assert job.returncode == 0
    assert seen(tmp_path)["pid"] == job.pid


def another_python(root: Path) -> Path:
    """An interpreter at another path that imports what this one does. In the system Python a link to it will do;
    in a virtual environment the link must sit in a copy of the environment (its pyvenv.cfg beside bin/, its lib/),
    or it starts as the base Python without the environment's packages."""
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.symlink_to(sys.executable)
    if sys.prefix != sys.base_prefix:
        (root / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text())
        (root / "lib").symlink_to(Path(sys.prefix) / "lib", target_is_directory=True)
    return python


def test_another_python_imports_advflow_from_another_path(tmp_path):
    python = another_python(tmp_path / "other")
    out = subprocess.run([str(python), "-c", "import sys, advflow, threadpoolctl; print(sys.executable)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(python) != sys.executable


def test_a_job_run_by_another_python_runs_in_its_own_process(running_worker, tmp_path):
    other = another_python(tmp_path / "other")  # as a rule's conda environment has its own interpreter
    job = run_job(tmp_path, running_worker[1], python=str(other))
    job.communicate(timeout=120)
    assert job.returncode == 0
    assert seen(tmp_path)["pid"] == job.pid


def test_a_job_that_asks_for_more_threads_gets_them_in_the_workers_child(running_worker, tmp_path):
    job = run_job(tmp_path, running_worker[1], OMP_NUM_THREADS="3", OPENBLAS_NUM_THREADS="3", MKL_NUM_THREADS="3")
    job.communicate(timeout=120)
    assert job.returncode == 0
    body = seen(tmp_path)
    assert body["ppid"] == running_worker[0].pid
    assert body["pools"] == [3]  # the worker imported with one thread; the child's BLAS/OpenMP pools use three


def test_without_a_worker_the_job_runs_in_its_own_process(tmp_path):
    job = run_job(tmp_path, str(tmp_path / "no-such-socket"))
    job.communicate(timeout=120)
    assert job.returncode == 0
    body = seen(tmp_path)
    assert body["pid"] == job.pid
    assert not body["torch_loaded"]


def test_the_worker_stops_when_snakemakes_process_is_gone(tmp_path):
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from advflow.workflow import worker; "
            "p = worker.launch(sys.argv[2]); print(p.pid, os.environ[worker.SOCKET_ENV], flush=True)")
    parent = subprocess.run([sys.executable, "-c", code, str(REPO / "src"), str(tmp_path / "w.log")],
                            capture_output=True, text=True, check=True)
    pid, path = parent.stdout.split()
    # its parent exited right away: the worker notices once it is up, and removes its socket
    assert gone(int(pid), timeout=120), (tmp_path / "w.log").read_text()
    assert not os.path.exists(path)


# --- signals and deaths mid-job ---------------------------------------------------------------------------------

# A job whose body (in the worker's child) records the signal it receives and exits with 40 + its number; it says
# where it runs once its handlers are set.
SIGNAL_JOB = textwrap.dedent("""
    import os, signal, sys, time
    __real_file__ = __file__
    from advflow.workflow import worker
    status = worker.delegate(__real_file__, 0.0)
    if status is not None:
        os._exit(status)

    def caught(signum, _frame):
        with open("caught", "w") as fh:
            fh.write(str(signum))
        os._exit(40 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, caught)
    with open("ready.tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace("ready.tmp", "ready")
    time.sleep(120)
""")


def start_signal_job(tmp_path: Path, path: str) -> subprocess.Popen:
    """SIGNAL_JOB delegated to the worker at ``path``. In a session of its own, as a job Snakemake cancels is not
    in the terminal's foreground group: a SIGINT sent to the job alone has not reached its child, so it is
    forwarded (a Ctrl-C to Snakemake's group reaches the child directly)."""
    (tmp_path / "job.py").write_text(SIGNAL_JOB)
    environ = {**os.environ, worker.SOCKET_ENV: path}
    return subprocess.Popen([sys.executable, str(tmp_path / "job.py")], cwd=tmp_path, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def signal_job_child(tmp_path: Path, job: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while not (tmp_path / "ready").exists():
        assert job.poll() is None, job.communicate()
        assert time.time() < deadline, "the job's body did not start"
        time.sleep(0.05)
    child = int((tmp_path / "ready").read_text())
    assert child != job.pid  # the body runs in the worker's child, not in the job's process
    return child


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_each_signal_to_the_job_is_forwarded_to_its_child(running_worker, tmp_path, signum):
    job = start_signal_job(tmp_path, running_worker[1])
    child = signal_job_child(tmp_path, job)
    job.send_signal(signum)
    _, err = job.communicate(timeout=60)
    assert (tmp_path / "caught").exists(), f"the child never received {signum.name}: {job.returncode} {err}"
    assert int((tmp_path / "caught").read_text()) == signum
    assert job.returncode == 40 + signum  # the child's own exit status, passed on by the job's process
    assert gone(child)


def test_a_child_killed_mid_job_makes_the_job_fail(running_worker, tmp_path):
    job = start_signal_job(tmp_path, running_worker[1])
    child = signal_job_child(tmp_path, job)
    os.kill(child, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGKILL  # as a shell reports a job killed by a signal; never 0
    assert not (tmp_path / "caught").exists()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_worker_that_dies_mid_job_makes_the_job_fail_and_stops_its_child(tmp_path, how):
    """A worker of its own (nothing preloaded: it starts at once), killed while a job's child runs: the job's
    process exits non-zero, says why, and leaves no child running."""
    path = str(tmp_path / "socket")
    code = ("import sys; from advflow.workflow import worker; worker.PRELOAD = (); "
            "worker.serve(sys.argv[1], int(sys.argv[2]))")
    server = subprocess.Popen([sys.executable, "-c", code, path, str(os.getpid())], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not os.path.exists(path):
            assert server.poll() is None, server.communicate()
            assert time.time() < deadline, "the worker was not ready within 60 s"
            time.sleep(0.05)
        job = start_signal_job(tmp_path, path)
        child = signal_job_child(tmp_path, job)
        server.send_signal(how)
        server.wait(timeout=30)
        _, err = job.communicate(timeout=60)
        assert job.returncode == 1, err
        assert "the warm worker stopped while job process" in err
        assert gone(child)
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


def test_the_worker_imports_advflow_from_the_folder_that_holds_the_package():
    root = worker.source_root()
    assert (root / "advflow" / "__init__.py").is_file() and root == REPO / "src"
