"""Seed 001's perturbation statistics ("Exploring Adversarial Input Spaces for Convolutional Neural Network
Defense", Section 2.2: its "Perturbation Stats" class): an adversarial set beside its originals, the perturbations
r = x' − x in pixel units ([0, 1]; our model space [-1, 1] is halved), summary tables of the adversarial images and
of the perturbations (mean, std, max, min; overall and per original class i → adversarial class j), the inputs'
‖r‖₁ and ‖r‖₂, and selection by original and adversarial class.

Which inputs count: by default the **successful** ones (the model's class after the attack differs from the
label; the seed's adversarial images), so class pairs i → j have i ≠ j; ``successful=False`` keeps every attacked
input (a failed one has r = 0 where the attack left it unchanged). Every table says how many inputs it holds.
Imports no torch: tables and figures of a finished run are cheap.

>>> stats = PerturbationStats.from_files("results/fashion_mnist/adv/good_init/fgsm.h5",
...                                      "results/fashion_mnist/inputs/normal_test.h5")
>>> stats.summary()          # two rows: adversarial images, perturbations
>>> stats.select(original=1, adversarial=2).norms()["l2"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advflow.workflow.io import open_h5

#: The statistics of every summary row, in order.
STATISTICS = ("mean", "std", "max", "min")
#: Summary table columns: what the row describes, how many inputs, then :data:`STATISTICS`.
SUMMARY_COLUMNS = ("of", "inputs", *STATISTICS)
PAIR_COLUMNS = ("original", "adversarial", "inputs", *(f"{kind}_{s}" for kind in ("image", "perturbation")
                                                        for s in STATISTICS), "mean_l1", "mean_l2")


def to_pixels(model_space: np.ndarray) -> np.ndarray:
    """[-1, 1] model space -> [0, 1] pixels, float64."""
    return (np.asarray(model_space, dtype=np.float64) + 1.0) / 2.0


def _statistics(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return dict.fromkeys(STATISTICS, math.nan)
    return {"mean": float(values.mean()), "std": float(values.std()), "max": float(values.max()),
            "min": float(values.min())}


@dataclass(frozen=True)
class PerturbationStats:
    """An adversarial set and its originals, both ``(N, C, H, W)`` pixels in [0, 1] (float64), with the inputs'
    labels (original class), the model's class after the attack and whether the attack succeeded."""

    original: np.ndarray
    adversarial: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    success: np.ndarray
    name: str = "set"

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.original.shape != self.adversarial.shape or self.original.ndim != 4:
            raise ValueError(f"{self.name}: originals {self.original.shape} and adversarials {self.adversarial.shape} "
                             f"must both be (N, C, H, W)")
        for name in ("original", "predictions", "success"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.name}: {name} has {len(getattr(self, name))} entries, labels {n}; one per "
                                 f"input")
        for name in ("original", "adversarial"):
            values = getattr(self, name)
            if values.size and (not np.isfinite(values).all() or values.min() < -1e-6 or values.max() > 1 + 1e-6):
                raise ValueError(f"{self.name}: {name} images must be finite pixels in [0, 1]")

    # --- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_files(cls, set_path: str | Path, seeds_path: str | Path, *, name: str | None = None
                   ) -> PerturbationStats:
        """An adversarial-set file (:mod:`advflow.attacks.sets` layout) and the profile of its seeds (``images``,
        ``indices``; the study's ``inputs/normal_test.h5``, the defense stage's ``defense/inputs/seeds.h5``)."""
        with open_h5(set_path) as h5:
            adversarial = h5["adversarial"][:]
            labels, predictions = h5["labels"][:].astype(np.int64), h5["pred_after"][:].astype(np.int64)
            success, indices = h5["success"][:].astype(bool), h5["indices"][:]
        with open_h5(seeds_path) as h5:
            images, seed_indices = h5["images"][:], h5["indices"][:]
        if not np.array_equal(indices, seed_indices):
            raise ValueError(f"{set_path}: its inputs (indices) are not the seeds of {seeds_path}; pass the profile "
                             f"the set was crafted from")
        original = images.astype(np.float64) / 255.0
        if original.ndim == 4 and original.shape[-1] in (1, 3) and original.shape[1] not in (1, 3):
            original = original.transpose(0, 3, 1, 2)
        return cls(original, to_pixels(adversarial), labels, predictions, success, name or Path(set_path).stem)

    # --- selection --------------------------------------------------------------------------------------------

    @property
    def perturbation(self) -> np.ndarray:
        """r = x' − x in pixel units, ``(N, C, H, W)``."""
        return self.adversarial - self.original

    def select(self, original: int | None = None, adversarial: int | None = None, *,
               successful: bool = True) -> PerturbationStats:
        """The inputs of original class ``original`` made into class ``adversarial`` (None: any), successful ones
        only unless ``successful`` is False."""
        keep = self.success.copy() if successful else np.ones(len(self.labels), dtype=bool)
        if original is not None:
            keep &= self.labels == original
        if adversarial is not None:
            keep &= self.predictions == adversarial
        return PerturbationStats(self.original[keep], self.adversarial[keep], self.labels[keep],
                                 self.predictions[keep], self.success[keep], self.name)

    def __len__(self) -> int:
        return len(self.labels)

    # --- statistics -------------------------------------------------------------------------------------------

    def norms(self) -> dict[str, np.ndarray]:
        """Each input's ‖r‖₁ and ‖r‖₂ (pixel units)."""
        flat = self.perturbation.reshape(len(self), int(np.prod(self.perturbation.shape[1:])))
        return {"l1": np.abs(flat).sum(1), "l2": np.sqrt((flat ** 2).sum(1))}

    def summary(self, *, successful: bool = True) -> list[dict[str, Any]]:
        """Mean, std, max and min over every pixel of the adversarial images and of the perturbations."""
        chosen = self.select(successful=successful)
        return [{"of": "adversarial images", "inputs": len(chosen), **_statistics(chosen.adversarial)},
                {"of": "perturbations", "inputs": len(chosen), **_statistics(chosen.perturbation)},
                {"of": "original images", "inputs": len(chosen), **_statistics(chosen.original)}]

    def pairs(self) -> list[tuple[int, int]]:
        """The (original, adversarial) class pairs of the successful inputs, sorted."""
        chosen = self.select()
        return sorted({(int(i), int(j)) for i, j in zip(chosen.labels, chosen.predictions)})

    def by_class_pair(self, classes: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One row per ordered pair i → j (i ≠ j; every pair of ``classes`` when given, else the pairs that occur)
        over the successful inputs: how many, the statistics of their adversarial images and perturbations, and
        their mean ‖r‖₁ and ‖r‖₂. A pair with no input has ``inputs`` 0 and NaN statistics ("none" in the
        report), never a made-up number."""
        pairs = ([(i, j) for i in classes for j in classes if i != j] if classes is not None else self.pairs())
        rows = []
        for i, j in pairs:
            chosen = self.select(i, j)
            norms = chosen.norms()
            row: dict[str, Any] = {"original": i, "adversarial": j, "inputs": len(chosen)}
            for kind, values in (("image", chosen.adversarial), ("perturbation", chosen.perturbation)):
                row.update({f"{kind}_{k}": v for k, v in _statistics(values).items()})
            row["mean_l1"] = float(norms["l1"].mean()) if len(chosen) else math.nan
            row["mean_l2"] = float(norms["l2"].mean()) if len(chosen) else math.nan
            rows.append(row)
        return rows

    def mean_images(self, original: int, adversarial: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The mean adversarial image and the mean perturbation of the successful inputs i → j, ``(C, H, W)``;
        (None, None) when there is none."""
        chosen = self.select(original, adversarial)
        if not len(chosen):
            return None, None
        return chosen.adversarial.mean(0), chosen.perturbation.mean(0)
