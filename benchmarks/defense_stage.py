"""The defense stage of a finished run: its wall time, the MINE (MID) training time and the peak memory, and the
adaptive attacks' wall time and job seconds per target (``benchmarks/detectors.py`` times each detector's fit and
scoring side by side).

    python benchmarks/defense_stage.py WORKDIR [--dataset fashion_mnist] [--log .snakemake/log/<file>.snakemake.log]

Wall time: from the first defense job's start to the last one's finish in the run's Snakemake log
(:mod:`stage_times`); per rule, the jobs, their summed seconds and the largest resident memory from the rules'
``benchmark:`` files (``results/{dataset}/benchmarks/defense/``). The MINE training time is the ``fit_mid`` job's
(training of T_theta on clean pairs, with loading the classifier and AE-I). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stage_times import STAGES, parse  # noqa: E402

from advflow.defenses import registry as detector_registry  # noqa: E402

RULES = STAGES["defense (seed 003)"]
ADAPTIVE = STAGES["adaptive attacks"]
FOLDERS = {"adaptive_attack": "adaptive/*/*.tsv", "adaptive_tables": "adaptive/tables.tsv","defense_inputs": "inputs.tsv", "train_autoencoder": "autoencoders/*.tsv", "fit_mid": "mid.tsv",
           # rule fit_detector's benchmark files are named after the detectors it fits
           "fit_detector": tuple(f"{name}.tsv" for name in detector_registry.fitted_by_rule()),
           "defense_attack": "adv/*.tsv", "defense_scores": "scores/*.tsv", "defense_tables": "tables.tsv"}


def benchmark_rows(root: Path, pattern: str | tuple[str, ...]) -> list[dict[str, float]]:
    rows = []
    patterns = (pattern,) if isinstance(pattern, str) else pattern
    for path in sorted(p for one in patterns for p in root.glob(one)):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                rows.append({"s": float(row["s"]), "max_rss": float(row["max_rss"]) if row["max_rss"] != "NA" else 0.0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    root = args.workdir / "results" / args.dataset / "benchmarks" / "defense"
    print(f"| rule | jobs | job seconds | peak memory (MB) |\n| --- | ---: | ---: | ---: |")
    peak = 0.0
    for rule in RULES:
        rows = benchmark_rows(root, FOLDERS[rule])
        if rows:
            peak = max(peak, max(r["max_rss"] for r in rows))
            print(f"| {rule} | {len(rows)} | {sum(r['s'] for r in rows):.0f} | {max(r['max_rss'] for r in rows):.0f} |")
    for rule in ADAPTIVE:
        rows = benchmark_rows(root, FOLDERS[rule])
        if rows:
            print(f"| {rule} | {len(rows)} | {sum(r['s'] for r in rows):.0f} | {max(r['max_rss'] for r in rows):.0f} |")
    per_target: dict[str, float] = {}
    for path in sorted(root.glob("adaptive/*/*.tsv")):
        per_target[path.parent.name] = per_target.get(path.parent.name, 0.0) + sum(
            r["s"] for r in benchmark_rows(path.parent, path.name))
    if per_target:
        print("\nadaptive attack job seconds per target: "
              + ", ".join(f"{target} {seconds:.0f} s" for target, seconds in per_target.items()))
    mine = benchmark_rows(root, FOLDERS["fit_mid"])
    runs = [p for p in (args.workdir / ".snakemake" / "log").glob("*.snakemake.log") if "Finished job" in p.read_text()]
    for name, rules in (("stage", RULES), ("adaptive attacks", ADAPTIVE)):
        jobs = [j for log in ([args.log] if args.log else runs) for j in parse(log) if j[0] in rules]
        if jobs:
            wall = (max(e for _, _, e in jobs) - min(s for _, s, _ in jobs)).total_seconds()
            print(f"\n{name} wall time: {wall:.0f} s over {len(jobs)} jobs (from the Snakemake log(s))")
    if mine:
        print(f"MINE (fit_mid) job: {mine[0]['s']:.1f} s; peak memory of any defense job: {peak:.0f} MB")


if __name__ == "__main__":
    main()
