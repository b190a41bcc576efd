"""Feature-map mutual information: advflow.mi's batched T matrices vs. sklearn's mutual_info_score, and vs.
the floor of the method, the one batched matrix product that yields every joint histogram.

The model is a ``good_init`` ConvNet on 3x32x32 inputs (CIFAR-10's shape) with 10 classes, seeded with 0
and untrained: the figures depend on the maps' shapes, not on what the network has learnt. A batch of
``--inputs`` seeded random inputs in [-1, 1] runs through it in eval mode and every conv layer's output
maps are kept (15 layers: 32, 32, 32, 48 maps of 32x32, 48 + 4 x 80 of 16x16, 80 + 5 x 128 of 8x8).
The T matrices pair every layer's maps with the last layer's 128 8x8 maps: sum_k n_k x 128 = 157,696
pairs per input, every layer pooled to 8x8 and bucketized into B = 8 buckets.

- ``advflow``: ``mi_against(layers, target)``, everything included (pooling, bucketizing, one-hot codes,
  the products, the MI), best of ``--repeats`` after one warm-up run; ``advflow_per_layer`` calls it
  once per layer instead (what ``layer_mi`` does), to show what sharing one product per map size saves.
- ``sklearn``: ``mutual_info_score`` on a seeded random sample of ``--pairs`` pairs of the same bucket
  ids (computed with advflow's pool_to and bucketize), timed and extrapolated to all pairs; both
  results are compared on the sample (max absolute difference, nats).
- ``floor``: ``torch.bmm`` of the prebuilt float32 one-hot codes of all layers (N, sum_k n_k B, 64) and
  of the target (N, 64, 128 B) into a preallocated output (N, sum_k n_k B, 128 B): the joint counts
  alone, best of ``--repeats``.

The issue's targets: at least 2000x sklearn's time per pair with the same results, and within 3x of
the floor. Everything runs on the CPU, in this process, with ``--threads`` threads (default 2); the
output is JSON.

    pip install scikit-learn
    python benchmarks/mi_vs_sklearn.py [--threads 2] [--inputs 16] [--pairs 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.mi import DEFAULT_BUCKETS, bucketize, mi_against, pool_to  # noqa: E402
from advflow.models import ConvNet, architecture  # noqa: E402


def layer_maps(model: ConvNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Every conv layer's output maps (before dropout, which eval mode makes the identity anyway)."""
    maps = []
    with torch.no_grad():
        for block in model.blocks:
            maps.append(block.output_maps(x))
            x = block.dropout(maps[-1])
    return maps


def best_seconds(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def one_hot(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """(N, n, P) ids as float32 one-hot codes (N, n B, P)."""
    n, k, positions = ids.shape
    codes = torch.zeros(n, k, buckets, positions)
    codes.scatter_(2, ids.unsqueeze(2), 1.0)
    return codes.view(n, k * buckets, positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2000, help="pairs timed with sklearn")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    buckets = DEFAULT_BUCKETS
    torch.manual_seed(0)
    model = ConvNet(architecture("good_init", 3, (32, 32), 10)).eval()
    x = torch.rand(args.inputs, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    maps = layer_maps(model, x)
    target = maps[-1]
    widths = [m.shape[1] for m in maps]
    n_t, size = target.shape[1], tuple(target.shape[-2:])
    pairs_per_input = sum(widths) * n_t
    total_pairs = args.inputs * pairs_per_input

    mi_against(maps, target, buckets)  # warm-up
    result: list[torch.Tensor] = []
    ours = best_seconds(lambda: result.__setitem__(slice(None), mi_against(maps, target, buckets)), args.repeats)
    per_layer = best_seconds(lambda: [mi_against([m], target, buckets) for m in maps], args.repeats)
    ids_seconds = best_seconds(lambda: [bucketize(pool_to(m, size).flatten(2), buckets) for m in maps],
                               args.repeats)

    # The same bucket ids for sklearn and the floor.
    layer_ids = [bucketize(pool_to(m, size).flatten(2), buckets) for m in maps]
    target_ids = bucketize(target.flatten(2), buckets)

    a_codes = one_hot(torch.cat(layer_ids, dim=1), buckets)
    b_codes = one_hot(target_ids, buckets).transpose(1, 2)
    joint = torch.empty(args.inputs, a_codes.shape[1], b_codes.shape[2])
    torch.bmm(a_codes, b_codes, out=joint)  # warm-up
    floor = best_seconds(lambda: torch.bmm(a_codes, b_codes, out=joint), args.repeats)

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
    ours_per_pair = ours / total_pairs
    report = {
        "benchmark": "mi_vs_sklearn",
        "model": "good_init, 3x32x32, 10 classes, seed 0, untrained",
        "inputs": args.inputs, "layers": len(maps), "maps_per_layer": widths,
        "target_maps": n_t, "compared_at": list(size), "buckets": buckets,
        "pairs_per_input": pairs_per_input, "pairs": total_pairs, "threads": args.threads,
        "torch": torch.__version__, "sklearn_version": sklearn_version,
        "advflow": {"seconds": round(ours, 4), "us_per_pair": round(ours_per_pair * 1e6, 5),
                    "pool_and_bucketize_seconds": round(ids_seconds, 4)},
        "advflow_per_layer": {"seconds": round(per_layer, 4)},
        "sklearn": {"pairs_timed": args.pairs, "seconds": round(sklearn_seconds, 3),
                    "us_per_pair": round(sklearn_per_pair * 1e6, 2),
                    "extrapolated_seconds_all_pairs": round(sklearn_per_pair * total_pairs, 1)},
        "max_abs_diff_on_sampled_pairs": max_abs_diff,
        "floor": {"seconds": round(floor, 4), "joint_count_elements": joint.numel()},
        "speedup_per_pair_over_sklearn": round(sklearn_per_pair / ours_per_pair, 1),
        "advflow_over_floor": round(ours / floor, 3),
        "targets": {"speedup_at_least_2000": sklearn_per_pair / ours_per_pair >= 2000,
                    "same_results_1e-5": max_abs_diff <= 1e-5,
                    "within_3x_of_floor": ours / floor <= 3},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
