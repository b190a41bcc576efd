"""Seed 001's dropout vote as a stage of the defenses (rule ``dropout_vote`` in rules/defenses.smk; docs/method.md,
"Defenses and detectors"): the classifier's vote with dropout on (:mod:`advflow.defenses.dropout`) on clean inputs and
on every set, under ``results/{dataset}/defense/dropout/``: per set the votes' plurality and spread
(``scores/{set}.csv``), the table ``dropout_vote.csv`` and the vote histograms of one clean and one adversarial
input (``votes.png``, seed 001's Fig. 5).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advflow.information.shifts import wilson
from advflow.workflow.figures import Figure, new_figure, palette, render, save, style
from advflow.workflow.io import atomic_path
from advflow.workflow.tabular import write_table

log = logging.getLogger("advflow.defenses.vote")

DPI = 100
VOTE_COLUMNS = ("set", "kind", "inputs", "successful", "accuracy", "accuracy_low", "accuracy_high", "restored",
                "restored_low", "restored_high", "undefended_accuracy", "mean_spread", "control_mean_spread")


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

    from advflow.attacks.sets import _model_space, model_logits
    from advflow.defenses.dropout import DropoutVote
    from advflow.workflow.io import open_h5
    from advflow.models.architectures import load_checkpoint

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
