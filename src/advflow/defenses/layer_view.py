"""The information-path detector's per-layer view (docs/method.md, "Defenses and detectors"): which IIP and OIP
values separate clean from adversarial inputs best, per attack, as rows and as a heat map. Apart from
:mod:`advflow.defenses.infopath` so that building the detector (the registry) does not import the defense stage's
metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from advflow.defenses.infopath import PATHS, _check_values



def layer_separation(clean_values: Any, adversarial_values: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per value column, how well it alone separates clean from adversarial inputs, best first.

    Each row: ``column`` (index), ``value`` (name), ``path`` (iip/oip), ``layer``, ``auc`` = the ROC AUC of the raw
    value, adversarial positive (P(adversarial value > clean value), :func:`advflow.defenses.metrics.roc_auc`),
    ``separation`` = max(auc, 1 − auc) (direction-free: 0.5 none, 1 perfect), ``direction`` (``higher``,
    ``lower`` or ``none``: where the attack moves the value), ``constant_on_clean`` (the detector leaves such a
    column out), and the counts. The raw value's AUC needs no fitted reference (no in-sample bias) and keeps the
    direction; a change of spread alone shows as ≈ 0.5 here, while the detector's two-sided tails see it (the
    AUC of :meth:`advflow.defenses.infopath.InfoPathDetector.layer_scores` on held-out inputs measures that)."""
    from advflow.defenses.metrics import roc_auc

    clean = _check_values(clean_values, "clean values")
    adversarial = _check_values(adversarial_values, "adversarial values", clean.shape[1])
    names = [str(name) for name in names]
    if len(names) != clean.shape[1]:
        raise ValueError(f"{len(names)} names for {clean.shape[1]} value columns")
    if clean.shape[0] == 0 or adversarial.shape[0] == 0:
        raise ValueError(f"layer_separation needs clean and adversarial inputs; got {clean.shape[0]} and "
                         f"{adversarial.shape[0]}")
    rows = []
    for j, name in enumerate(names):
        auc = roc_auc(clean[:, j], adversarial[:, j])
        path, _, layer = name.partition("_")
        if path not in PATHS:
            path, layer = "", name
        rows.append({"column": j, "value": name, "path": path, "layer": layer, "auc": auc,
                     "separation": max(auc, 1.0 - auc),
                     "direction": "higher" if auc > 0.5 else "lower" if auc < 0.5 else "none",
                     "constant_on_clean": bool(np.ptp(clean[:, j]) == 0), "clean": clean.shape[0],
                     "adversarial": adversarial.shape[0]})
    return sorted(rows, key=lambda row: (-row["separation"], row["column"]))


def layer_separation_figure(rows_by_attack: Mapping[str, Sequence[Mapping[str, Any]]], dpi: int) -> Any:
    """Heat map, attacks (rows) × value columns in network order (columns), of each value's ROC AUC clean vs
    adversarial (:func:`layer_separation`); a diverging scale centred on 0.5, each cell's AUC written in it, each
    attack's best-separating value boxed. Returns an :class:`advflow.workflow.figures.Figure`
    (``infopath_layers.png``; its ``image`` is the PNG, with the PDF in ``image.pdf``)."""
    from matplotlib.patches import Rectangle

    from advflow.workflow.figures import Figure, new_figure, render, style

    attacks = [attack for attack, rows in rows_by_attack.items() if rows]
    if not attacks:
        raise ValueError("layer_separation_figure needs the rows of at least one attack (layer_separation)")
    columns: dict[int, str] = {}
    for attack in attacks:
        for row in rows_by_attack[attack]:
            columns.setdefault(int(row["column"]), str(row["value"]))
    order = sorted(columns)
    names = [columns[c] for c in order]
    grid = np.full((len(attacks), len(order)), math.nan)
    constant = np.zeros(len(order), dtype=bool)
    best = []
    for i, attack in enumerate(attacks):
        rows = rows_by_attack[attack]
        for row in rows:
            j = order.index(int(row["column"]))
            grid[i, j] = float(row["auc"])
            constant[j] |= bool(row.get("constant_on_clean", False))
        top = max(rows, key=lambda row: (float(row["separation"]), -int(row["column"])))
        best.append(order.index(int(top["column"])))
    counts = sorted({(int(r.get("clean", 0)), int(r.get("adversarial", 0))) for a in attacks
                     for r in rows_by_attack[a]})
    with style():
        figure = new_figure(max(6.0, 1.6 + 0.62 * len(order)), max(3.2, 1.9 + 0.5 * len(attacks)))
        ax = figure.subplots()
        image = ax.imshow(grid, cmap="RdBu_r", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(order)):
                if math.isfinite(grid[i, j]):
                    dark = abs(grid[i, j] - 0.5) > 0.3
                    ax.text(j, i, f"{grid[i, j]:.2f}" + ("†" if constant[j] else ""), ha="center", va="center",
                            fontsize=9, color="white" if dark else "black")
            ax.add_patch(Rectangle((best[i] - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=2.2))
        ax.set_xticks(range(len(order)), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=10)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=10)
        ax.set_xlabel("value (IIP / OIP of each conv layer, in network order)", fontsize=10)
        ax.set_ylabel("attack", fontsize=10)
        ax.grid(False)
        bar = figure.colorbar(image, ax=ax, ticks=[0.0, 0.25, 0.5, 0.75, 1.0])
        bar.set_label("ROC AUC, adversarial vs clean\n(> 0.5: value raised, < 0.5: lowered)", fontsize=10)
        bar.ax.tick_params(labelsize=10)
        png = render(figure, dpi)
    sizes = ", ".join(f"{c} clean / {a} adversarial" for c, a in counts)
    caption = ("Which layers separate clean from adversarial inputs, per attack: each cell is the ROC AUC of one "
               "value (the IIP or OIP of one conv layer) alone, adversarial inputs positive; 0.5 (white) = no "
               "separation, red = the attack raises the value, blue = it lowers it; the boxed cell is the attack's "
               f"best-separating value. Inputs: {sizes}."
               + (" †: constant on the clean inputs, left out by the detector." if constant.any() else ""))
    return Figure("infopath_layers.png", png, caption)
