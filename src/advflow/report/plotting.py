"""Drawing the report's figures: rows of IIP | OIP | IOC panels of aggregated paths, as the paper's Figures 3-11.

Each path is drawn at the conv layers only (points joined by lines: between layers the GP mean has no meaning)
with its 95 % band, clipped at 0 where the path is MI itself. Baselines are grey (the clean seeds near-black,
the normal training inputs mid-grey and dashed); every other set gets a colour of :func:`palette`, which holds
no grey. Figures are rendered as PNG at the dpi the caller passes, with a vector PDF beside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advflow.information.aggregate import AggregatedPath
from advflow.workflow.figures import Figure, FigureBytes, integer_ticks, new_figure, palette, render, style  # noqa: F401
from advflow.report.results import RunResults
from advflow.report.study import NORMAL

NORMAL_COLOR = (0.1, 0.1, 0.1)
TRAIN_COLOR = (0.55, 0.55, 0.55)
#: The greys of the baselines; no set of :func:`palette` is drawn in them.
BASELINE_COLORS = (NORMAL_COLOR, TRAIN_COLOR)
PANEL_LABELS = (("IIP", "conv layer k", "mean S$^{(k)}$ (nats)"), ("OIP", "conv layer k", "mean T$^{(k)}$ (nats)"),
                ("IOC", "IIP: mean S$^{(k)}$", "OIP: mean T$^{(k)}$"))


@dataclass(frozen=True)
class Curve:
    """One aggregated set in a figure: its label, ``{"iip", "oip"}`` aggregates and line style. ``band``
    draws its 95 % band; ``ioc`` draws it in the IOC panel (controls and baselines stay out of it, which
    keeps that panel readable)."""

    label: str
    paths: Mapping[str, AggregatedPath]
    color: Any
    linestyle: str = "-"
    band: bool = True
    ioc: bool = True


def band_limits(path: AggregatedPath) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % band drawn at the layers: the GP's, with its lower edge clipped at 0 where the path is
    MI itself (never negative); a bias-corrected path (which can be negative) is drawn as it is."""
    floor = 0.0 if np.all(path.mean >= 0) else -np.inf
    return np.maximum(path.lower, floor), path.upper


def draw_row(axes: Sequence[Any], curves: Sequence[Curve], title: str | None = None) -> None:
    """IIP | OIP | IOC panels of aggregated curves: the GP mean at the conv layers (points joined by lines),
    its 95 % band there (:func:`band_limits`), and the IOC of the curves drawn there, marked at k = 1 and K."""
    for ax, (name, xlabel, ylabel) in zip(axes, PANEL_LABELS):
        ax.set_title(f"{name}{' — ' + title if title else ''}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for curve in curves:
        for ax, name in zip(axes[:2], ("iip", "oip")):
            path = curve.paths[name]
            if curve.band:
                ax.fill_between(path.layers, *band_limits(path), color=curve.color, alpha=0.15, lw=0)
            ax.plot(path.layers, path.mean, color=curve.color, ls=curve.linestyle, lw=1.6 if curve.band else 1.0,
                    marker="o", ms=2.5, label=curve.label)
            integer_ticks(ax)
        if curve.ioc:
            iip, oip = curve.paths["iip"], curve.paths["oip"]
            axes[2].plot(iip.mean, oip.mean, color=curve.color, ls=curve.linestyle, lw=1.2, marker="o", ms=3.5,
                         label=curve.label)
    if curves:
        first = curves[0].paths
        for index in (0, -1):  # mark where the first curve's IOC starts (layer 1) and ends (layer K)
            axes[2].annotate(f"k={first['iip'].layers[index]:g}", (first["iip"].mean[index], first["oip"].mean[index]),
                             textcoords="offset points", xytext=(4, 4), fontsize=8)
        handles, labels = axes[1].get_legend_handles_labels()  # every curve, controls included
        axes[2].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def rows_figure(rows: Sequence[tuple[str | None, Sequence[Curve]]], dpi: int) -> FigureBytes:
    """One row of IIP | OIP | IOC panels per ``(title, curves)``."""
    with style():
        figure = new_figure(13.5, 3.5 * len(rows))
        axes = figure.subplots(len(rows), 3, squeeze=False)
        for ax_row, (title, curves) in zip(axes, rows):
            draw_row(ax_row, curves, title)
        return render(figure, dpi)


def normal_curve(results: RunResults, model: str) -> Curve:
    """The clean seeds' aggregate on ``model``, the reference of every figure."""
    return Curve(f"normal ({NORMAL})", results.aggregate(model, NORMAL), NORMAL_COLOR)
