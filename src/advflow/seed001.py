"""Seed 001's outputs for the workflow ("Exploring Adversarial Input Spaces for Convolutional Neural Network Defense";
SPEC, "Defenses and detectors"): the perturbation statistics of every adversarial set (:mod:`advflow.perturbations`),
the average-adversarial grid and its figures (:mod:`advflow.grid`), and the dropout vote on clean inputs and on every
set (:mod:`advflow.defenses.dropout`). Files under ``results/{dataset}/seed001/``:

=====================================  ====================================================================
``perturbations/summary.csv``          per set: mean, std, max, min of its successful adversarial images, of
                                       their perturbations r = x' − x and of their originals (pixel units)
``perturbations/class_pairs.csv``      per set and class pair i → j that occurs: the same statistics, mean
                                       ‖r‖₁ and ‖r‖₂
``perturbations/norms.png``            histograms of ‖r‖₁ and ‖r‖₂ of the study's sets on the seed-001 model
``grid.h5``, ``grid/``                 the grid (Fig. 1), mean perturbations (Fig. 4), success counts per cell
                                       (``grid_success.csv``) and the pixel histograms of a class pair (Fig. 3)
``dropout/``                           per set the votes' plurality and spread (``scores/{set}.csv``), the table
                                       ``dropout_vote.csv`` and the vote histograms of one clean and one
                                       adversarial input (``votes.png``, Fig. 5)
=====================================  ====================================================================
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advflow.defenses.metrics import wilson
from advflow.figures import Figure, new_figure, palette, render, save, style
from advflow.io import atomic_path
from advflow.perturbations import PAIR_COLUMNS, SUMMARY_COLUMNS, PerturbationStats
from advflow.tabular import write_table

log = logging.getLogger("advflow.seed001")

DPI = 100
VOTE_COLUMNS = ("set", "kind", "inputs", "successful", "accuracy", "accuracy_low", "accuracy_high", "restored",
                "restored_low", "restored_high", "undefended_accuracy", "mean_spread", "control_mean_spread")


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
    """Histograms of ‖r‖₁ and ‖r‖₂ (pixel units), one outline per set."""
    colors = palette(len(norms))
    with style():
        figure = new_figure(10.0, 3.6)
        for ax, key, label in zip(figure.subplots(1, 2), ("l1", "l2"), ("‖r‖₁", "‖r‖₂")):
            for color, (name, values) in zip(colors, norms.items()):
                if len(values[key]):
                    ax.hist(values[key], bins=20, histtype="step", lw=1.4, color=color,
                            label=f"{name} (n = {len(values[key])})")
            if not any(len(v[key]) for v in norms.values()):
                ax.text(0.5, 0.5, "no successful adversarial input", transform=ax.transAxes, ha="center")
            ax.set(xlabel=f"{label} (pixel units)", ylabel="inputs")
            ax.legend(fontsize=7, frameon=False)
        image = render(figure, DPI)
    return Figure("norms.png", image, "Seed 001: histograms of the perturbations' L1 and L2 norms (pixels in [0, 1]) "
                                      "of the successful inputs of each set.")


# ------------------------------------------------------------------------------------------ the grid

def _show(ax: Any, image: np.ndarray | None, *, signed: bool, limit: float = 1.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None or not np.isfinite(image).all():
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", fontsize=7)
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
                ax.set_title(f"{int(grid['successes'][i, j])}/{int(grid['attempted'][i, j])}", fontsize=6, pad=1)
                if j == 0:
                    ax.set_ylabel(str(classes[i]), fontsize=7)
                if i == k - 1:
                    ax.set_xlabel(str(classes[j]), fontsize=7)
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


# ------------------------------------------------------------------------------------------ the dropout vote

def vote_row(name: str, kind: str, scores: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One row of ``dropout_vote.csv`` from a set's vote table: the vote's accuracy, and over the inputs the attack
    fooled the undefended classifier on, the share whose true label the vote restores (seed 001's measure)."""
    label, plurality, success = scores["label"], scores["plurality"], scores["success"].astype(bool)
    n, fooled = len(label), int(success.sum())
    accuracy = float((plurality == label).mean()) if n else math.nan
    restored = float((plurality[success] == label[success]).mean()) if fooled else math.nan
    row = {"set": name, "kind": kind, "inputs": n, "successful": fooled, "accuracy": accuracy,
           "restored": restored,
           "undefended_accuracy": float((scores["prediction"] == label).mean()) if n else math.nan,
           "mean_spread": float(scores["spread"].mean()) if n else math.nan,
           "control_mean_spread": float(scores["control_spread"].mean()) if "control_spread" in scores else math.nan}
    row["accuracy_low"], row["accuracy_high"] = wilson(accuracy, n)
    row["restored_low"], row["restored_high"] = wilson(restored, fooled)
    return row


def write_vote_scores(path: Path, columns: Mapping[str, np.ndarray]) -> None:
    names = list(columns)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for values in zip(*(columns[n] for n in names)):
            writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else
                             str(bool(v)) if isinstance(v, (bool, np.bool_)) else str(int(v)) for v in values])


