"""Seed 001's outputs for the workflow ("Exploring Adversarial Input Spaces for Convolutional Neural Network Defense";
docs/method.md, "Defenses and detectors"): the perturbation statistics of every adversarial set (:mod:`advflow.perturbations.statistics`),
the average-adversarial grid and its figures (:mod:`advflow.perturbations.grid`), and the dropout vote on clean inputs and on every
set (:mod:`advflow.defenses.dropout`). Files under ``results/{dataset}/seed001/``:

=====================================  ====================================================================
``perturbations/summary.csv``          per set: mean, std, max, min of its successful adversarial images, of
                                       their perturbations r = x' − x and of their originals (pixel units)
``perturbations/class_pairs.csv``      per set and class pair i → j that occurs: the same statistics, mean
                                       ‖r‖₁ and ‖r‖₂
``perturbations/norms.png``            histograms of ‖r‖₁ and ‖r‖₂ of the study's sets on the seed-001 model
``grid.h5``, ``grid/``                 the grid (Fig. 1), mean perturbations (Fig. 4), success counts per cell
                                       (``grid_success.csv``) and the pixel histograms of a class pair (Fig. 3)
=====================================  ====================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advflow.workflow.figures import LEGEND_SIZE, Figure, line_style, new_figure, palette, render, save, style
from advflow.perturbations.statistics import PAIR_COLUMNS, SUMMARY_COLUMNS, PerturbationStats
from advflow.workflow.tabular import write_table

log = logging.getLogger("advflow.perturbations.tables")

DPI = 100


# ------------------------------------------------------------------------------------------ statistics

def perturbation_tables(sets: Sequence[tuple[str, str | Path, str | Path]], out_dir: Path, *,
                        histogram_sets: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """``summary.csv`` and ``class_pairs.csv`` over ``sets`` (name, set file, its seeds' profile) and
    ``norms.png`` (histograms of ‖r‖₁, ‖r‖₂ of ``histogram_sets``)."""
    summary, pairs, norms = [], [], {}
    for name, set_path, seeds_path in sets:
        stats = PerturbationStats.from_files(set_path, seeds_path, name=name)
        summary += [{"set": name, **row} for row in stats.summary()]
        pairs += [{"set": name, **row} for row in stats.by_class_pair()]
        if name in histogram_sets:
            norms[name] = stats.select().norms()
        log.info("%s: %d of %d inputs successful, %d class pairs", name, int(stats.success.sum()), len(stats),
                 len(stats.pairs()))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir / "summary.csv", summary, ("set", *SUMMARY_COLUMNS))
    write_table(out_dir / "class_pairs.csv", pairs, ("set", *PAIR_COLUMNS))
    save(norm_figure(norms), out_dir)
    return {"summary.csv": summary, "class_pairs.csv": pairs}


def norm_figure(norms: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Histograms of ‖r‖₁ and ‖r‖₂ (pixel units), one outline per set, each in its own colour and line style (the
    later ones narrower, so outlines that coincide stay in sight)."""
    colors = palette(len(norms))
    with style():
        figure = new_figure(10.0, 3.6)
        for ax, key, label in zip(figure.subplots(1, 2), ("l1", "l2"), ("‖r‖₁", "‖r‖₂")):
            for i, (color, (name, values)) in enumerate(zip(colors, norms.items())):
                if len(values[key]):
                    ax.hist(values[key], bins=20, histtype="step", lw=max(2.6 - 0.35 * i, 1.1), ls=line_style(i)[0],
                            color=color, alpha=0.9, label=f"{name} (n = {len(values[key])})")
            if not any(len(v[key]) for v in norms.values()):
                ax.text(0.5, 0.5, "no successful adversarial input", transform=ax.transAxes, ha="center")
            ax.set(xlabel=f"{label} (pixel units)", ylabel="inputs")
            ax.legend(fontsize=LEGEND_SIZE, frameon=False)
        image = render(figure, DPI)
    return Figure("norms.png", image, "Seed 001: histograms of the perturbations' L1 and L2 norms (pixels in [0, 1]) "
                                      "of the successful inputs of each set.")


# ------------------------------------------------------------------------------------------ the grid

def _show(ax: Any, image: np.ndarray | None, *, signed: bool, limit: float = 1.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None or not np.isfinite(image).all():
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", fontsize=8)
        return
    picture = image.transpose(1, 2, 0)
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="RdBu_r" if signed else "gray", vmin=-limit if signed else 0,
                  vmax=limit if signed else 1)
    else:
        ax.imshow(np.clip(picture / (2 * limit) + 0.5, 0, 1) if signed else np.clip(picture, 0, 1))


def grid_figure(grid: Mapping[str, np.ndarray], classes: Sequence[str], *, perturbation: bool) -> Figure:
    """Seed 001's Fig. 1 (mean adversarial images; the diagonal the mean originals) or, with ``perturbation``,
    the mean perturbations (Fig. 4); each cell titled with its success count; an empty cell says "none"."""
    key = "mean_perturbation" if perturbation else "mean_adversarial"
    k = grid[key].shape[0]
    finite = grid["mean_perturbation"][np.isfinite(grid["mean_perturbation"])]
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    with style():
        figure = new_figure(1.05 * k + 0.6, 1.1 * k + 0.6)
        axes = figure.subplots(k, k, squeeze=False)
        for i in range(k):
            for j in range(k):
                ax = axes[i][j]
                cell = grid[key][i, j]
                _show(ax, None if grid["successes"][i, j] == 0 else cell, signed=perturbation, limit=limit)
                ax.set_title(f"{int(grid['successes'][i, j])}/{int(grid['attempted'][i, j])}", fontsize=8, pad=1)
                if j == 0:
                    ax.set_ylabel(str(classes[i]), fontsize=8)
                if i == k - 1:
                    ax.set_xlabel(str(classes[j]), fontsize=8)
        figure.supylabel("original class i")
        figure.supxlabel("adversarial class j")
        image = render(figure, DPI)
    m = int(grid["attempted"][0, 0])
    if perturbation:
        return Figure("grid_perturbation.png", image,
                      f"Seed 001, Fig. 4 for every pair: the mean perturbation r = x' − x of the images of class i "
                      f"that reached class j (red: brighter, blue: darker; ±{limit:.2f} in pixel units); above each "
                      f"cell, how many of M = {m} reached j; \"none\": no image did.")
    return Figure("grid.png", image,
                  f"Seed 001, Fig. 1: cell (i, j) is the mean of the adversarial images of class i that the model "
                  f"classifies as j after a targeted L2 iterative attack (gradient steps); the diagonal, the mean "
                  f"of the M = {m} originals; above each cell, how many of M reached j; \"none\": no image did.")


def chosen_pair(grid: Mapping[str, np.ndarray], pair: Sequence[int] | None) -> tuple[int, int]:
    """The configured pair, checked against the classes; else the off-diagonal cell with the most successes
    (ties: the first in row order)."""
    k = grid["successes"].shape[0]
    if pair is not None:
        i, j = (int(c) for c in pair)
        if not (0 <= i < k and 0 <= j < k):
            raise ValueError(f"perturbations.pair: {list(pair)} is outside the {k} classes (0 … {k - 1})")
        return i, j
    counts = grid["successes"].astype(np.int64).copy()
    np.fill_diagonal(counts, -1)
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(i), int(j)


def pixel_figure(grid: Mapping[str, np.ndarray], classes: Sequence[str], pair: tuple[int, int]) -> Figure:
    """Seed 001's Fig. 3: pixel values of the originals of class i and of its adversarial images that reached j."""
    i, j = pair
    originals = grid["adversarial"][i, i].ravel()
    reached = grid["reached"][i, j]
    adversarial = grid["adversarial"][i, j][reached].ravel()
    colors = palette(2)
    with style():
        figure = new_figure(10.0, 3.4)
        left, right = figure.subplots(1, 2, sharey=True)
        left.hist(originals, bins=50, color=colors[0])
        left.set(title=f"originals, class {classes[i]} (n = {grid['adversarial'].shape[2]})", xlabel="pixel value",
                 ylabel="pixels", yscale="log")
        if adversarial.size:
            right.hist(adversarial, bins=50, color=colors[1])
        else:
            right.text(0.5, 0.5, "none", transform=right.transAxes, ha="center")
        right.set(title=f"adversarial {classes[i]} → {classes[j]} (n = {int(reached.sum())})", xlabel="pixel value")
        image = render(figure, DPI)
    spread = (f"pixel-value std {originals.std():.3f} (originals) vs {adversarial.std():.3f} (adversarials)"
              if adversarial.size else "no adversarial image reached the pair")
    return Figure("pixels.png", image,
                  f"Seed 001, Fig. 3: histograms of the pixel values of the originals of class {classes[i]} and of "
                  f"their adversarial images classified as {classes[j]} (log scale); {spread}.")


def grid_outputs(grid: Mapping[str, np.ndarray], classes: Sequence[str], pair: Sequence[int] | None,
                 out_dir: Path) -> dict[str, Any]:
    """The grid's figures and ``grid_success.csv`` (one row per cell: successes of attempted)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    k = grid["successes"].shape[0]
    rows = [{"original": i, "adversarial": j, "successes": int(grid["successes"][i, j]),
             "attempted": int(grid["attempted"][i, j])} for i in range(k) for j in range(k) if i != j]
    write_table(out_dir / "grid_success.csv", rows, ("original", "adversarial", "successes", "attempted"))
    picked = chosen_pair(grid, pair)
    for figure in (grid_figure(grid, classes, perturbation=False), grid_figure(grid, classes, perturbation=True),
                   pixel_figure(grid, classes, picked)):
        save(figure, out_dir)
    return {"rows": rows, "pair": picked}
