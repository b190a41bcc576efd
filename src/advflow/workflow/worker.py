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

**CUDA workers.** A child forked per job creates its own CUDA context (CUDA does not survive a fork), which costs a
GPU job more than its work when the work is a second. So where the GPU is used, a job that declares GPU memory
(``resources: gpu_mem_mb``, :mod:`advflow.workflow.resources`) runs in one of at most ``cuda_workers`` (config key)
persistent *CUDA workers* instead: processes forked from the worker once, which create their CUDA context and load
cuBLAS/cuDNN once (:func:`_warm_cuda`) and then run one job after another in-process (:func:`_runner`). Between jobs a
CUDA worker puts back what a job may change in a process (streams, directory, environment, arguments, import path,
logging handlers, warning filters, signal handlers, thread counts; PyTorch's cached GPU memory and peak statistics),
so each job sees what a fresh child would. A CUDA worker retires after a job that failed or after
:data:`RUNNER_JOBS` jobs; when every one is busy and there are ``cuda_workers`` of them, a job forks a child as
before. The environment variable ``ADVFLOW_WORKER_REUSE=all`` makes every job eligible, on any machine: how the
tests and ``benchmarks/warm_worker.py`` check on a CPU that a reused process gives a fresh one's results.
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
#: Set in a forked child or CUDA worker: the job's start-up so far (seconds, in the job's own process before it
#: delegated).
CHILD_ENV = "ADVFLOW_WORKER_CHILD"
#: Set there too: when the worker's process took the job (``time.time()``); ``advflow.workflow.process_age`` counts
#: from it, since that process is older than the job.
TAKEN_ENV = "ADVFLOW_WORKER_TAKEN"
#: Modules the worker imports before it serves: those of the workflow's many small jobs.
PRELOAD = (
    "torch", "numpy", "scipy.stats", "h5py", "snakemake.iocontainers", "snakemake.logging",
    "advflow.workflow", "advflow.workflow.device", "advflow.config", "advflow.models.architectures", "advflow.models.recipes", "advflow.information.features",
    "advflow.information.stage", "advflow.information.paths", "advflow.information.aggregate", "advflow.attacks.sets", "advflow.attacks.controls",
    "advflow.defenses.stage", "advflow.defenses.magnet", "advflow.defenses.metrics",
)  # fmt: skip
#: Modules a CUDA worker imports once, beyond :data:`PRELOAD`: those of the GPU rules' larger jobs (training with
#: Lightning, attacks with Foolbox, the defense stage's detectors). Imported before its first job, what they set up
#: when imported (Lightning's logging handlers) is part of the process every job finds, as in a forked child.
RUNNER_PRELOAD = (
    "lightning.pytorch", "foolbox", "advflow.models.recipes", "advflow.attacks.sets", "advflow.attacks.profiles",
    "advflow.attacks.controls", "advflow.defenses.stage", "advflow.defenses.adaptive_stage", "advflow.defenses.vote",
    "advflow.perturbations.grid",
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
#: A CUDA worker retires (and a later job starts a fresh one) after this many jobs: bounds what a job may leave
#: behind in a process (memory the allocator keeps, caches of imported modules).
RUNNER_JOBS = 64
#: ``all``: every job may run in a reused process (:data:`REUSE_ENV`, for tests and the benchmark); otherwise only
#: jobs that declare GPU memory, where the worker finds CUDA.
REUSE_ENV = "ADVFLOW_WORKER_REUSE"
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
                          "argv": sys.argv, "python": sys.executable, "gpu": _declares_gpu()}).encode()
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


def _declares_gpu() -> bool:
    """Whether this job's rule declares GPU memory (``resources: gpu_mem_mb`` above 0): the job Snakemake's
    preamble describes in ``__main__`` (the script's ``snakemake`` object)."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    try:
        return float(job.resources.get("gpu_mem_mb", 0) or 0) > 0
    except (AttributeError, TypeError, ValueError):
        return False


# --- the worker's side ------------------------------------------------------------------------------------------


def _become_job(request: dict, fds: list[int]) -> None:
    """Take on the job's signals, streams (``fds``: its stdin, stdout, stderr), directory, environment and
    arguments."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])


