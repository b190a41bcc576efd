"""Wall time of a no-op rerun: `snakemake --cores all` on a workflow whose outputs are all up to date.

Run it in a directory where the workflow has finished (after `make run` it is the repository):
    python benchmarks/noop_rerun.py [--workdir DIR] [--configfile FILE] [--repeats 5]
It first checks with a dry run that nothing is left to do, then times the real command. Each run
parses the Snakefile (config checks, the code digests of the rules' scripts), builds the DAG of every
job and checks the recorded metadata of every output (mtime, params, code, input set).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO, help="where the finished run lives")
    parser.add_argument("--configfile", default=None, help="the config of that run (default: config.yaml)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(args.workdir),
           "--cores", "all"]
    if args.configfile:
        cmd += ["--configfile", args.configfile]
    dry = subprocess.run(cmd + ["-n"], capture_output=True, text=True, cwd=args.workdir)
    if dry.returncode != 0 or "Nothing to be done" not in dry.stdout + dry.stderr:
        sys.exit(f"{args.workdir}: the workflow is not complete there (a dry run plans jobs); run it first "
                 f"(`make run`).\n{(dry.stdout + dry.stderr)[-2000:]}")
    jobs = subprocess.run(cmd + ["--summary"], capture_output=True, text=True, cwd=args.workdir).stdout
    outputs = sum(1 for line in jobs.splitlines()[1:] if line.strip())

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=args.workdir)
        times.append(time.perf_counter() - start)
        if result.returncode != 0 or "Nothing to be done" not in result.stdout + result.stderr:
            sys.exit(f"the rerun did something or failed:\n{(result.stdout + result.stderr)[-2000:]}")
    print(f"no-op rerun of {args.workdir} ({outputs} outputs up to date): median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
