"""The study's attacks behind one call, :func:`run_attack` (docs/method.md, "Attacks").

Which attacks there are, their norms and how a batch of each is crafted is :mod:`advflow.attacks.registry`'s:
FGSM, IGSM (= BIM), PGD, DeepFool (L2), C&W-L2 with binary search and EAD (L1 and elastic-net decision rules) come
from Foolbox 3, which is batched and implements each as published; JSMA and the adaptive JSMA are ours
(:mod:`advflow.attacks.jsma`), because no maintained library has a correct batched one. All attacks run in the
models' [-1, 1] input space with box bounds (-1, 1) and are untargeted in outcome: success means the model's
prediction on the adversarial input differs from the true label.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advflow.attacks import registry

log = logging.getLogger("advflow.attacks")


@dataclass
class AttackOutcome:
    """Adversarial images and per-input facts, in the order of the inputs."""

    adversarial: torch.Tensor  # (N, C, H, W) in [-1, 1], on the CPU
    logits: torch.Tensor  # (N, classes) of the model on ``adversarial``
    prediction: torch.Tensor  # (N,) argmax of ``logits``
    success: torch.Tensor  # (N,) prediction != label
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. JSMA's chosen target


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
    spec = registry.get(name)
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
        crafted, extra = spec.craft(queried, batch, truth, settings, num_classes=num_classes, device=device)
        adversarial.append(crafted.detach().cpu())
        for key, value in extra.items():
            extras.setdefault(key, []).append(value.cpu())
        done = min(first + batch_size, len(x))
        log.info("%s: %d/%d inputs (%.1f s)", name, done, len(x), time.perf_counter() - start)
    adv = torch.cat(adversarial)
    with torch.no_grad():
        logits = torch.cat([model(adv[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(adv), batch_size)])
    prediction = logits.argmax(1)
    return AttackOutcome(adversarial=adv, logits=logits, prediction=prediction, success=prediction != labels.cpu(),
                         extra={k: torch.cat(v) for k, v in extras.items()})
