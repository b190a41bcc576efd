"""Untargeted DeepFool (L2) and C&W-L2: advflow's run_attack (Foolbox 3) vs. torchattacks, same model and inputs.

Model and inputs are those of ``jsma_vs_torchattacks.py`` (its helpers are imported): a ``deep_conv``
ConvNet on 1x28x28 inputs with 10 classes, seeded with 0 and trained for 2 epochs on 2,000 generated
grid-blob images (advflow.models.training.fit); the ``--inputs`` seeds (default 32) are generated with another
seed and are all classified correctly. Success is untargeted: the prediction on the adversarial input
differs from the true label.

torchattacks works in [0, 1]; it gets the same model behind an input rescale (``FromUnitBox``: x01 * 2 - 1)
and the seeds mapped to (x + 1) / 2. Its perturbations are multiplied by 2, so every L2 norm below is in
the models' [-1, 1] space, measured on the successful inputs only (``mean_l2_successful``) and on the
inputs both attacks fooled (``mean_l2_both_genuinely_successful``, the like-for-like figure).

DeepFool: steps = 50, overshoot = 0.02 in both, all 10 classes as candidates (``candidates`` = 10). The
attack is invariant to the input scale, so both solve the same problem. Known differences, which the
figures include: torchattacks attacks one image at a time with one backward pass per class and applies
the overshoot to each step (we: batched, overshoot on the accumulated perturbation, as Foolbox does).

C&W-L2: advflow runs Foolbox's attack with ``{"binary_search_steps": 5, "steps": 100, "stepsize": 0.01,
"kappa": 0, "c": 1}``: up to 5 runs of 100 Adam steps, c starting at 1 and multiplied by 10 after a run
that found no adversarial input, else bisected. torchattacks' CW has **no binary search**: one run of at
most 100 Adam steps at a fixed c, so it does up to 5x less work and its speedup is not like for like.
Both optimise w with x = tanh(w) (ours in [-1, 1], theirs (tanh(w) + 1) / 2 in [0, 1]), so w, and with
it Adam's step size (lr = stepsize = 0.01), is the same in both spaces. The distance term is not:
||d||^2 in [-1, 1] is 4 ||d01||^2, so our objective ||d||^2 + c f equals 4 (||d01||^2 + c / 4 f) and
torchattacks at c = 0.25 solves exactly the problem of one Foolbox run at c = 1 (Adam ignores the
constant factor). Two C&W comparisons are reported: ``cw``, the settings above against torchattacks' CW at
its documented c = 1 (which weighs misclassification 4x more than our first run), and ``cw_matched``, a
single Foolbox run (``binary_search_steps`` = 1, c = 1) against torchattacks at c = 0.25: the same
objective and the same step budget, so its speedup is like for like. Other differences: both
stop a run early when the loss stops decreasing (checked every 10 steps); torchattacks maps pixels at
exactly 0 or 1 to w = -inf / +inf, which freezes them (Foolbox scales by 0.999999 first), and here about
1 in 60 background pixels is 0.

Foolbox's C&W returns an all-zero image (mid-grey in [-1, 1]) for every input on which it found no
adversarial; run_attack records the seed there instead (success False), as torchattacks does. The
``all_zero_outputs`` count checks that no grey image is left, and the ``genuine_`` figures (which leave
all-zero outputs out) equal the plain ones.

Each attack runs once, on the CPU, in this process, with ``--threads`` threads (default 1); the output
is JSON.

    pip install --no-deps torchattacks   # its package pins an old requests; --no-deps keeps ours
    python benchmarks/deepfool_cw_vs_torchattacks.py [--threads 1] [--inputs 32]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import NamedTuple

import numpy as np
import torch

# Run as a script, this file's folder is on sys.path; importing the JSMA benchmark also puts src/ there.
from jsma_vs_torchattacks import NUM_CLASSES, FromUnitBox, grid_blobs

from advflow.attacks.library import run_attack
from advflow.data import to_model_space
from advflow.models.architectures import ConvNet, architecture
from advflow.models.training import TrainSettings, fit

DEEPFOOL = {"steps": 50, "overshoot": 0.02, "candidates": NUM_CLASSES}
CW = {"binary_search_steps": 5, "steps": 100, "stepsize": 0.01, "kappa": 0.0, "c": 1.0}
#: The same problem as one run at CW's c, in [0, 1] space (see the docstring); no binary search there.
CW_SINGLE_RUN = {**CW, "binary_search_steps": 1}
#: (name, advflow's C&W settings, torchattacks' c)
CW_COMPARISONS = (("cw", CW, CW["c"]), ("cw_matched", CW_SINGLE_RUN, CW["c"] / 4))


def model_and_seeds(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The trained model and ``n`` correctly classified seeds (in [-1, 1]) with their labels."""
    train_x, train_y = grid_blobs(2000, seed=0)
    torch.manual_seed(0)
    net = ConvNet(architecture("deep_conv", 1, (28, 28), NUM_CLASSES))
    settings = TrainSettings(epochs=2, batch_size=64, lr=3e-3, log_every=1000)
    fit(net, train_x, train_y, settings, seed=0, device=torch.device("cpu"))
    net.eval()
    candidates, truth = grid_blobs(4 * n, seed=1)
    inputs = torch.as_tensor(to_model_space(candidates.astype(np.float32)))
    truth = torch.as_tensor(truth)
    with torch.no_grad():
        keep = torch.nonzero(net(inputs).argmax(1) == truth).flatten()[:n]
    if len(keep) < n:
        raise SystemExit(f"only {len(keep)} correctly classified seeds; train longer")
    return net, inputs[keep], truth[keep]


