"""GPU against CPU, side by side in one run: the MI kernel and training throughput per model (issue 31).

For each of advflow's architectures (good_init, deep_conv, vgg_like) on Fashion-MNIST-shaped inputs (1 x 28 x 28,
or ``--shape``), it measures

* **MI**: the S and T matrices of every conv layer for a batch of inputs (``advflow.information.mi.layer_mi`` on the
  model's own maps, as the MI stage computes them), in inputs per second, on the GPU and on the CPU with
  ``--threads`` threads, and the largest difference between the two (nats);
* **training**: images per second of ``advflow.models.training.fit`` for ``--steps`` batches of ``--batch-size``
  (the workflow's Lightning loop, channels-last as the workflow trains), on each device.

Each timing is the best of ``--repeats`` after a warm-up. Prints a Markdown table (and writes it as CSV with
``--out``). Without a CUDA device there is nothing to compare: it says so and exits 0.

    python benchmarks/gpu.py [--models good_init,deep_conv,vgg_like] [--inputs 200] [--threads 16]
        [--batch-size 256] [--steps 50] [--repeats 3] [--out gpu.csv]
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.information.features import forward_maps, measured_layers  # noqa: E402
from advflow.information.mi import layer_mi  # noqa: E402
from advflow.models.architectures import ConvNet, architecture  # noqa: E402
from advflow.models.training import TrainSettings, fit  # noqa: E402


def best_of(repeats: int, work, device: torch.device) -> float:
    """The shortest of ``repeats`` timed runs of ``work()`` after one warm-up (the GPU synchronised around each)."""
    work()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def mi_of(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """S and T of every conv layer of ``model`` for inputs ``x`` (on their device), as the MI stage computes them."""
    maps, _ = forward_maps(model, x, measured_layers(model))
    layers = list(maps.values())
    out = []
    for layer in layers:
        s, t = layer_mi(layer, x, layers[-1])
        out += [s, t]
    return out


def measure(name: str, shape: tuple[int, int, int], args: argparse.Namespace) -> dict[str, object]:
    channels, height, width = shape
    torch.manual_seed(0)
    model = ConvNet(architecture(name, channels, (height, width), 10)).eval()
    x = torch.rand(args.inputs, channels, height, width) * 2 - 1
    row: dict[str, object] = {"model": name}
    results = {}
    for device in (torch.device("cuda"), torch.device("cpu")):
        torch.set_num_threads(args.threads)
        on = model.to(device)
        xs = x.to(device)
        seconds = best_of(args.repeats, lambda: mi_of(on, xs), device)
        row[f"mi_{device.type}_inputs_per_s"] = round(args.inputs / seconds, 1)
        results[device.type] = [m.cpu() for m in mi_of(on, xs)]
    row["mi_speedup"] = round(float(row["mi_cuda_inputs_per_s"]) / float(row["mi_cpu_inputs_per_s"]), 1)
    row["mi_max_difference_nats"] = float(max((a - b).abs().max() for a, b in zip(results["cuda"], results["cpu"])))
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size * args.steps, channels, height, width),
                                               dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, len(images))
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, log_every=10**6)
    for device in (torch.device("cuda"), torch.device("cpu")):
        torch.set_num_threads(args.threads)

        def train() -> None:
            torch.manual_seed(0)
            fit(ConvNet(architecture(name, channels, (height, width), 10)), images, labels, settings, seed=0,
                device=device)

        seconds = best_of(args.repeats, train, device)
        row[f"train_{device.type}_images_per_s"] = round(len(images) / seconds, 1)
    row["train_speedup"] = round(float(row["train_cuda_images_per_s"]) / float(row["train_cpu_images_per_s"]), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="good_init,deep_conv,vgg_like")
    parser.add_argument("--shape", default="1,28,28", help="C,H,W of the inputs (default Fashion-MNIST's)")
    parser.add_argument("--inputs", type=int, default=200, help="inputs per MI batch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="training batches timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False), so there is no GPU to "
              "compare with the CPU; run it on a machine with one (docs/benchmarks.md, \"GPU\")")
        return 0
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    shape = tuple(int(v) for v in args.shape.split(","))
    rows = [measure(name, shape, args) for name in args.models.split(",")]
    columns = list(rows[0])
    print(f"GPU {torch.cuda.get_device_name(0)} against {args.threads} CPU thread(s); torch {torch.__version__}")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
