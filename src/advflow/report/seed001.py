"""The report's "Seed 001" section: the average-adversarial grid, the pixel histograms, the perturbation statistics
and the dropout vote (rules ``perturbation_stats``, ``average_grid``, ``dropout_vote``), each with a sentence stating
what the numbers show. Reads ``seed001/`` and ``defense/dropout/``; a part the run did not make is left out and the
section says so.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from advflow.report import findings as fx
from advflow.report.defense import read_rows
from advflow.report.plotting import Figure, FigureBytes

KEY = "seed001"
#: How many sets the statistics sentence names (the table holds every one).
MAX_SETS_SAID = 8
TITLE = "Seed 001: the adversarial input space and the dropout vote"


def _figure(folder: Path, name: str, figure_html: Any) -> str:
    if not (folder / name).is_file():
        return ""
    caption = (folder / f"{Path(name).stem}.rst").read_text().strip()
    return figure_html(Figure(name, FigureBytes((folder / name).read_bytes()), caption))


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def grid_statement(rows: list[dict[str, Any]]) -> str:
    """How many pairs the grid reached, and the easiest and hardest."""
    if not rows:
        return "The grid has no cell."
    attempted = int(rows[0]["attempted"])
    reached = [r for r in rows if r["successes"] > 0]
    best = max(rows, key=lambda r: r["successes"])
    worst = min(rows, key=lambda r: r["successes"])
    total = sum(int(r["successes"]) for r in rows)
    if total == 0:
        return (f"The targeted attack reached none of its {attempted * len(rows)} (class, target) attempts, so every "
                f"off-diagonal cell shows \"none\"; raise perturbations.grid.epsilon or steps to reach the targets.")
    return (f"The targeted attack reached {total} of {attempted * len(rows)} (class, target) attempts; "
            f"{len(reached)} of {len(rows)} class pairs have at least one adversarial image (the others show "
            f"\"none\"); most often {int(best['original'])} → {int(best['adversarial'])} ({int(best['successes'])} of "
            f"{attempted}), least often {int(worst['original'])} → {int(worst['adversarial'])} "
            f"({int(worst['successes'])}).")


def summary_statement(rows: list[dict[str, Any]]) -> str:
    """Per set: perturbation size (std) against the originals', over the successful inputs."""
    sets = {}
    for row in rows:
        sets.setdefault(row["set"], {})[row["of"]] = row
    parts, empty = [], []
    for name, of in sets.items():
        r, original = of.get("perturbations"), of.get("original images")
        if not r or not r["inputs"]:
            empty.append(name)
            continue
        parts.append(f"{name}: perturbation std {r['std']:.3f}, range [{r['min']:.2f}, {r['max']:.2f}] "
                     f"(originals' std {original['std']:.3f}; n = {int(r['inputs'])})")
    shown = parts[:MAX_SETS_SAID] + ([f"… {len(parts) - MAX_SETS_SAID} more sets in the table"]
                                     if len(parts) > MAX_SETS_SAID else [])
    text = "Perturbations r = x' − x of the successful inputs, in pixel units: " + "; ".join(shown) + "."
    if empty:
        text += f" No successful input, so no statistics: {', '.join(empty)}."
    return text


