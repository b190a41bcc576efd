"""Defenses and detectors against adversarial inputs (docs/method.md, "Defenses and detectors").

Every detector follows one small interface, so seed 003's MagNet and MID detectors, seed 001's dropout vote
and our information-path detector are judged the same way:

- it is **fitted on clean training data only** (:meth:`Detector.fit`);
- :meth:`Detector.score` gives one number per input, **higher = more suspicious**;
- its threshold is the ``(1 - fpr)`` quantile of its scores on clean **validation** images
  (:func:`threshold`), and an input is flagged when its score exceeds it (:func:`flagged`).

Images travel in the models' space, ``[-1, 1]`` (:func:`advflow.data.to_model_space`), as
``(N, C, H, W)`` float tensors; a detector that works on pixels in ``[0, 1]`` (MagNet's autoencoders)
converts with :func:`to_pixels` / :func:`from_pixels`.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the workflow reads the stage's settings without importing torch
    import torch


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model space ``[-1, 1]`` to pixels in ``[0, 1]``."""
    return (x + 1.0) / 2.0


def from_pixels(p: torch.Tensor) -> torch.Tensor:
    """Pixels in ``[0, 1]`` to model space ``[-1, 1]``."""
    return p * 2.0 - 1.0


def check_fpr(fpr: float) -> float:
    """``fpr`` as a float in the open interval (0, 1), or a ValueError naming the problem."""
    try:
        value = float(fpr)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a false-positive rate must be a number in (0, 1); got {fpr!r}") from error
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"a false-positive rate must be a number in (0, 1); got {fpr!r}")
    return value


def threshold(clean_scores: np.ndarray, fpr: float) -> float:
    """The ``(1 - fpr)`` quantile of the scores of clean validation inputs: flagging the inputs whose score
    exceeds it flags a share ``fpr`` of clean inputs (at most, on the validation set itself)."""
    fpr = check_fpr(fpr)
    scores = np.asarray(clean_scores, dtype=np.float64).ravel()
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError(f"a threshold needs finite scores of clean validation inputs; got {scores.size} scores, "
                         f"{int((~np.isfinite(scores)).sum())} not finite")
    return float(np.quantile(scores, 1.0 - fpr, method="higher"))


def flagged(scores: np.ndarray, limit: float) -> np.ndarray:
    """Which inputs a detector flags: score strictly above its threshold. A NaN score (a detector that could
    not score an input) is an error, not a silent "clean"."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} of {scores.size} scores are NaN; a detector must score "
                         f"every input (check the inputs for NaN and the detector's fit)")
    return scores > limit


class Detector(abc.ABC):
    """A detector of adversarial inputs: fitted on clean training data, scores inputs (higher = more
    suspicious). Subclasses keep every fitted tensor in :meth:`state_dict`, so a fitted detector is saved
    with :func:`torch.save` and loaded with ``torch.load(..., weights_only=True)``."""

    #: A short name, used in config keys and table rows (e.g. ``magnet_l1``, ``mid``).
    name: str = ""

    #: How :meth:`differentiable_score` relates to :meth:`score`, said in the adaptive tables: ``"exact"`` (the same
    #: function, differentiable), or the surrogate's name (e.g. soft histograms in place of bucketized MI).
    adaptive_surrogate: str = ""

    @abc.abstractmethod
    def score(self, x: torch.Tensor) -> np.ndarray:
        """``(N,)`` scores of ``(N, C, H, W)`` inputs in model space; higher = more suspicious."""

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float tensor, differentiable with respect to ``x`` (model space, on the detector's device): the
        score, or a surrogate that tracks it (:attr:`adaptive_surrogate`), for an adaptive attacker's loss
        (:mod:`advflow.attacks.adaptive`). A detector without one cannot face an adaptive attack."""
        raise NotImplementedError(f"detector {self.name or type(self).__name__} has no differentiable score, so no "
                                  f"adaptive attack can target it; implement differentiable_score and name its "
                                  f"adaptive_surrogate")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"detector {self.name} keeps no state; got keys {sorted(state)}")
