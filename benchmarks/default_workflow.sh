#!/usr/bin/env bash
# Wall time of the default workflow as the README runs it: a fresh clone, `snakemake --cores all`.
# Prints the total, each job's time from its benchmark: file, and each model's test accuracy.
#   bash benchmarks/default_workflow.sh [extra snakemake args...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/advflow-default-XXXX)
git clone -q "$repo" "$work/advflow"
cd "$work/advflow"
echo "fresh clone in $work/advflow ($(git rev-parse --short HEAD)), $(nproc) cores"
start=$(date +%s)
python3 -m snakemake --cores all "$@" > snakemake.out 2>&1 || { tail -40 snakemake.out; exit 1; }
end=$(date +%s)
echo "default workflow (data + training): $((end - start)) s wall"
python3 - <<'PY'
import csv, glob, json, os
rows = []
for path in sorted(glob.glob("logs/data/*.benchmark.tsv") + glob.glob("results/*/benchmarks/train/*.tsv")):
    with open(path) as fh:
        rows.append((os.path.basename(path).split(".")[0], float(next(csv.DictReader(fh, delimiter="\t"))["s"])))
print("| job | seconds |\n| --- | ---: |")
for name, seconds in rows:
    print(f"| {name} | {seconds:.0f} |")
print("\n| model | parameters | test accuracy |\n| --- | ---: | ---: |")
for path in sorted(glob.glob("results/*/models/*.json")):
    record = json.load(open(path))
    print(f"| {record['model']} | {record['parameters']:,} | {100 * record['test_accuracy']:.2f} % |")
PY
