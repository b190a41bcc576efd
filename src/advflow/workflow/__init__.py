"""What every workflow script does first: send its output to the rule's log (training's progress to Snakemake's
console too), set threads and device."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import warnings
from typing import Any

_IMPORTED = time.time()  # process_age's fallback where the process's start time cannot be read
#: Loggers whose lines a job also writes to Snakemake's console (the job's stderr before :func:`start` sends it to the
#: rule's log): training's progress (advflow.models.training.ProgressLog, also the autoencoders' of the defense stage).
CONSOLE_LOGGERS = ("advflow.models.training",)
#: At most one of those lines per this many seconds reaches the console (all of them reach the rule's log).
CONSOLE_INTERVAL = 10.0
#: The log line :func:`ready` writes, read by ``benchmarks/stage_times.py``.
STARTUP_LINE = "start-up: %.2f s (interpreter, Snakemake's script preamble, imports and set-up before the work)"


def start(snakemake: Any) -> Any:
    """Route stdout/stderr (including C-level output) to ``snakemake.log[0]``, configure logging, keep showing
    training's progress on the job's own stderr (Snakemake's console: :func:`console_progress`), use
    ``snakemake.threads`` threads, and return the torch device of the config's ``device``.

    Where the run has a warm worker (:mod:`advflow.workflow.worker`), this process hands its script to a child of the
    worker, which has torch imported already, and exits with the child's status: the script's lines after this
    call run in the child."""
    script = getattr(sys.modules.get("__main__"), "__real_file__", None)  # the file Snakemake's preamble runs
    if script is not None:
        # By importlib, so that the rules' code digests (advflow.workflow.digests) leave the worker out: how a job is
        # started changes no result, and a change to it reruns nothing.
        worker = importlib.import_module("advflow.workflow.worker")
        status = worker.delegate(script, process_age())
        if status is not None:
            os._exit(status)
    console = None
    if snakemake.log:
        # Snakemake's console (a local run's terminal; a Slurm job's output file), kept for training's progress
        console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        log_file = open(snakemake.log[0], "a", buffering=1)
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        sys.stdout = sys.stderr = log_file
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if console is not None:
        console_progress(console, job_label(snakemake))
    import torch

    from advflow.workflow.device import resolve_device

    # Lightning's info lines (accelerator found, tips, "Trainer.fit stopped") say nothing a user can act on
    # and went to the log twice (its own handler and the root's): keep its warnings, once.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(name).propagate = False
    # GPyTorch's dependency linear_operator calls torch.jit.script when imported (aggregate, report):
    # a deprecation in their code, nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    # Lightning's hints that do not apply to one process on one device: Slurm's srun (printed whenever the
    # srun command exists) and a logging interval longer than a tiny run's epoch.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
    # A deprecation inside Lightning's own code, repeated at every fit; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

    torch.set_num_threads(max(1, int(snakemake.threads)))
    device = resolve_device(snakemake.config.get("device", "auto"))
    if device.type == "cuda":
        # The CUDA context, created here so that the job's start-up (ready()) counts it: a job in a CUDA worker
        # (docs/warm-worker.md) finds it made.
        torch.empty(1, device=device)
        if "ADVFLOW_WORKER_CHILD" not in os.environ:  # the job's peak GPU memory at its end (the worker logs its own)
            import atexit

            from advflow.workflow.device import log_gpu_peak

            atexit.register(log_gpu_peak)
    log = logging.getLogger("advflow")
    log.info("rule %s: %d thread(s), device %s", snakemake.rule, snakemake.threads, device)
    if "SLURM_JOB_ID" in os.environ:  # which cluster job ran this, to find it in sacct/squeue
        log.info("Slurm job %s on %s", os.environ["SLURM_JOB_ID"], os.environ.get("SLURMD_NODENAME", "?"))
    return device


def job_label(snakemake: Any) -> str:
    """The rule and its wildcards but the dataset (one per run): ``train_model model=good_init``."""
    try:
        wildcards = [f"{k}={v}" for k, v in snakemake.wildcards.items() if k != "dataset"]
    except AttributeError:  # no wildcards
        wildcards = []
    return " ".join([str(snakemake.rule), *wildcards])


class _ConsoleFilter(logging.Filter):
    """Passes a record when ``interval`` seconds have passed since the last one it passed (the first always), and
    every record logged with ``extra={"console": True}`` (the end of a training)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval, self.last = interval, -float("inf")

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if getattr(record, "console", False) or now - self.last >= self.interval:
            self.last = now
            return True
        return False


class _ConsoleHandler(logging.StreamHandler):
    """The handler :func:`console_progress` adds (so that a second call replaces it)."""


def console_progress(stream: Any, label: str, interval: float = CONSOLE_INTERVAL) -> logging.Handler:
    """Also write the lines of :data:`CONSOLE_LOGGERS` to ``stream`` (Snakemake's console), as ``advflow LABEL:
    message``, at most one per ``interval`` seconds: a local run then shows each training's epoch, batch, images per
    second and time left while it trains, not only in the rule's log. Replaces an earlier call's handler."""
    handler = _ConsoleHandler(stream)
    handler.setLevel(logging.INFO)
    handler.addFilter(_ConsoleFilter(interval))
    handler.setFormatter(logging.Formatter("advflow " + label.replace("%", "%%") + ": %(message)s"))
    for name in CONSOLE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
    return handler


def process_age() -> float:
    """Seconds since this job's process started; in a warm worker's child or CUDA worker, since that process took the
    job, plus the job's own process's time before it handed over."""
    taken = os.environ.get("ADVFLOW_WORKER_TAKEN")
    age = time.time() - float(taken) if taken else _own_age()
    return age + float(os.environ.get("ADVFLOW_WORKER_CHILD", "0"))


def _own_age() -> float:
    """This process's age from the kernel's clock since boot (``/proc/uptime`` less the process's start in
    ``/proc/self/stat``), to 10 ms. Not psutil's create_time: it adds the boot time, which Linux gives in whole
    seconds, so every age came out too long by the same fraction of a second (0.93 s on one machine). Where there is
    no ``/proc``: since this module was imported."""
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return time.time() - _IMPORTED


def ready() -> float:
    """Log the job's start-up (:data:`STARTUP_LINE`): what it spent before its work began. Every workflow script
    calls it after its imports, right before its first batch; ``benchmarks/stage_times.py`` sums it over a run."""
    seconds = process_age()
    logging.getLogger("advflow").info(STARTUP_LINE, seconds)
    return seconds
