"""A one-node Slurm cluster on this machine, for the test of the SLURM profile (Debian's slurm-wlm
and munge; see ../shared/slurm-local.md). It is started from scratch and stopped again; nothing of a
Slurm or munge that was already on the machine is touched: if one is there, the cluster is refused
with the reason, and the test is skipped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where srun inside a job looks for the configuration (with only SLURM_CONF it fails).
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# one-node test cluster written by advflow's tests; removed when they stop it"
PARTITION = "debug"
COMMANDS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be started here; the message says why (the test is skipped with it)."""


@dataclass
class OneNodeSlurm:
    root: Path
    node: str = ""
    cpus: int = 0
    pids: dict[str, Path] = field(default_factory=dict)  # daemon -> its pid file, for those we started
    wrote_conf: bool = False

    # ------------------------------------------------------------------------------------- start
    def start(self, timeout: float = 60.0) -> "OneNodeSlurm":
        self._check_machine()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                pid_file = self.root / f"{daemon}.pid"
                self._run([daemon], f"starting {daemon}")
                self.pids[daemon] = pid_file
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_machine(self) -> None:
        missing = [c for c in COMMANDS if shutil.which(c) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge, "
                                   "or `make slurm`)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting munged, slurmctld and slurmd and writing /etc/slurm/slurm.conf "
                                   "needs root")
        if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
            raise SlurmUnavailable(f"{SLURM_CONF} already configures a Slurm on this machine; the test "
                                   "starts its own one-node cluster and will not replace it")
        running = [d for d in ("slurmctld", "slurmd") if _running(d)]
        if running:
            raise SlurmUnavailable(f"{' and '.join(running)} already running on this machine; the test "
                                   "will not touch them")

    def _start_munge(self) -> None:
        if _munge_works():
            return  # a running munged with its key: use it, and leave it running afterwards
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        Path("/run/munge").mkdir(mode=0o755, parents=True, exist_ok=True)  # its socket's folder
        pid_file = self.root / "munged.pid"
        self._run(["munged", "--force", f"--pid-file={pid_file}"], "starting munged")
        self.pids["munged"] = pid_file
        for _ in range(50):
            if _munge_works():
                return
            time.sleep(0.1)
        raise SlurmUnavailable("munged started but `munge -n | unmunge` fails")

    def _write_conf(self) -> None:
        node_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.splitlines()
        node_line = next((line for line in node_line if line.startswith("NodeName=")), "")
        if not node_line:
            raise SlurmUnavailable("`slurmd -C` did not describe this node")
        fields = dict(item.split("=", 1) for item in node_line.split())
        self.node = fields["NodeName"]
        self.cpus, memory = int(fields["CPUs"]), int(fields["RealMemory"])
        (self.root / "state").mkdir(exist_ok=True)
        (self.root / "spool").mkdir(exist_ok=True)
        conf = f"""{MARKER}
ClusterName=advflowtest
SlurmctldHost={socket.gethostname()}
AuthType=auth/munge
SlurmUser=root
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName={self.node} CPUs={self.cpus} RealMemory={int(memory * 0.9)} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(conf)
        self.wrote_conf = True

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
            state = result.stdout.strip() or result.stderr.strip()
            if state in ("idle", "mixed"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s (sinfo: {state!r}); "
                               f"slurmctld.log: {self.log_tail('slurmctld')} slurmd.log: {self.log_tail('slurmd')}")

    def _run(self, cmd: list[str], what: str) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SlurmUnavailable(f"{what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")

    def log_tail(self, daemon: str, lines: int = 5) -> str:
        log = self.root / f"{daemon}.log"
        return " | ".join(log.read_text().splitlines()[-lines:]) if log.exists() else "(none)"

    # -------------------------------------------------------------------------------------- use
    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of a job (finished ones stay visible for MinJobAge), as a dict."""
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    # -------------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop the daemons this cluster started (slurmd, slurmctld, then munged) and remove its
        configuration."""
        pids = []
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid_file = self.pids.pop(daemon, None)
            pid = _read_pid(pid_file) if pid_file is not None else None
            if pid is not None:
                pids.append(pid)
        _terminate(pids)
        if self.wrote_conf and SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()
        self.wrote_conf = False


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if token.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=token.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _read_pid(pid_file: Path) -> int | None:
    for _ in range(20):  # a daemon writes its pid file just after it forks
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.1)
    return None


def _terminate(pids: list[int], timeout: float = 15.0) -> None:
    """SIGTERM each process, wait for all to exit, SIGKILL those still there after ``timeout``."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _exists(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
