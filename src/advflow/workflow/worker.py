"""The warm worker: one process per local run that has torch and advflow imported, and forks a child for each job.

Every job of the workflow is a Python script that Snakemake starts as a fresh process. Importing torch takes
1.5-4 s on a CPU machine, as long as the work of many per-set jobs, so most of a run's job time would be start-up.
When the Snakefile's ``onstart`` has started a worker (:func:`launch`, local runs only, config key
``warm_worker``), a job's script sends its request to the worker as its first step (:func:`delegate`, called by
:func:`advflow.workflow.start`), and the worker forks a child that has everything imported already. The child
runs the same script file, with the job's working directory, environment, stdin, stdout and stderr. The job's
process waits for the child's exit status and exits with it, and it forwards SIGINT, SIGTERM and SIGHUP to it.
This is the start-up design of Python's ``multiprocessing`` forkserver, shared by the jobs of one run.

Nothing about a result changes: every job seeds its own random streams from the config, and the worker never runs
an operator, so torch's thread pool and CUDA are first set up in each child, with the job's ``threads``.
Where there is no worker (a dry run, a Slurm run, ``warm_worker: false``, the worker not ready yet or gone), or
the environment differs from the worker's in a variable read when torch is imported, the job runs in its own
process as before. The worker stops when Snakemake's run ends (``onsuccess``/``onerror``), when Snakemake's
process is gone, or after an hour without a job.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The environment variable that names the worker's socket; set by :func:`launch` in Snakemake's process, so
#: that every job it starts (and only those) finds it.
SOCKET_ENV = "ADVFLOW_WORKER_SOCKET"
#: Set in a forked child: the job's start-up so far (seconds, in the job's own process before it delegated).
CHILD_ENV = "ADVFLOW_WORKER_CHILD"
#: Modules the worker imports before it serves: those of the workflow's many small jobs.
PRELOAD = (
    "torch", "numpy", "scipy.stats", "h5py", "snakemake.iocontainers", "snakemake.logging",
    "advflow.workflow", "advflow.workflow.device", "advflow.config", "advflow.models.architectures", "advflow.models.recipes", "advflow.information.features",
    "advflow.information.stage", "advflow.information.paths", "advflow.information.aggregate", "advflow.attacks.sets", "advflow.attacks.controls",
    "advflow.defenses.stage", "advflow.defenses.magnet", "advflow.defenses.metrics",
)  # fmt: skip
#: Variables read when these modules are imported (devices, hashing, paths): a job whose value differs from the
#: worker's runs in its own process.
IMPORT_TIME_ENV = (
    "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "PYTHONPATH", "HDF5_USE_FILE_LOCKING", "PYTORCH_CUDA_ALLOC_CONF",
    "TORCH_HOME",
)  # fmt: skip
#: Thread counts Snakemake sets for each job to its ``threads``. The worker imports with one thread (what the jobs
#: after training ask for); a child whose job asks for more sets its pools at run time (threadpoolctl, and
#: torch.set_num_threads in :func:`advflow.workflow.start`).
THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
IDLE_SECONDS = 3600.0
_HEADER = struct.Struct("!I")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the connection closed mid-message")
        data += chunk
    return data


# --- the job's side ---------------------------------------------------------------------------------------------


def delegate(script: str, startup: float) -> int | None:
    """Run ``script`` (this job's script file, as Snakemake wrote it) in a child of the run's worker and return
    the child's exit status; None where there is no worker to take it (the job then runs in this process)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or CHILD_ENV in os.environ:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:  # not ready yet, or gone: this job runs on its own
        conn.close()
        return None
    request = json.dumps({"script": script, "cwd": os.getcwd(), "env": dict(os.environ), "startup": startup,
                          "argv": sys.argv, "python": sys.executable}).encode()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        reply = conn.makefile("r")
        first = reply.readline().split()
    except OSError:
        conn.close()
        return None
    if first[:1] != ["pid"]:  # "refused": the environment differs from the worker's
        conn.close()
        return None
    child = int(first[1])

    def forward(signum: int, _frame: object) -> None:
        try:  # a Ctrl-C in the terminal has reached the child already: it is in Snakemake's process group too
            if signum == signal.SIGINT and os.getpgid(child) == os.getpgrp():
                return
        except OSError:
            pass
        try:
            conn.sendall(f"{signum}\n".encode())
        except OSError:
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    line = reply.readline().split()
    if line[:1] == ["exit"]:
        return int(line[1])
    if line[:1] == ["signal"]:
        return 128 + int(line[1])
    try:  # the worker is gone without a status: do not leave its child running
        os.kill(child, signal.SIGKILL)
    except OSError:
        pass
    print(f"advflow: the warm worker stopped while job process {child} ran; rerun the workflow "
          "(or set warm_worker: false)", file=sys.stderr)
    return 1


# --- the worker's side ------------------------------------------------------------------------------------------


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job (streams, directory, environment, signals) and run its script."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_ENV] = repr(float(request["startup"]))
        sys.argv = list(request["argv"])
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        if threads != "1" and threads.isdigit():  # the worker's BLAS and OpenMP pools were set up for one thread
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(threads))
        import runpy

        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, (int, type(None))):
                print(exit_.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - as the interpreter does for an uncaught error (or Ctrl-C): report, fail
            import traceback

            traceback.print_exc()
            code = 1
        _log_usage()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # the job's streams closed: nothing left to write to
                pass
        os._exit(code)


def _log_usage() -> None:
    """The child's CPU time and peak memory: Snakemake's benchmark files measure the job's own (waiting) process."""
    import logging
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    logging.getLogger("advflow").info("warm worker child: %.1f s CPU, peak memory %.0f MiB",
                                      usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
    if "torch" in sys.modules:
        from advflow.workflow.device import log_gpu_peak

        log_gpu_peak()


def serve(path: str, parent: int, idle: float = IDLE_SECONDS) -> None:
    """Import :data:`PRELOAD`, then fork a child per request on the Unix socket ``path`` until ``parent`` (the
    Snakemake process) is gone, SIGTERM arrives, or ``idle`` seconds pass without a job."""
    import importlib
    import warnings

    began = time.time()
    for key in THREAD_ENV:
        os.environ[key] = "1"
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as error:  # a module that cannot be imported is imported by the job itself
            print(f"advflow worker: not preloaded {name}: {error}", file=sys.stderr)
    # Python 3.12+ warns of a fork while threads run (OpenBLAS' idle pool, which its own fork handler resets).
    warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
    environment = {key: os.environ.get(key) for key in IMPORT_TIME_ENV}
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # The worker and its children stay in Snakemake's process group, as the jobs' own processes would be: a Ctrl-C
    # reaches each child (the worker ignores it), and killing the group stops the worker and every job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.binding"
    listener.bind(partial)
    listener.listen(64)
    os.replace(partial, path)  # the socket appears only when the worker is ready
    print(f"advflow worker: ready after {time.time() - began:.1f} s, pid {os.getpid()}, socket {path}",
          file=sys.stderr, flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    served, last = 0, time.time()
    while True:
        for key, _ in selector.select(timeout=0.1):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
                    request = json.loads(_recv_exact(conn, _HEADER.unpack(header)[0]))
                except (OSError, ValueError, ConnectionError, struct.error):
                    conn.close()
                    continue
                if (len(fds) != 3 or request.get("python") != sys.executable  # e.g. a job in a conda env
                        or any(request["env"].get(k) != v for k, v in environment.items())):
                    for fd in fds:
                        os.close(fd)
                    conn.sendall(b"refused\n")
                    conn.close()
                    continue
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    for other in children.values():
                        other.close()
                    conn.close()
                    _run_child(request, fds)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                selector.register(conn, selectors.EVENT_READ, pid)
                conn.sendall(f"pid {pid}\n".encode())
                served += 1
            else:  # a job's process: a signal to forward, or closed (the job was killed): stop its child
                conn, pid = key.fileobj, key.data
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                signals = [int(s) for s in data.split()] if data else [signal.SIGKILL]
                if not data:
                    selector.unregister(conn)
                for signum in signals:
                    try:
                        os.kill(pid, signum)
                    except OSError:
                        pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid)
            message = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else f"exit {os.waitstatus_to_exitcode(status)}")
            try:
                conn.sendall(f"{message}\n".encode())
            except OSError:
                pass
            try:
                selector.unregister(conn)
            except (KeyError, ValueError):  # already unregistered: its job's process closed first
                pass
            conn.close()
            last = time.time()
        gone = stopping or os.getppid() != parent
        if gone or (not children and time.time() - last > idle):
            for pid in children:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            break
    listener.close()
    Path(path).unlink(missing_ok=True)
    print(f"advflow worker: stopped after {served} job(s)", file=sys.stderr, flush=True)


# --- Snakemake's side -------------------------------------------------------------------------------------------


_LAUNCHED: list[subprocess.Popen] = []


def source_root() -> Path:
    """The folder that holds this ``advflow`` package (``src/`` of a checkout): what the worker puts first on its
    path, so that it imports the same advflow as the jobs."""
    return Path(__file__).resolve().parents[2]


def launch(log: str | os.PathLike) -> subprocess.Popen:
    """Start the run's worker from Snakemake's process (the Snakefile's ``onstart``; its lines go to ``log``) and
    name its socket in this process's environment, which every job inherits. It does not wait: jobs run in their
    own processes until it is ready."""
    directory = tempfile.mkdtemp(prefix="advflow-worker-")  # short: a socket path has at most 107 bytes
    path = os.path.join(directory, "socket")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    source = str(source_root())  # this advflow, installed or not
    code = f"import sys; sys.path.insert(0, {source!r}); from advflow.workflow.worker import serve; serve(sys.argv[1], int(sys.argv[2]))"
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, "-c", code, path, str(os.getpid())],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    os.environ[SOCKET_ENV] = path
    _LAUNCHED.append(process)
    return process


def stop(timeout: float = 10.0) -> None:
    """Stop the worker :func:`launch` started (the Snakefile's ``onsuccess``/``onerror``) and remove its socket."""
    path = os.environ.pop(SOCKET_ENV, None)
    while _LAUNCHED:
        process = _LAUNCHED.pop()
        if process.poll() is not None:
            continue
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    if path:
        Path(path).unlink(missing_ok=True)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass

