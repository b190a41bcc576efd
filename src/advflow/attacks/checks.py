"""Checks of the input files the stages read: a profile (``inputs/normal_*.h5``) and an adversarial or
control set (``adv/{target}/{attack}.h5``). Each runs on the open file before it is used; a damaged file
(wrong shapes, rows that disagree, non-finite or out-of-box images) is moved aside by
:func:`advflow.workflow.io.quarantine`, so the next plain run writes it again. Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advflow.workflow.io import check_h5, quarantine

NORMS = ("l0", "l1", "l2", "linf")


def check_profile(h5: Any, path: str | Path) -> int:
    """Check an open profile file (:func:`select_profiles`) before it is used and return its number of images:
    uint8 images (N, C, H, W), a label and an index for each. A damaged file is moved aside, so the next run
    selects the profile again."""
    n = check_h5(h5, path, datasets={"images": (None, None, None, None), "labels": (None,), "indices": (None,)})
    if h5["images"].dtype != np.uint8:
        raise quarantine(path, f"images are {h5['images'].dtype}, a profile holds uint8 pixels",
                         rebuilt_by="rule select_inputs")
    return n


#: The per-input datasets of an adversarial (or control) set file, with their shapes: the first two are
#: required (every reader needs them), the others are checked when present.
SET_DATASETS: dict[str, tuple[None, ...]] = {
    "adversarial": (None, None, None, None), "labels": (None,), "indices": (None,), "pred_before": (None,),
    "pred_after": (None,), "success": (None,), "confidence": (None,),
    **{f"norms_{v}/{k}": (None,) for v in ("r", "x") for k in NORMS},
}
REQUIRED = ("adversarial", "labels")


def check_set(h5: Any, path: str | Path, required: tuple[str, ...] = REQUIRED) -> int:
    """Check an open adversarial set file before it is used and return its number of inputs: the datasets of
    :data:`SET_DATASETS` with one entry per input (``required``: what the reader needs), finite
    adversarial images inside the models' box [-1, 1]. A damaged file is moved aside
    (:func:`advflow.workflow.io.quarantine`), so the next run crafts the set again."""
    shapes = {name: shape for name, shape in SET_DATASETS.items() if name in required or name in h5}
    n = check_h5(h5, path, datasets=shapes, finite=tuple(k for k in ("confidence",) if k in shapes))
    if n and "adversarial" in shapes:
        adversarial = h5["adversarial"][...]  # read once: finite, then inside the box
        bad = int((~np.isfinite(adversarial)).sum())
        if bad:
            raise quarantine(path, f"'adversarial' holds {bad} NaN or infinite values", rebuilt_by="rule attack (or control)")
        low, high = float(adversarial.min()), float(adversarial.max())
        if low < -1 - 1e-4 or high > 1 + 1e-4:
            raise quarantine(path, f"adversarial images span [{low:.3g}, {high:.3g}], outside the box [-1, 1]",
                             rebuilt_by="rule attack (or control)")
    return n
