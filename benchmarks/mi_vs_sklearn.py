"""Feature-map mutual information: advflow.information.mi's batched T matrices vs. sklearn's mutual_info_score, and vs.
the floor of the method, the one batched matrix product that yields every joint histogram.

The model is a ``good_init`` ConvNet on 3x32x32 inputs (CIFAR-10's shape) with 10 classes, seeded with 0
and untrained: the figures depend on the maps' shapes, not on what the network has learnt. A batch of
``--inputs`` seeded random inputs in [-1, 1] runs through it in eval mode and every conv layer's output
maps are kept (15 layers: 32, 32, 32, 48 maps of 32x32, 48 + 4 x 80 of 16x16, 80 + 5 x 128 of 8x8).
The T matrices pair every layer's maps with the last layer's 128 8x8 maps: sum_k n_k x 128 = 157,696
pairs per input, every layer pooled to 8x8 and bucketized into B = 8 buckets.

- ``advflow``: ``mi_against(layers, target)``, everything included (pooling, bucketizing, the product,
  the MI); ``advflow_per_layer`` calls it once per layer instead (what ``layer_mi`` does), to show what
  sharing one product per map size saves.
- ``floor``: ``torch.bmm`` of the prebuilt float32 one-hot codes of all layers (N, sum_k n_k B, 64) and
  of the target (N, 64, 128 B) into a preallocated output (N, sum_k n_k B, 128 B): every joint count,
  and nothing else. advflow's own product is smaller (it packs three of the target's buckets per
  column, see ``advflow.information.mi._packing``); ``packed_product`` times that product alone (prebuilt codes,
  preallocated output), for reference.
- ``sklearn``: ``mutual_info_score`` on a seeded random sample of ``--pairs`` pairs of the same bucket
  ids (computed with advflow's pool_to and bucketize), timed and extrapolated to all pairs; both
  results are compared on the sample (max absolute difference, nats).

The machine may be shared with other work, so the timings alternate (floor, advflow, packed product,
advflow per layer, then again) for ``--repeats`` rounds after a warm-up, and the report gives medians
(and minima); ``advflow_over_floor`` is the median of the per-round ratios advflow / floor (each round's
two runs are adjacent in time). This is done for each thread count of ``--threads`` (default 1,2).
Everything runs on the CPU, in this process; the output is JSON.

The issue's targets: at least 2000x sklearn's time per pair with the same results (1e-5 nats), and
within 1.5x of the floor.

    pip install scikit-learn
    python benchmarks/mi_vs_sklearn.py [--threads 1,2] [--inputs 16] [--pairs 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.information.mi import (  # noqa: E402
    _CPU_TABLE_ENTRIES,
    DEFAULT_BUCKETS,
    _packed_codes,
    _packing,
    bucketize,
    mi_against,
    pool_to,
)
from advflow.models.architectures import ConvNet, architecture  # noqa: E402


def layer_maps(model: ConvNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Every conv layer's output maps (before dropout, which eval mode makes the identity anyway)."""
    maps = []
    with torch.no_grad():
        for block in model.blocks:
            maps.append(block.output_maps(x))
            x = block.dropout(maps[-1])
    return maps


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_hot(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """(N, n, P) ids as float32 one-hot codes (N, n B, P)."""
    n, k, positions = ids.shape
    codes = torch.zeros(n, k, buckets, positions)
    codes.scatter_(2, ids.unsqueeze(2), 1.0)
    return codes.view(n, k * buckets, positions)


def summary(times: list[float]) -> dict[str, float]:
    return {"median_seconds": round(statistics.median(times), 4), "min_seconds": round(min(times), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each measured")
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2000, help="pairs timed with sklearn")
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds per thread count")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]

    buckets = DEFAULT_BUCKETS
    torch.manual_seed(0)
    model = ConvNet(architecture("good_init", 3, (32, 32), 10)).eval()
    x = torch.rand(args.inputs, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    maps = layer_maps(model, x)
    target = maps[-1]
    widths = [m.shape[1] for m in maps]
    n_t, size = target.shape[1], tuple(target.shape[-2:])
    positions = size[0] * size[1]
    pairs_per_input = sum(widths) * n_t
    total_pairs = args.inputs * pairs_per_input

    # The same bucket ids for sklearn and the floor.
    layer_ids = [bucketize(pool_to(m, size).flatten(2), buckets) for m in maps]
    target_ids = bucketize(target.flatten(2), buckets)
    a_codes = one_hot(torch.cat(layer_ids, dim=1), buckets)
    b_codes = one_hot(target_ids, buckets).transpose(1, 2)
    joint = torch.empty(args.inputs, a_codes.shape[1], b_codes.shape[2])
    m, base = _packing(positions, buckets, _CPU_TABLE_ENTRIES)
    packed = _packed_codes(target_ids, buckets, m, base, torch.empty(target_ids.numel() * buckets)).transpose(1, 2)
    packed_joint = torch.empty(args.inputs, a_codes.shape[1], packed.shape[2])

    result: list[torch.Tensor] = []
    runs = {
        "floor": lambda: torch.bmm(a_codes, b_codes, out=joint),
        "advflow": lambda: result.__setitem__(slice(None), mi_against(maps, target, buckets)),
        "packed_product": lambda: torch.bmm(a_codes, packed, out=packed_joint),
        "advflow_per_layer": lambda: [mi_against([m], target, buckets) for m in maps],
    }
    timings = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for fn in runs.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(seconds(fn))
        ratios = [a / f for a, f in zip(times["advflow"], times["floor"])]
        timings[threads] = {"times": times, "ratio": statistics.median(ratios),
                            "ratios": [round(r, 3) for r in ratios]}

    # Imported only after the torch timings, as a precaution: sklearn loads its own OpenMP runtime.
    from sklearn import __version__ as sklearn_version
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(2)
    layer_of = np.repeat(np.arange(len(maps)), widths)  # stacked map index -> layer
    first_of = np.concatenate([[0], np.cumsum(widths)[:-1]])
    sample = [(int(rng.integers(args.inputs)), int(rng.integers(sum(widths))), int(rng.integers(n_t)))
              for _ in range(args.pairs)]
    rows = [(n, int(layer_of[s]), s - int(first_of[layer_of[s]]), j) for n, s, j in sample]
    a_rows = [layer_ids[k][n, i].numpy() for n, k, i, _ in rows]
    b_rows = [target_ids[n, j].numpy() for n, _, _, j in rows]
    start = time.perf_counter()
    theirs = [mutual_info_score(a, b) for a, b in zip(a_rows, b_rows)]
    sklearn_seconds = time.perf_counter() - start
    ours_sample = [float(result[k][n, i, j]) for n, k, i, j in rows]
    max_abs_diff = float(np.max(np.abs(np.array(ours_sample) - np.array(theirs))))
    sklearn_per_pair = sklearn_seconds / args.pairs

    per_threads = {}
    for threads, t in timings.items():
        ours = statistics.median(t["times"]["advflow"])
        speedup = sklearn_per_pair / (ours / total_pairs)
        per_threads[str(threads)] = {
            **{name: summary(values) for name, values in t["times"].items()},
            "advflow_us_per_pair": round(ours / total_pairs * 1e6, 5),
            "advflow_over_floor": round(t["ratio"], 3),
            "advflow_over_floor_per_round": t["ratios"],
            "speedup_per_pair_over_sklearn": round(speedup, 1),
            "targets": {"speedup_at_least_2000": speedup >= 2000, "within_1.5x_of_floor": t["ratio"] <= 1.5},
        }
    report = {
        "benchmark": "mi_vs_sklearn",
        "model": "good_init, 3x32x32, 10 classes, seed 0, untrained",
        "inputs": args.inputs, "layers": len(maps), "maps_per_layer": widths,
        "target_maps": n_t, "compared_at": list(size), "buckets": buckets,
        "pairs_per_input": pairs_per_input, "pairs": total_pairs, "repeats": args.repeats,
        "torch": torch.__version__, "sklearn_version": sklearn_version,
        "floor_joint_count_elements": joint.numel(), "packed_product_elements": packed_joint.numel(),
        "packing": {"buckets_per_column": m, "base": base},
        "sklearn": {"pairs_timed": args.pairs, "seconds": round(sklearn_seconds, 3),
                    "us_per_pair": round(sklearn_per_pair * 1e6, 2),
                    "extrapolated_seconds_all_pairs": round(sklearn_per_pair * total_pairs, 1)},
        "max_abs_diff_on_sampled_pairs": max_abs_diff,
        "same_results_1e-5": max_abs_diff <= 1e-5,
        "threads": per_threads,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
