"""Targeted JSMA: advflow's batched attack vs. torchattacks' JSMA, same model, inputs, targets, theta, gamma.

The model is a ``deep_conv`` ConvNet on 1x28x28 inputs (Fashion-MNIST's shape) with 10 classes, seeded
with 0 and trained for 2 epochs on 2,000 generated images (advflow.models.training.fit): a dark noisy
background with one bright 4x4 blob whose cell in a 2x5 grid is the class. No dataset is needed. The 32
seeds are generated the same way with another seed and are all classified correctly; each gets a
seeded random target class other than its label.

torchattacks works in [0, 1]; it gets the same model behind an input rescale (x01 * 2 - 1), the seeds
mapped to (x + 1) / 2 and theta halved (theta = 0.1 in [-1, 1] is 0.05 in [0, 1]), so both attacks
solve the same problem. Known differences of the two algorithms, which the figures include:
torchattacks takes the Jacobian of the logits (we: of softmax(Z / T), T = 1, one backward pass and a
top-2 pair search, exact because the softmax Jacobian's rows sum to zero), attacks one image at a time,
removes a feature from the search domain once it is picked (so do we: both pixels of a picked pair leave
it, as in cleverhans) and allows ceil(gamma * F / 2)
iterations (we: floor). L0 is the number of changed pixels, counted in each attack's own space.

Two settings (theta in [-1, 1] space : gamma) run by default: ``0.1:0.1``, the study's JSMA (docs/method.md), and
``2.0:0.1``, Papernot et al.'s theta = +1 in [0, 1], where a picked feature jumps to the bound, so the
two algorithms differ only in the Jacobian (logits vs softmax) and the budget rounding. This model,
whose classes are 16-pixel blobs, resists the first setting: both attacks fail on every input there,
which times them at their full iteration budget.

Both attacks run on the CPU, in this process, with ``--threads`` threads (default 1). Per setting they
alternate ``--repeats`` times (default 3), after an untimed warm-up (ours once, theirs on one input):
ours, theirs, ours. Each of their runs is compared with the mean of our two runs around it, so that a
machine shared with other work slows both sides of a ratio alike; the reported speed-up is the median
of these ratios, and the reported seconds are medians (every run is listed too). Absolute seconds on a
shared machine mean little; the ratios are the figure. Both attacks are deterministic: the success
rates and L0 are those of every repetition (ours is checked). The output is JSON.

    pip install --no-deps torchattacks   # its package pins an old requests; --no-deps keeps ours
    python benchmarks/jsma_vs_torchattacks.py [--threads 1] [--repeats 3] [--settings 0.1:0.1 2.0:0.1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.attacks.jsma import jsma  # noqa: E402
from advflow.data import to_model_space  # noqa: E402
from advflow.models.architectures import ConvNet, architecture  # noqa: E402
from advflow.models.training import TrainSettings, fit  # noqa: E402

NUM_CLASSES = 10


def grid_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 1, 28, 28) images: noise in [0, 60) plus one 4x4 blob in [180, 256) placed in the cell
    (label // 5, label % 5) of a 2x5 grid of 14x5-pixel cells."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.integers(0, 60, (n, 1, 28, 28))
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        y = row * 14 + rng.integers(0, 14 - 4 + 1)
        x = col * 5 + rng.integers(0, 5 - 4 + 1)
        images[i, 0, y:y + 4, x:x + 4] = rng.integers(180, 256, (4, 4))
    return images.astype(np.uint8), labels


class FromUnitBox(nn.Module):
    """The model seen from [0, 1] inputs, as torchattacks expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.model(x01 * 2 - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating repetitions (ours, theirs, ours); medians are reported")
    parser.add_argument("--settings", nargs="+", default=["0.1:0.1", "2.0:0.1"],
                        help="theta:gamma pairs, theta in [-1, 1] space")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    import torchattacks

    images, labels = grid_blobs(2000, seed=0)
    torch.manual_seed(0)
    model = ConvNet(architecture("deep_conv", 1, (28, 28), NUM_CLASSES))
    fit(model, images, labels, TrainSettings(epochs=2, batch_size=64, lr=3e-3, log_every=1000), seed=0,
        device=torch.device("cpu"))
    model.eval()

    pool, pool_labels = grid_blobs(4 * args.inputs, seed=1)
    x_pool = torch.as_tensor(to_model_space(pool.astype(np.float32)))
    with torch.no_grad():
        correct = (model(x_pool).argmax(1) == torch.as_tensor(pool_labels)).numpy()
    chosen = np.flatnonzero(correct)[:args.inputs]
    if len(chosen) < args.inputs:
        raise SystemExit(f"only {len(chosen)} correctly classified seeds; train longer")
    x = x_pool[chosen]
    y = torch.as_tensor(pool_labels[chosen])
    offsets = torch.as_tensor(np.random.default_rng(2).integers(1, NUM_CLASSES, args.inputs))
    target = (y + offsets) % NUM_CLASSES

    unit_model = FromUnitBox(model).eval()
    x01 = (x + 1) / 2
    runs = []
    for setting in args.settings:
        theta, gamma = (float(v) for v in setting.split(":"))
        attack = torchattacks.JSMA(unit_model, theta=theta / 2, gamma=gamma)
        attack.set_mode_targeted_by_label(quiet=True)  # the labels passed to the attack are the targets
        # The machine may be shared: alternate the two attacks, ours before and after each of theirs,
        # and compare each of their runs with the mean of ours around it; the medians are reported.
        # Untimed warm-up: the first calls in a process also pay for oneDNN's kernel generation, once per
        # convolution shape (ours: one per number of inputs still running; theirs: batches of one).
        jsma(model, x, target, theta=theta, gamma=gamma)
        attack(x01[:1], target[:1])
        ours_seconds, theirs_seconds, ratios = [], [], []
        ours = theirs01 = None
        for _ in range(args.repeats):
            before, ours = timed(jsma, model, x, target, theta=theta, gamma=gamma)
            seconds, theirs01 = timed(attack, x01, target)
            after, ours_again = timed(jsma, model, x, target, theta=theta, gamma=gamma)
            if not torch.equal(ours_again.adversarial, ours.adversarial):
                raise SystemExit("advflow's JSMA is not deterministic")
            ours_seconds += [before, after]
            theirs_seconds.append(seconds)
            ratios.append(seconds / ((before + after) / 2))
        with torch.no_grad():
            theirs_success = unit_model(theirs01).argmax(1) == target
        runs.append({
            "theta_model_space": theta, "theta_unit_space": theta / 2, "gamma": gamma,
            "advflow": summary(ours_seconds, ours.success, ours.l0,
                               bool(ours.adversarial.min() >= -1 and ours.adversarial.max() <= 1)),
            "torchattacks_jsma": summary(theirs_seconds, theirs_success, (theirs01 != x01).flatten(1).sum(1),
                                         bool(theirs01.min() >= 0 and theirs01.max() <= 1)),
            "speedup_advflow_over_torchattacks": round(float(np.median(ratios)), 2),
            "speedup_each_repeat": [round(r, 2) for r in ratios],
        })

    report = {
        "benchmark": "jsma_vs_torchattacks",
        "model": "deep_conv, 1x28x28, 10 classes, seed 0, 2 epochs on 2000 generated grid-blob images",
        "inputs": args.inputs, "features": int(x[0].numel()), "threads": args.threads,
        "torch": torch.__version__, "torchattacks": torchattacks.__version__, "runs": runs,
    }
    print(json.dumps(report, indent=2))


def timed(run, *args, **kwargs):
    """(wall-clock seconds, result) of ``run(*args, **kwargs)``."""
    start = time.perf_counter()
    result = run(*args, **kwargs)
    return time.perf_counter() - start, result


def summary(seconds: list[float], success: torch.Tensor, l0: torch.Tensor, in_box: bool) -> dict:
    """One attack's figures; L0 counts changed pixels (in the attack's own space). ``seconds`` holds
    every timed run; the median is reported, and the runs themselves."""
    return {"seconds": round(float(np.median(seconds)), 3), "seconds_each_run": [round(t, 3) for t in seconds],
            "success_rate": round(float(success.float().mean()), 4),
            "mean_l0": round(float(l0.float().mean()), 2),
            "mean_l0_successful": round(float(l0[success].float().mean()), 2) if success.any() else None,
            "max_l0": int(l0.max()), "outputs_in_box": in_box}


if __name__ == "__main__":
    main()
