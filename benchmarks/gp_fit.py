"""GP-aggregated paths: the time of ``advflow.information.aggregate.fit_path`` for one set of 200 inputs x 15 layers,
vs. a plain GPyTorch ExactGP on all 3000 points.

The set is generated, no model is needed. For each of the IIP and the OIP, an input's path is a smooth
curve over layers k = 1..15 (IIP: a decay from ~1.2 nats with a bump, OIP: a rise towards ~1.5 nats,
shapes like the study's paths), plus a per-input offset (sd 0.05) and independent noise per input and
layer (sd 0.03), all from a generator seeded with ``--seed``.

- ``advflow``: ``fit_path`` on the IIP and on the OIP (the two fits of one set, everything included:
  sufficient statistics, hyperparameters by L-BFGS from its default starts, posterior at the layers and
  on the grid), median of ``--repeats`` runs after one cold run (whose time, with GPyTorch's first-call
  costs, is reported too). It also counts the marginal-likelihood evaluations each fit made, by
  wrapping the module's private ``_log_likelihood`` (a benchmark-only instrument).
- ``plain_exact_gp``: GPyTorch's ExactGP (ConstantMean, ScaleKernel(RBFKernel)) with a
  GaussianLikelihood on all 3000 points, float64, Cholesky forced (``max_cholesky_size``) so that it is
  exact too: ``--plain-evaluations`` loss-and-gradient evaluations are timed (median), and the time per
  evaluation times the number the advflow fit made gives the plain fit's time for the same optimizer
  work. The ratio is that over advflow's median.

The issue's target: under 5 s per set (both paths) on the CPU. Everything runs in this process with
``--threads`` threads (default 2); the output is JSON.

    pip install gpytorch
    python benchmarks/gp_fit.py [--threads 2] [--inputs 200] [--repeats 5] [--plain-evaluations 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import gpytorch  # noqa: E402

from advflow.information import aggregate  # noqa: E402

LAYERS = 15


def generated_set(inputs: int, seed: int) -> dict[str, np.ndarray]:
    """``{"iip": (inputs, 15), "oip": (inputs, 15)}`` paths: smooth curve + per-input offset + noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, LAYERS + 1)
    curves = {"iip": 1.2 * np.exp(-k / 6) + 0.15 * np.exp(-((k - 9) / 2) ** 2),
              "oip": 1.5 / (1 + np.exp(-(k - 8) / 2))}
    return {name: curve + rng.normal(0, 0.05, (inputs, 1)) + rng.normal(0, 0.03, (inputs, LAYERS))
            for name, curve in curves.items()}


@contextlib.contextmanager
def counting_evaluations() -> Iterator[list[int]]:
    """Counts the calls of advflow.information.aggregate._log_likelihood within the block, in the yielded [count]."""
    original = aggregate._log_likelihood
    count = [0]

    def counted(*args: Any) -> torch.Tensor:
        count[0] += 1
        return original(*args)

    aggregate._log_likelihood = counted
    try:
        yield count
    finally:
        aggregate._log_likelihood = original


def plain_evaluation_seconds(values: np.ndarray, evaluations: int) -> float:
    """Median seconds of one loss-and-gradient evaluation of a plain exact GP on all the points
    (standardized targets, layers in [0, 1], as advflow fits them)."""
    x = np.broadcast_to((np.arange(LAYERS) / (LAYERS - 1)), values.shape).reshape(-1)
    y = values.reshape(-1)
    y = (y - y.mean()) / y.std()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    model = aggregate.PathGP(torch.as_tensor(x), torch.as_tensor(y), likelihood).double()
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    times = []
    with gpytorch.settings.max_cholesky_size(10 ** 6):
        for _ in range(evaluations):
            model.zero_grad()
            start = time.perf_counter()
            loss = -mll(model(model.train_inputs[0]), model.train_targets)
            loss.backward()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plain-evaluations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = generated_set(args.inputs, args.seed)
    layers = np.arange(1, LAYERS + 1)

    def one_set() -> tuple[dict[str, float], dict[str, int], dict[str, aggregate.AggregatedPath]]:
        seconds, evaluations, fits = {}, {}, {}
        for name, values in paths.items():
            with counting_evaluations() as count:
                start = time.perf_counter()
                fits[name] = aggregate.fit_path(layers, values, seed=args.seed)
                seconds[name] = time.perf_counter() - start
            evaluations[name] = count[0]
        return seconds, evaluations, fits

    cold, _, _ = one_set()
    runs = [one_set() for _ in range(args.repeats)]
    per_path = {name: statistics.median(run[0][name] for run in runs) for name in paths}
    per_set = statistics.median(sum(run[0].values()) for run in runs)
    evaluations = runs[-1][1]
    fits = runs[-1][2]

    plain_seconds = plain_evaluation_seconds(paths["iip"], args.plain_evaluations)
    plain_per_set = plain_seconds * sum(evaluations.values())

    report = {
        "benchmark": "gp_fit",
        "set": f"{args.inputs} inputs x {LAYERS} layers = {args.inputs * LAYERS} points per path, seed {args.seed}",
        "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "gpytorch": gpytorch.__version__,
        "advflow": {
            "median_seconds_per_set": round(per_set, 4),
            "median_seconds_per_path": {name: round(s, 4) for name, s in per_path.items()},
            "cold_seconds_per_set": round(sum(cold.values()), 4),
            "likelihood_evaluations": evaluations,
            "seconds_per_evaluation": round(per_set / sum(evaluations.values()), 5),
            "hyperparameters": {name: {k: round(v, 6) for k, v in fit.hyperparameters.items()}
                                for name, fit in fits.items()},
            "max_band_half_width": {name: round(float(np.max(fit.upper - fit.mean)), 6) for name, fit in fits.items()},
        },
        "plain_exact_gp": {
            "points": int(paths["iip"].size),
            "median_seconds_per_evaluation": round(plain_seconds, 4),
            "evaluations_timed": args.plain_evaluations,
            "extrapolated_seconds_per_set": round(plain_per_set, 2),
        },
        "speedup_advflow_over_plain": round(plain_per_set / per_set, 1),
        "target_seconds_per_set": 5.0,
        "meets_target": per_set < 5.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
