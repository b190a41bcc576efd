"""Wall time of a finished workflow run, stage by stage, from Snakemake's own log; how busy it kept the cores after
training and how much of the jobs' time was start-up.

    python benchmarks/stage_times.py WORKDIR [--log .snakemake/log/<file>.snakemake.log]

Reads the run's Snakemake log (unless given, the newest under WORKDIR/.snakemake/log that ran jobs): every job's rule,
log file and start and finish times, and the cores it was given. A stage's wall time runs from its first job's start to
its last job's finish (stages overlap where Snakemake interleaves them); "job seconds" is the sum of its jobs' own
durations. Prints a Markdown table, then two figures for the part of the run after training (from the last training
job's end to the run's end):

- busy: wall time x cores / the jobs' seconds inside that window (1.0: every core ran a job all the time);
- start-up: the jobs' start-up (the ``start-up: X s`` line of each job's log, written by ``advflow.workflow.ready``:
  the interpreter, Snakemake's script preamble, imports and set-up before the work) as a share of those jobs' seconds,
  over every job that is not data or training.

Where jobs used CUDA, a last table gives each rule's largest ``peak GPU memory`` line (what PyTorch reserved; written
by ``advflow.workflow.device.log_gpu_peak`` at a job's end) beside the ``gpu_mem_mb`` it declares
(``advflow.workflow.resources.GPU_MEMORY_MB``, which includes the CUDA context): the measurements to declare.
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
    "defense (seed 003)": ("defense_inputs", "train_autoencoder", "fit_mid", "fit_detector", "defense_attack",
                           "defense_scores", "defense_tables"),
    "adaptive attacks": ("adaptive_attack", "adaptive_tables"),
    "report": ("report",),
}
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


TRAINING = STAGES["data"] + STAGES["training"]
STARTUP = re.compile(r"start-up: ([0-9.]+) s")
GPU_PEAK = re.compile(r"peak GPU memory: ([0-9.]+) MiB reserved")


def gpu_peaks(workdir: Path, detailed: list) -> dict[str, float]:
    """Rule -> the largest peak GPU memory (MiB) its jobs' logs of this run record; empty where none used CUDA."""
    peaks: dict[str, float] = {}
    for rule, _, _, rule_log in detailed:
        if rule_log and (workdir / rule_log).is_file():
            found = GPU_PEAK.findall((workdir / rule_log).read_text(errors="replace"))
            if found:
                peaks[rule] = max(peaks.get(rule, 0.0), float(found[-1]))
    return peaks


def parse_jobs(log: Path) -> list[tuple[str, dt.datetime, dt.datetime, str | None]]:
    """(rule, start, end, the job's log file or None) of every finished job."""
    now, started, jobs, pending, rule_log = None, {}, [], None, None
    for line in log.read_text().splitlines():
        stamp = STAMP.match(line)
        if stamp:
            now = dt.datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            continue
        rule = re.match(r"^(?:local)?rule (\w+):", line)
        if rule:
            pending, rule_log = (rule.group(1), now), None
            continue
        logged = re.match(r"^\s+log: (\S+)", line)
        if logged and pending:
            rule_log = logged.group(1)
            continue
        jobid = re.match(r"^\s+jobid: (\d+)", line)
        if jobid and pending:
            started[jobid.group(1)] = (*pending, rule_log)
            pending = None
            continue
        done = re.match(r"^Finished job(?:id)?:? (\d+)", line)
        if done and done.group(1) in started:
            rule, start, rule_log = started.pop(done.group(1))
            jobs.append((rule, start, now, rule_log))
    return jobs


def parse(log: Path) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(rule, start, end) of every finished job."""
    return [(rule, start, end) for rule, start, end, _ in parse_jobs(log)]


def cores(log: Path) -> int | None:
    found = re.search(r"^Provided cores: (\d+)", log.read_text(), re.M)
    return int(found.group(1)) if found else None


def startup(workdir: Path, rule_log: str | None) -> float | None:
    """The last start-up a job's log records (the log is appended to, so the last is this run's)."""
    if not rule_log or not (workdir / rule_log).is_file():
        return None
    found = STARTUP.findall((workdir / rule_log).read_text(errors="replace"))
    return float(found[-1]) if found else None


def after_training(workdir: Path, log: Path, jobs: list | None = None) -> dict[str, float] | None:
    """Busy ratio and start-up share of the part of the run after training (see the module's docstring);
    ``jobs``: the log's :func:`parse_jobs`, when already read."""
    jobs, n = jobs if jobs is not None else parse_jobs(log), cores(log)
    trained = [end for rule, _, end, _ in jobs if rule in TRAINING]
    later = [job for job in jobs if job[0] not in TRAINING]
    if not later or not n:
        return None
    begin = max(trained) if trained else min(start for _, start, _, _ in later)
    end = max(end for _, _, end, _ in jobs)
    inside = sum(max(0.0, (min(e, end) - max(s, begin)).total_seconds()) for _, s, e, _ in jobs)
    wall = (end - begin).total_seconds()
    seconds = [(e - s).total_seconds() for _, s, e, _ in later]
    startups = [startup(workdir, rule_log) for *_, rule_log in later]
    known = [(sec, up) for sec, up in zip(seconds, startups) if up is not None]
    return {"cores": n, "wall": wall, "job_seconds": inside, "busy": wall * n / inside if inside else float("nan"),
            "jobs": len(later), "with_startup": len(known), "startup": sum(up for _, up in known),
            "startup_job_seconds": sum(sec for sec, _ in known),
            "startup_share": sum(up for _, up in known) / max(1e-9, sum(sec for sec, _ in known))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    runs = [p for p in (args.workdir / ".snakemake" / "log").glob("*.snakemake.log") if "Finished job" in p.read_text()]
    log = args.log or max(runs, key=lambda p: p.stat().st_mtime)  # the newest run that ran jobs (not a dry run)
    detailed = parse_jobs(log)
    jobs = [(rule, start, end) for rule, start, end, _ in detailed]
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
    figures = after_training(args.workdir, log, detailed)
    if figures:
        print(f"\nAfter training ({figures['jobs']} jobs, {figures['cores']} cores): wall {figures['wall']:.0f} s, "
              f"jobs' seconds in that time {figures['job_seconds']:.0f} s; wall x cores / jobs' seconds = "
              f"**{figures['busy']:.2f}** (target <= 1.2)")
        print(f"Start-up: {figures['startup']:.0f} s of {figures['startup_job_seconds']:.0f} s over the "
              f"{figures['with_startup']} jobs whose log records it = **{100 * figures['startup_share']:.1f} %** "
              "(target <= 15 %)")
    peaks = gpu_peaks(args.workdir, detailed)
    if peaks:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from advflow.workflow.resources import CONTEXT_MB, GPU_MEMORY_MB

        print(f"\n| rule | peak GPU memory reserved (MiB) | + context {CONTEXT_MB} | declared gpu_mem_mb |\n"
              "| --- | ---: | ---: | ---: |")
        for rule, peak in sorted(peaks.items()):
            print(f"| {rule} | {peak:.0f} | {peak + CONTEXT_MB:.0f} | {GPU_MEMORY_MB.get(rule, '?')} |")


if __name__ == "__main__":
    main()
