"""Wall time of a finished workflow run, stage by stage, from Snakemake's own log.

    python benchmarks/stage_times.py WORKDIR [--log .snakemake/log/<file>.snakemake.log]

Reads the run's Snakemake log (unless given, the newest under WORKDIR/.snakemake/log that ran jobs): every job's rule and
its start and finish times. A stage's wall time runs from its first job's start to its last job's finish
(stages overlap where Snakemake interleaves them); "job seconds" is the sum of its jobs' own durations.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

STAGES = {
    "data": ("prepare_data",),
    "training": ("train_model", "train_distillation_teacher", "distill", "compress", "ensemble"),
    "attacks (profiles, sets, controls, trajectories, tables)": ("select_inputs", "attack", "control",
                                                                 "jsma_trajectories", "trajectory_control",
                                                                 "attack_tables"),
    "features": ("features",),
    "mi": ("mi",),
    "aggregate": ("aggregate", "aggregate_subsets"),
    "defense (seed 003)": ("defense_inputs", "train_autoencoder", "fit_mid", "defense_attack", "defense_scores",
                           "defense_tables"),
    "report": ("report",),
}
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def parse(log: Path) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(rule, start, end) of every finished job."""
    now, started, jobs, pending_rule = None, {}, [], None
    for line in log.read_text().splitlines():
        stamp = STAMP.match(line)
        if stamp:
            now = dt.datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            continue
        rule = re.match(r"^(?:local)?rule (\w+):", line)
        if rule:
            pending_rule = (rule.group(1), now)
            continue
        jobid = re.match(r"^\s+jobid: (\d+)", line)
        if jobid and pending_rule:
            started[jobid.group(1)] = pending_rule
            pending_rule = None
            continue
        done = re.match(r"^Finished job(?:id)?:? (\d+)", line)
        if done and done.group(1) in started:
            rule, start = started.pop(done.group(1))
            jobs.append((rule, start, now))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    runs = [p for p in (args.workdir / ".snakemake" / "log").glob("*.snakemake.log") if "Finished job" in p.read_text()]
    log = args.log or max(runs, key=lambda p: p.stat().st_mtime)  # the newest run that ran jobs (not a dry run)
    jobs = parse(log)
    print(f"log: {log}\n\n| stage | jobs | job seconds | wall time (s) |\n| --- | ---: | ---: | ---: |")
    for stage, rules in STAGES.items():
        mine = [(s, e) for r, s, e in jobs if r in rules]
        if not mine:
            continue
        wall = (max(e for _, e in mine) - min(s for s, _ in mine)).total_seconds()
        busy = sum((e - s).total_seconds() for s, e in mine)
        print(f"| {stage} | {len(mine)} | {busy:.0f} | {wall:.0f} |")
    if jobs:
        first, last = min(s for _, s, _ in jobs), max(e for _, _, e in jobs)
        print(f"| **total** | {len(jobs)} | {sum((e - s).total_seconds() for _, s, e in jobs):.0f} | "
              f"{(last - first).total_seconds():.0f} |")


if __name__ == "__main__":
    main()
