"""Seed 001's dropout vote (Section 3.2; docs/method.md, "Defenses and detectors"): K stochastic forward passes of the
classifier with dropout active, the plurality class is the prediction; the spread of the votes,
1 − (plurality votes) / K, scores how suspicious an input is (the seed's Fig. 5: an adversarial input's votes
scatter, a clean one's agree). Its reference is Feinman et al. 2017's Bayesian-uncertainty detector.

Which dropout: the classifier's own dropout layers at their own rates (``rate=None``), or every one of them at
``rate``; a classifier with no dropout layer gets dropout at ``rate`` on the output of each hidden layer (every
conv and linear layer but the last), "between layers" as the seed says. A classifier with no dropout layer and no
rate is refused, naming the key to set. Everything else stays in eval mode (batch norm uses its running
statistics). Votes are seeded: the same seed, inputs and batch size give the same votes; ties go to the lowest
class. For our ConvNets the layers before the first dropout layer are deterministic, so they run once per input
and only the rest runs K times (the same votes as K whole passes, tested; several times faster on good_init, whose
first five conv layers run at full resolution).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advflow.defenses import Detector

#: The config key a rate comes from, named in errors.
RATE_KEY = "defense.dropout_vote.rate"


def check_vote_settings(k: int, rate: float | None) -> None:
    """K a positive integer, the rate None or in [0, 1): a ValueError naming the key otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"defense.dropout_vote.k: the number of votes must be a positive integer; got {k!r}")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or
                             not (math.isfinite(rate) and 0.0 <= rate < 1.0)):
        raise ValueError(f"{RATE_KEY}: a dropout rate must be a number in [0, 1) or null (the model's own); "
                         f"got {rate!r}")


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


class DropoutVote(Detector):
    """The dropout vote of ``classifier`` (model-space inputs ``(N, C, H, W)`` to logits)."""

    name = "dropout_vote"

    def __init__(self, classifier: nn.Module, k: int = 50, rate: float | None = None, *, seed: int = 0,
                 batch_size: int = 256, split: bool = True) -> None:
        check_vote_settings(k, rate)
        self.classifier, self.k, self.rate, self.seed, self.batch_size = classifier, int(k), rate, int(seed), batch_size
        self.layers = dropout_layers(classifier)
        if not self.layers and rate is None:
            raise ValueError(f"{type(classifier).__name__} has no dropout layer, so it has no rate of its own; set "
                             f"{RATE_KEY} (e.g. 0.25) to add dropout after each hidden layer")
        self.hidden = [] if self.layers else [m for m in classifier.modules()
                                              if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
        self.first_random = self._first_random_block() if split and self.layers else None

    def _first_random_block(self) -> int | None:
        """For a :class:`~advflow.models.architectures.ConvNet`, the index of the first block with a dropout layer (the number of
        blocks when only the head has one); None for any other model (every pass runs whole)."""
        blocks = getattr(self.classifier, "blocks", None)
        if blocks is None or not hasattr(self.classifier, "head"):
            return None
        for index, block in enumerate(blocks):
            if not (hasattr(block, "output_maps") and hasattr(block, "dropout")):
                return None
            if isinstance(block.dropout, nn.modules.dropout._DropoutNd):
                return index
        return len(blocks)

    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic part: the blocks before the first dropout layer, and that block up to its dropout."""
        blocks = self.classifier.blocks
        for block in blocks[:self.first_random]:
            x = block(x)
        return blocks[self.first_random].output_maps(x) if self.first_random < len(blocks) else x

    def _suffix(self, h: torch.Tensor) -> torch.Tensor:
        blocks = self.classifier.blocks
        if self.first_random < len(blocks):
            h = blocks[self.first_random].dropout(h)
            for block in blocks[self.first_random + 1:]:
                h = block(h)
        return self.classifier.head(h)

    @contextlib.contextmanager
    def _stochastic(self) -> Iterator[None]:
        """Dropout on (at the configured rate), everything else in eval mode; restored afterwards."""
        was_training = {m: m.training for m in self.classifier.modules()}
        rates = {m: m.p for m in self.layers}
        hooks = []
        self.classifier.eval()
        try:
            for m in self.layers:
                m.train()
                if self.rate is not None:
                    m.p = float(self.rate)
            for m in self.hidden:
                hooks.append(m.register_forward_hook(lambda _m, _i, out: F.dropout(out, self.rate, training=True)))
            yield
        finally:
            for h in hooks:
                h.remove()
            for m, p in rates.items():
                m.p = p
            for m, training in was_training.items():
                m.train(training)

    def votes(self, x: torch.Tensor) -> np.ndarray:
        """``(N, K)`` classes, one column per stochastic pass; seeded."""
        device = next(self.classifier.parameters()).device
        out = np.empty((len(x), self.k), dtype=np.int64)
        with self._stochastic(), torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda"
                                                                           else []):
            torch.manual_seed(self.seed)
            for first in range(0, len(x), self.batch_size):
                batch = x[first:first + self.batch_size].to(device).float()
                if self.first_random is not None:
                    h = self._prefix(batch)
                    for vote in range(self.k):
                        out[first:first + len(batch), vote] = self._suffix(h).argmax(1).cpu().numpy()
                    continue
                for vote in range(self.k):
                    out[first:first + len(batch), vote] = self.classifier(batch).argmax(1).cpu().numpy()
        return out

    @staticmethod
    def tally(votes: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(plurality class, plurality share) of ``(N, K)`` votes; ties go to the lowest class."""
        counts = np.stack([np.bincount(row, minlength=num_classes) for row in votes]) if len(votes) else \
            np.zeros((0, num_classes), dtype=np.int64)
        return counts.argmax(1), counts.max(1, initial=0) / max(votes.shape[1], 1)

    def predict_and_score(self, x: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(votes ``(N, K)``, plurality class, vote spread 1 − plurality share)."""
        votes = self.votes(x)
        plurality, share = self.tally(votes, num_classes)
        return votes, plurality, 1.0 - share

    def score(self, x: torch.Tensor) -> np.ndarray:
        votes = self.votes(x)
        return 1.0 - self.tally(votes, int(votes.max(initial=0)) + 1)[1]
