"""Training throughput: advflow's Lightning path vs. a plain PyTorch loop, same model, batch and data.

Both run the same model (good_init on 28x28 grayscale inputs, Fashion-MNIST's shape), the same Adam +
one-cycle schedule, the same uint8 -> [-1, 1] conversion and channels-last layout, the same
DataLoader. Runs alternate (Lightning, plain, Lightning, plain, ...) so drift of this noisy machine
hits both; the figure is the ratio of median throughputs.

    python benchmarks/lightning_overhead.py [--images 3000] [--repeats 3] [--model good_init]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.data import to_model_space  # noqa: E402
from advflow.models import ConvNet, architecture  # noqa: E402
from advflow.training import TrainSettings, fit, make_loader  # noqa: E402


def plain_fit(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, settings: TrainSettings,
              seed: int) -> float:
    """The loop Lightning replaces, written out by hand. Returns seconds."""
    torch.manual_seed(seed)
    model = model.to(memory_format=torch.channels_last).train()
    loader = make_loader(images, labels, settings.batch_size, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.epochs * len(loader))
    start = time.perf_counter()
    for _ in range(settings.epochs):
        for batch, targets in loader:
            batch = to_model_space(batch.float()).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(batch), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="good_init")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, lr=1e-3, log_every=10**9)

    def fresh() -> ConvNet:
        torch.manual_seed(0)
        return ConvNet(architecture(args.model, 1, (28, 28), 10))

    plain_fit(fresh(), images[:256], labels[:256], settings, seed=0)  # warm-up (oneDNN kernels, allocator)
    lightning_rates, plain_rates = [], []
    for _ in range(args.repeats):
        history = fit(fresh(), images, labels, settings, seed=0, device=torch.device("cpu"))
        lightning_rates.append(args.images / history["seconds"])
        plain_rates.append(args.images / plain_fit(fresh(), images, labels, settings, seed=0))
    lightning, plain = statistics.median(lightning_rates), statistics.median(plain_rates)
    result = {"model": args.model, "images": args.images, "batch_size": args.batch_size, "threads": args.threads,
              "lightning_img_per_s": round(lightning, 1), "plain_img_per_s": round(plain, 1),
              "lightning_overhead_percent": round(100 * (plain / lightning - 1), 2),
              "runs": {"lightning": [round(r, 1) for r in lightning_rates], "plain": [round(r, 1) for r in plain_rates]}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