class Measured(NamedTuple):
    figures: dict  # the attack's entry in the report
    genuine: torch.Tensor  # (N,) success, all-zero outputs left out
    l2: torch.Tensor  # (N,) perturbation norms in [-1, 1] space


def measure(seconds: float, adversarial: torch.Tensor, success: torch.Tensor, l2: torch.Tensor,
            in_box: bool) -> Measured:
    """One attack's figures; ``adversarial`` in [-1, 1] space. An all-zero output is Foolbox's "no
    adversarial found" (see the docstring); ``genuine`` success leaves those out."""
    all_zero = adversarial.flatten(1).abs().amax(1) == 0
    genuine = success & ~all_zero
    return Measured({"seconds": round(seconds, 3), "success_rate": rate(success),
                     "mean_l2_successful": mean(l2[success]), "all_zero_outputs": int(all_zero.sum()),
                     "genuine_success_rate": rate(genuine), "mean_l2_genuine_successful": mean(l2[genuine]),
                     "outputs_in_box": in_box}, genuine, l2)


def rate(flags: torch.Tensor) -> float:
    return round(float(flags.float().mean()), 4)


def mean(values: torch.Tensor) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def compare(ours: Measured, theirs: Measured) -> dict:
    """Side-by-side figures of one advflow run and one torchattacks run."""
    both = ours.genuine & theirs.genuine
    return {
        "advflow": ours.figures, "torchattacks": theirs.figures, "inputs_both_genuinely_successful": int(both.sum()),
        "mean_l2_both_genuinely_successful": {"advflow": mean(ours.l2[both]), "torchattacks": mean(theirs.l2[both])},
        "speedup_advflow_over_torchattacks": round(theirs.figures["seconds"] / ours.figures["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    import torchattacks

    model, x, y = model_and_seeds(args.inputs)
    unit_model = FromUnitBox(model).eval()
    x01 = (x + 1) / 2

    def advflow(name: str, settings: dict) -> Measured:
        start = time.perf_counter()
        outcome = run_attack(name, model, x, y, settings, num_classes=NUM_CLASSES)
        seconds = time.perf_counter() - start
        adversarial = outcome.adversarial
        in_box = bool(adversarial.min() >= -1 and adversarial.max() <= 1)
        return measure(seconds, adversarial, outcome.success, (adversarial - x).flatten(1).norm(dim=1), in_box)

    def torchattacks_run(attack) -> Measured:
        start = time.perf_counter()
        adversarial01 = attack(x01, y)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            success = unit_model(adversarial01).argmax(1) != y
        l2 = 2 * (adversarial01 - x01).flatten(1).norm(dim=1)  # [0, 1] -> [-1, 1] space
        in_box = bool(adversarial01.min() >= 0 and adversarial01.max() <= 1)
        return measure(seconds, adversarial01 * 2 - 1, success, l2, in_box)

    deepfool_theirs = {"steps": DEEPFOOL["steps"], "overshoot": DEEPFOOL["overshoot"]}
    runs = [{"attack": "deepfool", "advflow_settings": DEEPFOOL, "torchattacks_settings": deepfool_theirs,
             **compare(advflow("deepfool", DEEPFOOL),
                       torchattacks_run(torchattacks.DeepFool(unit_model, **deepfool_theirs)))}]
    for label, settings, c in CW_COMPARISONS:
        cw_theirs = {"c": c, "kappa": settings["kappa"], "steps": settings["steps"], "lr": settings["stepsize"]}
        runs.append({"attack": label, "advflow_settings": settings,
                     "torchattacks_settings": {**cw_theirs, "binary_search": False},
                     **compare(advflow("cw", settings), torchattacks_run(torchattacks.CW(unit_model, **cw_theirs)))})

    import foolbox

    report = {
        "benchmark": "deepfool_cw_vs_torchattacks",
        "model": "deep_conv, 1x28x28, 10 classes, seed 0, 2 epochs on 2000 generated grid-blob images",
        "inputs": args.inputs, "features": int(x[0].numel()), "threads": args.threads,
        "l2_space": "[-1, 1] (torchattacks' [0, 1] perturbations x 2)",
        "torch": torch.__version__, "foolbox": foolbox.__version__, "torchattacks": torchattacks.__version__,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