def _run_script(script: str) -> int:
    """Run the job's script as ``__main__``; its exit status, as the interpreter would give it."""
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as exit_:
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - as the interpreter does for an uncaught error (or Ctrl-C): report, fail
        import traceback

        traceback.print_exc()
        return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the job's streams closed: nothing left to write to
            pass


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job (streams, directory, environment, signals) and run its script."""
    code = 1
    try:
        taken = time.time()
        _become_job(request, fds)
        os.environ[CHILD_ENV] = repr(float(request["startup"]))
        os.environ[TAKEN_ENV] = repr(taken)
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        if threads != "1" and threads.isdigit():  # the worker's BLAS and OpenMP pools were set up for one thread
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(threads))
        code = _run_script(request["script"])
        _log_usage("warm worker child: %.1f s CPU, peak memory %.0f MiB")
    finally:
        _flush()
        os._exit(code)


def _log_usage(line: str, cpu_before: float = 0.0) -> None:
    """The job's CPU time and its process's peak memory (``line`` formats the two), and its peak GPU memory:
    Snakemake's benchmark files measure the job's own (waiting) process."""
    import logging
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    logging.getLogger("advflow").info(line, usage.ru_utime + usage.ru_stime - cpu_before, usage.ru_maxrss / 1024)
    if "torch" in sys.modules:
        from advflow.workflow.device import log_gpu_peak

        log_gpu_peak()


# --- a CUDA worker: one process that runs many jobs, one after another -------------------------------------------


def _probe_cuda() -> bool:
    """Whether CUDA is usable here, asked in a forked child: a CUDA call in the worker itself would break CUDA in
    every child it forks later."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import torch

            code = 0 if torch.cuda.is_available() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _warm_cuda() -> None:
    """Create the CUDA context and load cuBLAS and cuDNN (a matrix product, a convolution and its gradient), once
    per CUDA worker instead of once per job."""
    import torch

    if not torch.cuda.is_available():
        return
    x = torch.ones(4, 1, 8, 8, device="cuda", requires_grad=True)
    kernel = torch.ones(2, 1, 3, 3, device="cuda")
    (torch.nn.functional.conv2d(x, kernel).sum() + (x.flatten(1) @ x.flatten(1).T).sum()).backward()
    torch.cuda.synchronize()


def _loggers() -> list:
    import logging

    return [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                   if isinstance(lg, logging.Logger))]


