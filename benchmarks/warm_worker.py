"""A job's start-up with and without the warm worker (advflow.workflow.worker), side by side in alternating rounds.

Each round runs the same job script twice: once in its own process (as with ``warm_worker: false``) and once
handed to a worker launched as the Snakefile's ``onstart`` launches it. The script is what a workflow script does
before its work: the imports of the ``mi`` rule (torch, advflow.information.stage), then ``advflow.workflow.ready``'s
start-up figure. Prints each round's two wall times (process start to the job's exit) and the medians' ratio.

    python benchmarks/warm_worker.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from advflow.workflow import worker  # noqa: E402

JOB = """
import os, sys
__real_file__ = __file__
from advflow.workflow import worker
from advflow.workflow import process_age
status = worker.delegate(__real_file__, process_age()) if os.environ.get("USE_WORKER") else None
if status is not None:
    os._exit(status)
import torch
from advflow.information.stage import measure_set
print(f"{process_age():.3f}")
"""


def run(script: Path, use_worker: bool) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("USE_WORKER", None)
    if use_worker:
        env["USE_WORKER"] = "1"
    began = time.perf_counter()
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - began, float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")  # the worker's, as the jobs'
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "job.py"
        script.write_text(JOB)
        worker.launch(Path(tmp) / "worker.log")
        path = os.environ[worker.SOCKET_ENV]
        while not os.path.exists(path):
            time.sleep(0.1)
        own, warm = [], []
        print("| round | own process: wall (s) | start-up (s) | warm worker: wall (s) | start-up (s) |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        try:
            for i in range(args.rounds):
                first = (i % 2 == 0)
                a = run(script, use_worker=not first)
                b = run(script, use_worker=first)
                plain, forked = (a, b) if first else (b, a)
                own.append(plain)
                warm.append(forked)
                print(f"| {i + 1} | {plain[0]:.2f} | {plain[1]:.2f} | {forked[0]:.2f} | {forked[1]:.2f} |", flush=True)
        finally:
            worker.stop()
    own_s, warm_s = statistics.median(w for w, _ in own), statistics.median(w for w, _ in warm)
    print(f"\nmedian wall: own process {own_s:.2f} s, warm worker {warm_s:.2f} s: {own_s / warm_s:.1f}x less")
    print(f"median start-up logged: own process {statistics.median(s for _, s in own):.2f} s, "
          f"warm worker {statistics.median(s for _, s in warm):.2f} s")


if __name__ == "__main__":
    main()
