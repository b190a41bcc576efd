"""The study's attacks behind one call, :func:`run_attack` (docs/method.md, "Attacks").

FGSM, IGSM (= BIM), PGD, DeepFool (L2), C&W-L2 with binary search and EAD (L1 and elastic-net decision
rules) come from Foolbox 3, which is batched and implements each as published; JSMA and the adaptive
JSMA are ours (:mod:`advflow.attacks.jsma`), because no maintained library has a correct batched one.
All attacks run in the models' [-1, 1] input space with box bounds (-1, 1) and are untargeted in
outcome: success means the model's prediction on the adversarial input differs from the true label.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advflow.attacks.jsma import jsma_least_perturbation

log = logging.getLogger("advflow.attacks")

#: Every attack the workflow knows, with the norm its distortion is measured in (Table II's "norm").
#: ``jsma_control`` is the regular JSMA (T = 1) with ``jsma_adaptive``'s theta and gamma (the paper's Q4).
ATTACK_NORMS = {"fgsm": "linf", "igsm": "linf", "pgd": "linf", "jsma": "l0", "jsma_adaptive": "l0",
                "jsma_control": "l0", "deepfool": "l2", "cw": "l2", "ead_l1": "l1", "ead_en": "l1"}
ATTACKS = tuple(ATTACK_NORMS)
BOUNDS = (-1.0, 1.0)
_ZERO_ON_FAILURE = ("cw", "ead_l1", "ead_en")


@dataclass
class AttackOutcome:
    """Adversarial images and per-input facts, in the order of the inputs."""

    adversarial: torch.Tensor  # (N, C, H, W) in [-1, 1], on the CPU
    logits: torch.Tensor  # (N, classes) of the model on ``adversarial``
    prediction: torch.Tensor  # (N,) argmax of ``logits``
    success: torch.Tensor  # (N,) prediction != label
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. JSMA's chosen target


def _foolbox_attack(name: str, settings: dict[str, Any]) -> tuple[Any, float | None]:
    import foolbox as fb

    if name == "fgsm":
        return fb.attacks.LinfFastGradientAttack(random_start=False), settings["epsilon"]
    if name == "igsm":
        return (fb.attacks.LinfBasicIterativeAttack(abs_stepsize=settings["alpha"], steps=settings["steps"],
                                                    random_start=False), settings["epsilon"])
    if name == "pgd":
        return (fb.attacks.LinfProjectedGradientDescentAttack(abs_stepsize=settings["alpha"], steps=settings["steps"],
                                                              random_start=True), settings["epsilon"])
    if name == "deepfool":
        return (fb.attacks.L2DeepFoolAttack(steps=settings["steps"], candidates=settings.get("candidates", 10),
                                            overshoot=settings["overshoot"]), None)
    if name == "cw":
        return (fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=settings["binary_search_steps"], steps=settings["steps"],
            stepsize=settings["stepsize"], confidence=settings["kappa"], initial_const=settings["c"]), None)
    if name in ("ead_l1", "ead_en"):
        return (fb.attacks.EADAttack(
            binary_search_steps=settings["binary_search_steps"], steps=settings["steps"],
            initial_stepsize=settings["stepsize"], confidence=settings["kappa"], initial_const=settings["c"],
            regularization=settings["beta"], decision_rule="L1" if name == "ead_l1" else "EN"), None)
    raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(ATTACKS)}")


class _Heartbeat(nn.Module):
    """The model, logging a line at most every ``every`` seconds while an attack queries it: long
    attacks (C&W's binary search, JSMA's iterations) show progress inside a batch, not only after it."""

    def __init__(self, model: nn.Module, name: str, every: float = 30.0) -> None:
        super().__init__()
        self.model, self.name, self.every = model, name, every
        self.calls, self.batch, self.batches = 0, 0, 0
        self.started = self.last = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s: batch %d/%d, %d model queries so far (%.0f s)", self.name, self.batch, self.batches,
                     self.calls, now - self.started)
        return self.model(x)


def run_attack(name: str, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any], *,
               num_classes: int, device: torch.device | str = "cpu", seed: int = 0,
               batch_size: int = 100) -> AttackOutcome:
    """Attack ``x`` (N, C, H, W in [-1, 1]) with true ``labels`` on ``model``, in batches."""
    if name not in ATTACK_NORMS:
        raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(ATTACKS)}")
    model = model.to(device).eval()
    queried = _Heartbeat(model, name).eval()
    queried.batches = -(-len(x) // batch_size)
    torch.manual_seed(seed)  # PGD's random start
    adversarial, extras = [], {}
    start = time.perf_counter()
    for first in range(0, len(x), batch_size):
        batch = x[first:first + batch_size].to(device)
        truth = labels[first:first + batch_size].to(device)
        queried.batch += 1
        if name in ("jsma", "jsma_adaptive", "jsma_control"):
            result = jsma_least_perturbation(queried, batch, truth, num_classes=num_classes, theta=settings["theta"],
                                             gamma=settings["gamma"], temperature=settings.get("temperature", 1.0),
                                             clip=BOUNDS)
            adversarial.append(result.adversarial.detach().cpu())
            for key, value in (("target", result.target), ("iterations", result.iterations)):
                extras.setdefault(key, []).append(value.cpu())
        else:
            import foolbox as fb

            attack, epsilon = _foolbox_attack(name, settings)
            fmodel = fb.PyTorchModel(queried, bounds=BOUNDS, device=device)
            _, clipped, _ = attack(fmodel, batch, fb.criteria.Misclassification(truth), epsilons=epsilon)
            if name in _ZERO_ON_FAILURE:
                # Foolbox's C&W and EAD start their best-so-far from an all-zero image and return it
                # where no adversarial was found (and Foolbox then calls it a success whenever the model
                # misclassifies a blank image). An optimum of exactly zero in every pixel does not occur
                # in their tanh / shrinkage spaces, so an all-zero output marks a failed attempt: its
                # honest record is the seed itself (perturbation 0, success False).
                blank = (clipped.flatten(1) == 0).all(1) & ~(batch.flatten(1) == 0).all(1)
                clipped = torch.where(blank.view(-1, *[1] * (batch.dim() - 1)), batch, clipped)
            adversarial.append(clipped.detach().clamp(*BOUNDS).cpu())
        done = min(first + batch_size, len(x))
        log.info("%s: %d/%d inputs (%.1f s)", name, done, len(x), time.perf_counter() - start)
    adv = torch.cat(adversarial)
    with torch.no_grad():
        logits = torch.cat([model(adv[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(adv), batch_size)])
    prediction = logits.argmax(1)
    return AttackOutcome(adversarial=adv, logits=logits, prediction=prediction, success=prediction != labels.cpu(),
                         extra={k: torch.cat(v) for k, v in extras.items()})