class _Fresh:
    """The process-wide state of PyTorch, NumPy and ``random`` that a job may change (random streams, grad mode,
    default dtype, thread count, cuDNN and TF32 flags, deterministic algorithms, matmul precision), as a CUDA worker
    has it before its first job: :meth:`apply` sets it again before each job, as a fresh child would find it."""

    def __init__(self) -> None:
        import random

        import numpy as np
        import torch

        self.random, self.numpy, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.grad, self.dtype, self.threads = torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads()
        self.flags = [(owner, name, getattr(owner, name)) for owner, name in self._flag_owners()]
        self.deterministic = (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled())
        self.precision = torch.get_float32_matmul_precision()

    @staticmethod
    def _flag_owners() -> tuple:
        import torch

        return ((torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic"),
                (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32"))

    def apply(self) -> None:
        import random

        import numpy as np
        import torch

        random.setstate(self.random)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        torch.set_grad_enabled(self.grad)
        torch.set_default_dtype(self.dtype)
        torch.set_num_threads(self.threads)
        for owner, name, value in self.flags:
            setattr(owner, name, value)
        torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        torch.set_float32_matmul_precision(self.precision)


class _Kept:
    """What a job changes in its process's Python state (streams and their descriptors, directory, environment,
    arguments, import path, signal handlers, logging handlers and levels), as it was before the job:
    :meth:`restore` puts it back after the job."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.fds = [os.dup(fd) for fd in (0, 1, 2)]
        self.streams = (sys.stdin, sys.stdout, sys.stderr)
        self.cwd, self.env, self.argv, self.path = os.getcwd(), dict(os.environ), list(sys.argv), list(sys.path)
        self.signals = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        self.loggers = {id(lg): (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in _loggers()}

    def restore(self) -> None:
        import logging

        _flush()
        kept_streams = {id(stream) for stream in (*self.streams, sys.__stdout__, sys.__stderr__)}
        for lg in _loggers():  # close the job's handlers (its log file, its console) and put back the others
            handlers, level, propagate, disabled = self.loggers.get(id(lg), ([], logging.NOTSET, True, False))
            for handler in [h for h in lg.handlers if h not in handlers]:
                handler.close()
                stream = getattr(handler, "stream", None)
                if stream is not None and id(stream) not in kept_streams:
                    try:
                        stream.close()
                    except (OSError, ValueError):
                        pass
            lg.handlers[:] = handlers
            if id(lg) in self.loggers:
                lg.setLevel(level)
                lg.propagate, lg.disabled = propagate, disabled
        for stream in (sys.stdout, sys.stderr):  # the job's log file, where start() opened one
            if id(stream) not in kept_streams:
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
        sys.stdin, sys.stdout, sys.stderr = self.streams
        for target, fd in zip((0, 1, 2), self.fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.env)
        sys.argv[:] = self.argv
        sys.path[:] = self.path
        for signum, handler in self.signals.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _run_reused(request: dict, fds: list[int], began: float, fresh: _Fresh, label: str) -> int:
    """Run one job in this CUDA worker as :func:`_run_child` runs it in a fresh child, then put the process back as
    it was (:class:`_Kept`; :class:`_Fresh` before the next job)."""
    import warnings

    import torch
    from threadpoolctl import threadpool_limits

    kept = _Kept()
    code = 1
    limits = None
    try:
        fresh.apply()
        if torch.cuda.is_initialized():
            for device in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(device)
        _become_job(request, fds)
        os.environ[CHILD_ENV] = repr(float(request["startup"]))
        os.environ[TAKEN_ENV] = repr(began)
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        limits = threadpool_limits(int(threads) if threads.isdigit() else 1)
        cpu = sum(os.times()[:2])
        with warnings.catch_warnings():
            code = _run_script(request["script"])
            _log_usage(label + ": %.1f s CPU, peak memory %.0f MiB (the process's so far)", cpu)
    finally:
        kept.restore()
        if limits is not None:
            limits.restore_original_limits()
    return code


def _tidy() -> None:
    """After a job (and after its status went out): collect what it left in reference cycles, then hand PyTorch's
    cached GPU memory back to the driver, so that an idle CUDA worker holds its context only."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _runner(channel: socket.socket) -> None:
    """A CUDA worker's life (forked from the worker): warm CUDA up, then run the jobs the worker sends on ``channel``
    one at a time, answering each with ``exit N``; it ends after a failed job, after :data:`RUNNER_JOBS` jobs,
    or when the worker is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the worker: a Ctrl-C stops the jobs, not the idle process
    try:
        _preload(RUNNER_PRELOAD)
        _warm_cuda()
        fresh = _Fresh()
        # What is imported stays for the process's life: out of the collector's sight, a collection after a job
        # looks at what that job made only (0.2 s less per job with Lightning and Foolbox imported).
        import gc

        gc.collect()
        gc.freeze()
        for served in range(1, RUNNER_JOBS + 1):
            header, fds, _flags, _addr = socket.recv_fds(channel, _HEADER.size, 3)
            if not header:  # the worker is gone
                break
            request = json.loads(_recv_exact(channel, _HEADER.unpack(header)[0]))
            code = _run_reused(request, fds, time.time(), fresh,
                               f"warm worker's CUDA worker {os.getpid()}, job {served}")
            channel.sendall(f"exit {code}\n".encode())
            if code != 0:  # a failed job may have left the process (or its CUDA context) in a bad state
                break
            _tidy()
    except BaseException:  # noqa: BLE001 - the worker reports the job as failed when this process ends
        import traceback

        traceback.print_exc()
    finally:
        _flush()
        os._exit(0)


class _Runner:
    """The worker's record of one CUDA worker: its process, its end of the channel, the job's connection while it
    runs one."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid, self.channel = pid, channel
        self.conn: socket.socket | None = None
        self.open, self.freed, self.served = True, time.monotonic(), 0


def _preload(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # a module that cannot be imported is imported by the job itself
            print(f"advflow worker: not preloaded {name}: {error}", file=sys.stderr)


def serve(path: str, parent: int, idle: float = IDLE_SECONDS, cuda_workers: int = 0) -> None:
    """Import :data:`PRELOAD`, then fork a child per request on the Unix socket ``path`` (or hand the job to one of
    at most ``cuda_workers`` CUDA workers: see the module's docstring) until ``parent`` (the Snakemake process) is
    gone, SIGTERM arrives, or ``idle`` seconds pass without a job."""
    import warnings

    began = time.time()
    for key in THREAD_ENV:
        os.environ[key] = "1"
    _preload(PRELOAD)
    # Python 3.12+ warns of a fork while threads run (OpenBLAS' idle pool, which its own fork handler resets).
    warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
    environment = {key: os.environ.get(key) for key in IMPORT_TIME_ENV}
    reuse_all = os.environ.get(REUSE_ENV) == "all"
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
    print(f"advflow worker: ready after {time.time() - began:.1f} s, pid {os.getpid()}, socket {path}"
          + (f", up to {cuda_workers} CUDA worker(s)" + (" for every job" if reuse_all else "") if cuda_workers else ""),
          file=sys.stderr, flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    runners: dict[int, _Runner] = {}
    cuda: list[bool] = []  # whether CUDA is usable, asked once (_probe_cuda) at the first GPU job
    served, reused, last = 0, 0, time.time()

    def reusable(request: dict) -> bool:
        if cuda_workers <= 0:
            return False
        if reuse_all:
            return True
        if not request.get("gpu"):
            return False
        if not cuda:
            cuda.append(_probe_cuda())
            print(f"advflow worker: CUDA {'found' if cuda[0] else 'not found'}: GPU jobs run in "
                  + ("CUDA workers" if cuda[0] else "forked children"), file=sys.stderr, flush=True)
        return cuda[0]

    def fork(target, *args) -> int:
        """A child that closes the worker's sockets (and ``args``' descriptors are its to use) and runs target."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            selector.close()
            listener.close()
            for other in children.values():
                other.close()
            for runner in runners.values():
                runner.channel.close()
                if runner.conn is not None:
                    runner.conn.close()
            target(*args)
        return pid

    def hand_to_runner(request: dict, fds: list[int], conn: socket.socket) -> _Runner | None:
        # The one that finished last: one after another, jobs go to one process (the others may retire unused).
        idle_runner = max((r for r in runners.values() if r.open and r.conn is None), key=lambda r: r.freed,
                          default=None)
        if idle_runner is None and sum(r.open for r in runners.values()) < cuda_workers:
            ours, theirs = socket.socketpair()

            def start_runner() -> None:
                ours.close()
                conn.close()  # the job's connection is the worker's: a copy here would outlive the worker
                for fd in fds:  # the job's streams are sent to it below: the inherited copies would hold them open
                    os.close(fd)
                _runner(theirs)

            pid = fork(start_runner)
            theirs.close()
            idle_runner = runners[pid] = _Runner(pid, ours)
            selector.register(ours, selectors.EVENT_READ, ("runner", pid))
        if idle_runner is None:
            return None
        payload = json.dumps(request).encode()
        try:
            socket.send_fds(idle_runner.channel, [_HEADER.pack(len(payload))], fds)
            idle_runner.channel.sendall(payload)
        except OSError:
            idle_runner.open = False
            return None
        return idle_runner

    def finish(conn: socket.socket, message: str) -> None:
        try:
            conn.sendall(f"{message}\n".encode())
        except OSError:
            pass
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):  # already unregistered: its job's process closed first
            pass
        conn.close()

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
                runner = hand_to_runner(request, fds, conn) if reusable(request) else None
                if runner is not None:
                    pid = runner.pid
                    runner.conn = conn
                    reused += 1
                else:
                    def start_child() -> None:
                        conn.close()
                        _run_child(request, fds)

                    pid = fork(start_child)
                    children[pid] = conn
                for fd in fds:
                    os.close(fd)
                selector.register(conn, selectors.EVENT_READ, ("job", pid))
                conn.sendall(f"pid {pid}\n".encode())
                served += 1
            elif key.data[0] == "runner":  # a CUDA worker: a job's exit status, or closed (it ended)
                runner = runners[key.data[1]]
                try:
                    data = runner.channel.recv(64)
                except OSError:
                    data = b""
                if data.startswith(b"exit") and runner.conn is not None:
                    status = data.decode().split("\n")[0]
                    finish(runner.conn, status)
                    runner.conn, runner.freed = None, time.monotonic()
                    runner.served += 1
                    if status != "exit 0" or runner.served >= RUNNER_JOBS:  # it retires (_runner): no more jobs
                        runner.open = False
                    last = time.time()
                if not data:
                    selector.unregister(runner.channel)
                    runner.open = False
            else:  # a job's process: a signal to forward, or closed (the job was killed): stop its process
                conn, pid = key.fileobj, key.data[1]
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
        while children or runners:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            message = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else f"exit {os.waitstatus_to_exitcode(status)}")
            if pid in children:
                finish(children.pop(pid), message)
            elif pid in runners:
                runner = runners.pop(pid)
                if runner.conn is not None:  # it ended mid-job: its status (or the one it sent first) is the job's
                    try:
                        runner.channel.setblocking(False)
                        sent = runner.channel.recv(64).decode()
                    except (OSError, UnicodeDecodeError):
                        sent = ""
                    finish(runner.conn, sent.split("\n")[0] if sent.startswith("exit") else
                           message if os.WIFSIGNALED(status) else "exit 1")
                try:
                    selector.unregister(runner.channel)
                except (KeyError, ValueError):
                    pass
                runner.channel.close()
            last = time.time()
        busy = children or any(r.conn is not None for r in runners.values())
        gone = stopping or os.getppid() != parent
        if gone or (not busy and time.time() - last > idle):
            for pid in [*children, *runners]:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            break
    listener.close()
    Path(path).unlink(missing_ok=True)
    print(f"advflow worker: stopped after {served} job(s)"
          + (f", {reused} of them in CUDA workers" if cuda_workers else ""), file=sys.stderr, flush=True)


# --- Snakemake's side -------------------------------------------------------------------------------------------


_LAUNCHED: list[subprocess.Popen] = []


def source_root() -> Path:
    """The folder that holds this ``advflow`` package (``src/`` of a checkout): what the worker puts first on its
    path, so that it imports the same advflow as the jobs."""
    return Path(__file__).resolve().parents[2]


def launch(log: str | os.PathLike, cuda_workers: int = 0, reuse: str | None = None) -> subprocess.Popen:
    """Start the run's worker from Snakemake's process (the Snakefile's ``onstart``; its lines go to ``log``) and
    name its socket in this process's environment, which every job inherits. It does not wait: jobs run in their
    own processes until it is ready. ``cuda_workers``: the config key of that name (see the module's docstring);
    ``reuse``: :data:`REUSE_ENV` for the worker alone (None: as in this process)."""
    directory = tempfile.mkdtemp(prefix="advflow-worker-")  # short: a socket path has at most 107 bytes
    path = os.path.join(directory, "socket")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    source = str(source_root())  # this advflow, installed or not
    code = f"import sys; sys.path.insert(0, {source!r}); from advflow.workflow.worker import serve; serve(sys.argv[1], int(sys.argv[2]), cuda_workers=int(sys.argv[3]))"
    env = os.environ if reuse is None else {**os.environ, REUSE_ENV: reuse}
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, "-c", code, path, str(os.getpid()), str(int(cuda_workers))],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
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