def vote_statements(rows: list[dict[str, Any]]) -> list[str]:
    """The vote's clean accuracy and, per set with successful inputs, the share it restores, with intervals."""
    out = []
    for row in rows:
        if row["kind"] == "clean" and row["set"] == "clean":
            out.append(f"On {int(row['inputs'])} clean held-out test images the vote is right on "
                       f"{fx.percent(row['accuracy'])} [{fx.percent(row['accuracy_low'])}, "
                       f"{fx.percent(row['accuracy_high'])}] (the undefended classifier: "
                       f"{fx.percent(row['undefended_accuracy'])}); mean vote spread {row['mean_spread']:.3f}.")
    judged = [r for r in rows if r["kind"] != "clean" and r["successful"] > 0 and _finite(r["restored"])]
    if not judged:
        out.append("No set has an input the attack succeeded on, so the vote's restoring is not measured.")
        return out
    decided = [r for r in judged if r["restored_low"] > 0.5]
    best = max(judged, key=lambda r: r["restored"])
    worst = min(judged, key=lambda r: r["restored"])
    out.append(f"Over the inputs each attack fooled the classifier on, the vote restores the true label on "
               f"{fx.percent(worst['restored'])} ({worst['set']}, n = {int(worst['successful'])}) to "
               f"{fx.percent(best['restored'])} ({best['set']}, n = {int(best['successful'])}) of them; on "
               f"{len(decided)} of {len(judged)} sets the 95 % interval lies above one half.")
    spread = [r for r in judged if _finite(r.get("control_mean_spread"))]
    if spread:
        higher = sum(r["mean_spread"] > r["control_mean_spread"] for r in spread)
        out.append(f"The mean vote spread of a set is above that of its random control of the same size on "
                   f"{higher} of {len(spread)} sweep sets (the detector's AUC against the control is in the "
                   f"defense section's detectors table, row dropout_vote).")
    return out


def _parts(results: Path) -> tuple[Path, Path, Path]:
    return results / "seed001" / "grid", results / "seed001" / "perturbations", results / "defense" / "dropout"


def made(results: Path) -> bool:
    """Whether the run made any of seed 001's outputs (the grid, the statistics, the dropout vote)."""
    return any(p.is_dir() for p in _parts(results))


def section(results: Path, html_table: Any, figure_html: Any) -> str:
    """The section's HTML (empty when the run made none of seed 001's outputs); ``html_table`` places each table
    (called like :func:`advflow.report.page.html_table`, with ``href`` its CSV)."""
    grid, stats, dropout = _parts(results)
    if not made(results):
        return ""
    parts = [f'<section id="{KEY}" data-question="{KEY}"><h2>{html.escape(TITLE)}</h2>',
             '<p class="setting"><b>Setting.</b> Seed 001 ("Exploring Adversarial Input Spaces for Convolutional '
             'Neural Network Defense"): statistics of every adversarial set\'s perturbations r = x\' − x (pixels in '
             '[0, 1], successful inputs), the average-adversarial grid from a targeted L2 iterative attack (gradient '
             'steps), and the dropout vote (K passes with dropout on, the plurality class predicts, 1 − the '
             'plurality\'s share scores). The seed reports no numbers to compare with; the statements say what '
             'this run shows.</p>']
    statements = []
    if grid.is_dir():
        parts += [_figure(grid, "grid.png", figure_html), _figure(grid, "grid_perturbation.png", figure_html),
                  _figure(grid, "pixels.png", figure_html)]
        if (grid / "grid_success.csv").is_file():
            statements.append(grid_statement(read_rows(grid / "grid_success.csv")))
    else:
        statements.append("The grid was not made on this run (no perturbations block).")
    if stats.is_dir():
        parts.append(_figure(stats, "norms.png", figure_html))
        rows = read_rows(stats / "summary.csv")
        parts.append(html_table("seed001_summary.csv", rows, tuple(rows[0]) if rows else (),
                                "Seed 001's statistics per set: mean, std, max and min of the successful adversarial "
                                "images, of their perturbations and of their originals (pixel units); per class pair "
                                "in class_pairs.csv beside it.", href="results:seed001/perturbations/summary.csv"))
        statements.append(summary_statement(rows))
    if dropout.is_dir():
        parts.append(_figure(dropout, "votes.png", figure_html))
        rows = read_rows(dropout / "dropout_vote.csv")
        parts.append(html_table("dropout_vote.csv", rows, tuple(rows[0]) if rows else (),
                                "The dropout vote per set: its accuracy, and over the inputs the attack fooled the "
                                "undefended classifier on, the share whose true label it restores (seed 001's "
                                "measure), each with its 95 % Wilson interval; the mean vote spread of the set and of "
                                "its random control.", href="results:defense/dropout/dropout_vote.csv"))
        statements += vote_statements(rows)
    parts.append("<h3>What the numbers show</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in statements)
                 + "</ul></section>")
    return "\n".join(p for p in parts if p)
