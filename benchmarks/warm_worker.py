"""A job's start-up and wall time in its own process, in a child forked by the warm worker, and in a CUDA worker
(advflow.workflow.worker), side by side in rotating rounds.

Each round runs the same job script three ways: in its own process (as with ``warm_worker: false``), handed to a
worker that forks a child per job (``cuda_workers: 0``), and handed to a worker whose one CUDA worker runs the jobs
one after another (``ADVFLOW_WORKER_REUSE=all``, so that it runs on a CPU too). The script is what a GPU rule's
job does before and at the start of its work: the imports of the ``mi`` rule, ``advflow.workflow.start`` (which
creates the CUDA context where the device is a GPU), ``ready``'s start-up figure, then one forward and backward
pass of good_init on a batch of 64 images on the device (cuBLAS and cuDNN load at their first use). Prints each
round's wall times (process start to the job's exit) and start-ups, and the medians.

    python benchmarks/warm_worker.py [--rounds 7] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
from advflow.workflow import worker  # noqa: E402

JOB = """
import json, os, sys, time, types
__real_file__ = __file__
snakemake = types.SimpleNamespace(log=["job.log"], threads=1, config={"device": os.environ["BENCH_DEVICE"]},
                                  rule="bench", wildcards={}, resources={"gpu_mem_mb": 1600})
from advflow.workflow import ready, start
device = start(snakemake)
import torch
from advflow.information.stage import measure_set
from advflow.models.architectures import ConvNet, architecture
startup = ready()
began = time.perf_counter()
torch.manual_seed(0)
model = ConvNet(architecture("good_init", 1, (28, 28), 10)).to(device)
x = torch.rand(64, 1, 28, 28, device=device)
model(x).sum().backward()
if device.type == "cuda":
    torch.cuda.synchronize()
with open("result.json", "w") as fh:
    json.dump({"startup": startup, "work": time.perf_counter() - began}, fh)
"""

MODES = ("own process", "forked child", "CUDA worker")
#: Each worker's socket, by mode (launched in main()).
SOCKETS: dict[str, str] = {}


def run(folder: Path, mode: str, device: str) -> tuple[float, float, float]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "BENCH_DEVICE": device}
    env.pop(worker.SOCKET_ENV, None)
    if mode != "own process":
        env[worker.SOCKET_ENV] = SOCKETS[mode]
    began = time.perf_counter()
    subprocess.run([sys.executable, "job.py"], cwd=folder, env=env, check=True)
    wall = time.perf_counter() - began
    result = json.loads((folder / "result.json").read_text())
    return wall, result["startup"], result["work"]


def launch(log: Path, cuda_workers: int) -> str:
    worker.launch(log, cuda_workers=cuda_workers, reuse="all" if cuda_workers else "")
    path = os.environ.pop(worker.SOCKET_ENV)
    while not os.path.exists(path):
        time.sleep(0.1)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(SRC)  # the workers', as the jobs'
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "job.py").write_text(JOB)
        try:
            SOCKETS["forked child"] = launch(folder / "forking.log", cuda_workers=0)
            SOCKETS["CUDA worker"] = launch(folder / "reusing.log", cuda_workers=1)
            print("| round | " + " | ".join(f"{m}: wall (s) | start-up (s) | work (s)" for m in MODES) + " |")
            print("| ---: |" + " ---: | ---: | ---: |" * len(MODES))
            for i in range(args.rounds):
                order = MODES[i % 3:] + MODES[:i % 3]  # each mode first in turn
                for mode in order:
                    results[mode].append(run(folder, mode, args.device))
                row = " | ".join(f"{w:.2f} | {s:.2f} | {k:.3f}" for w, s, k in (results[m][-1] for m in MODES))
                print(f"| {i + 1} | {row} |", flush=True)
        finally:
            worker.stop()
        served = (folder / "reusing.log").read_text()
    print()
    for mode in MODES:
        walls, startups, works = zip(*results[mode])
        print(f"{mode}: median wall {statistics.median(walls):.2f} s, start-up {statistics.median(startups):.2f} s, "
              f"work {statistics.median(works):.3f} s")
    base = statistics.median(w for w, _, _ in results["forked child"])
    reused = statistics.median(w for w, _, _ in results["CUDA worker"])
    print(f"CUDA worker against forked child: {base / reused:.2f}x as fast "
          f"({base:.2f} s / {reused:.2f} s); worker log: {served.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