def read_vote_scores(path: str | Path) -> dict[str, np.ndarray]:
    """A set's vote table: ``index, label, prediction, success, plurality, spread`` (+ ``control_plurality``,
    ``control_spread``)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "spread" not in rows[0]:
        raise ValueError(f"{path}: not a dropout-vote table (no spread column); rerun the workflow (rule dropout_vote)")
    header, body = rows[0], rows[1:]
    out = {}
    for k, name in enumerate(header):
        texts = [r[k] for r in body]
        if name == "success":
            out[name] = np.array([t == "True" for t in texts], dtype=bool)
        elif "spread" in name:
            out[name] = np.array([float(t) for t in texts], dtype=np.float64)
        else:
            out[name] = np.array([int(t) for t in texts], dtype=np.int64)
    return out


def vote_figure(clean_votes: np.ndarray, adversarial_votes: np.ndarray | None, num_classes: int,
                adversarial_name: str) -> Figure:
    """Seed 001's Fig. 5: the K votes of one clean and one adversarial input, as histograms over the classes."""
    colors = palette(2)
    with style():
        figure = new_figure(10.0, 3.2)
        titles = ("a clean test input", f"an adversarial input ({adversarial_name})")
        for ax, votes, color, title in zip(figure.subplots(1, 2, sharey=True), (clean_votes, adversarial_votes),
                                           colors, titles):
            if votes is None:
                ax.text(0.5, 0.5, "no successful adversarial input", transform=ax.transAxes, ha="center")
            else:
                ax.bar(np.arange(num_classes), np.bincount(votes, minlength=num_classes), color=color)
                share = np.bincount(votes, minlength=num_classes).max() / len(votes)
                title += f": spread {1 - share:.2f}"
            ax.set(title=title, xlabel="class voted", ylabel="votes", xticks=range(num_classes))
        image = render(figure, DPI)
    return Figure("votes.png", image,
                  f"Seed 001, Fig. 5: the classes voted by the {len(clean_votes)} stochastic passes (dropout on) for "
                  f"one clean test input and for one adversarial input the attack succeeded on; the spread is 1 − "
                  f"the plurality's share of the votes.")


def run_dropout_vote(classifier_path: str | Path, sets: Sequence[tuple[str, str, str | Path]],
                     settings: Mapping[str, Any], *, seed: int, device: Any, out_dir: Path) -> list[dict[str, Any]]:
    """The dropout vote of the classifier on every set (name, kind, file: a profile of clean images or an
    adversarial-set file, whose random control ``extra/control`` is voted on too): ``scores/{name}.csv``,
    ``dropout_vote.csv`` and ``votes.png`` in ``out_dir``. Each set's votes are seeded by ``seed`` and its name."""
    import zlib

    import torch

    from advflow.adversarial import _model_space, model_logits
    from advflow.defenses.dropout import DropoutVote
    from advflow.io import open_h5
    from advflow.models import load_checkpoint

    classifier = load_checkpoint(classifier_path, device)
    num_classes = int(classifier.arch["num_classes"])
    k, rate = int(settings["k"]), settings.get("rate")
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    rows, clean_votes, adversarial_votes, adversarial_name = [], None, None, ""
    for name, kind, path in sets:
        with open_h5(path) as h5:
            if "adversarial" in h5:
                x = torch.as_tensor(h5["adversarial"][:])
                labels, success = h5["labels"][:].astype(np.int64), h5["success"][:].astype(bool)
                prediction = h5["pred_after"][:].astype(np.int64)
                control = torch.as_tensor(h5["extra/control"][:]) if "extra/control" in h5 else None
            else:
                x, labels = _model_space(h5["images"][:]), h5["labels"][:].astype(np.int64)
                success, prediction, control = np.zeros(len(labels), dtype=bool), None, None
        vote = DropoutVote(classifier, k, rate, seed=int(zlib.crc32(f"{seed}:{name}".encode())))
        votes, plurality, spread = vote.predict_and_score(x, num_classes)
        if prediction is None:
            with torch.no_grad():
                prediction = model_logits(classifier, x, device).argmax(1).numpy()
        columns = {"index": np.arange(len(labels)), "label": labels, "prediction": prediction, "success": success,
                   "plurality": plurality, "spread": spread}
        if control is not None:
            _, columns["control_plurality"], columns["control_spread"] = vote.predict_and_score(control, num_classes)
        write_vote_scores(out_dir / "scores" / f"{name}.csv", columns)
        rows.append(vote_row(name, kind, columns))
        if kind == "clean" and clean_votes is None and len(votes):
            clean_votes = votes[0]
        if kind != "clean" and adversarial_votes is None and success.any():
            adversarial_votes, adversarial_name = votes[int(np.flatnonzero(success)[0])], name
        log.info("dropout vote on %s (%d inputs, K = %d): accuracy %.3f, restored %s, mean spread %.3f", name,
                 len(labels), k, rows[-1]["accuracy"], f"{rows[-1]['restored']:.3f}" if rows[-1]["successful"]
                 else "n/a", rows[-1]["mean_spread"])
    write_table(out_dir / "dropout_vote.csv", rows, VOTE_COLUMNS)
    if clean_votes is not None:
        save(vote_figure(clean_votes, adversarial_votes, num_classes, adversarial_name), out_dir)
    return rows
