"""Drawing the report's figures: rows of IIP | OIP | IOC panels of aggregated paths, as the paper's Figures 3-11.

Each path is drawn at the conv layers only (points joined by lines: between layers the GP mean has no meaning)
with its 95 % band, clipped at 0 where the path is MI itself. Baselines are grey (the clean seeds near-black,
the normal training inputs mid-grey and dashed); every other set gets a colour of :func:`palette`, which holds
no grey (a set's random control or second subset a lighter shade of it, :func:`lighter`), and every curve of a
panel its own marker, so curves that coincide stay apart. The IOC panel numbers the layers; a panel whose path is
one constant for every set (e.g. an OIP of 0 on a model with 1×1 target maps) says it carries no information.
Legends are 9 pt. Figures are rendered as PNG at the dpi the caller passes, with a vector PDF beside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advflow.information.aggregate import AggregatedPath
from advflow.workflow.figures import (LEGEND_SIZE, Figure, FigureBytes, integer_ticks, lighter,  # noqa: F401
                                      new_figure, palette, render, style)
from advflow.report.results import RunResults
from advflow.report.study import NORMAL

NORMAL_COLOR = (0.1, 0.1, 0.1)
TRAIN_COLOR = (0.55, 0.55, 0.55)
#: The greys of the baselines; no set of :func:`palette` is drawn in them.
BASELINE_COLORS = (NORMAL_COLOR, TRAIN_COLOR)
PANEL_LABELS = (("IIP", "conv layer k", "mean S$^{(k)}$ (nats)"), ("OIP", "conv layer k", "mean T$^{(k)}$ (nats)"),
                ("IOC", "IIP: mean S$^{(k)}$", "OIP: mean T$^{(k)}$"))


#: Markers given to the curves of a panel in turn, so that curves drawn on top of each other stay apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
#: Text sizes (points) of notes in a panel and of the layer numbers in the IOC panel (legends: LEGEND_SIZE): a row
#: figure is 13.5 in wide and shown at most 1320 px wide, so 1 pt is at least 1.36 px there.
NOTE_SIZE = 9
LAYER_SIZE = 7.5


@dataclass(frozen=True)
class Curve:
    """One aggregated set in a figure: its label, ``{"iip", "oip"}`` aggregates and line style. ``band``
    draws its 95 % band; ``ioc`` draws it in the IOC panel (controls and baselines stay out of it, which
    keeps that panel readable). ``marker``: its marker; by default the panel's next of :data:`MARKERS`."""

    label: str
    paths: Mapping[str, AggregatedPath]
    color: Any
    linestyle: str = "-"
    band: bool = True
    ioc: bool = True
    marker: str | None = None


def constant_value(arrays: Sequence[np.ndarray]) -> float | None:
    """The one value every finite entry of ``arrays`` takes (up to rounding), or None when they vary (or there
    is none)."""
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    scale = max(1.0, float(np.abs(values).max()))
    return float(values.mean()) if float(np.ptp(values)) <= 1e-9 * scale else None


def no_information_text(name: str, value: float, where: str = "at every layer for every set") -> str:
    """The note of a panel whose ``name`` path (IIP, OIP, …) is ``value`` everywhere."""
    if value == 0:
        why = "\n(e.g. the model's target maps are 1×1)" if name == "OIP" else ""
        return f"no information: the {name} is 0\n{where}{why}"
    return f"no information: the {name} is constant\n({value:.3g}) {where}"


def note(ax: Any, text: str, y: float = 0.72) -> None:
    """A boxed note across the middle of ``ax`` (above its centre, where a flat line at 0 would be)."""
    ax.text(0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=NOTE_SIZE, zorder=10,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.92})


def note_if_constant(ax: Any, name: str, arrays: Sequence[np.ndarray], where: str = "at every layer for every set"
                     ) -> bool:
    """Notes "no information" in ``ax`` when every value of ``arrays`` is the same; returns whether it did."""
    value = constant_value(arrays)
    if value is not None:
        note(ax, no_information_text(name, value, where))
    return value is not None


def label_layers(ax: Any, x: np.ndarray, y: np.ndarray, layers: np.ndarray, color: Any) -> None:
    """Each point of an IOC curve labelled with its layer number ("k=1" at the start, "k=K" at the end), on a
    white halo so that it stays legible over the other curves."""
    from matplotlib.patheffects import withStroke

    last = len(x) - 1
    halo = [withStroke(linewidth=2.5, foreground="white")]
    for i in range(len(x)):
        text = f"k={layers[i]:g}" if i in (0, last) else f"{layers[i]:g}"
        ax.annotate(text, (x[i], y[i]), textcoords="offset points", xytext=(4, 3), fontsize=LAYER_SIZE, color=color,
                    fontweight="bold" if i in (0, last) else "normal", zorder=6, path_effects=halo)


def direction_arrows(ax: Any, x: np.ndarray, y: np.ndarray, color: Any) -> None:
    """An arrowhead half-way along each segment of an IOC curve, pointing towards the deeper layer."""
    for i in range(len(x) - 1):
        if not (np.isfinite([x[i], y[i], x[i + 1], y[i + 1]]).all()) or (x[i], y[i]) == (x[i + 1], y[i + 1]):
            continue
        mid = ((x[i] + x[i + 1]) / 2, (y[i] + y[i + 1]) / 2)
        back = (mid[0] - (x[i + 1] - x[i]) * 1e-3, mid[1] - (y[i + 1] - y[i]) * 1e-3)
        ax.annotate("", xy=mid, xytext=back, zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 0.8, "mutation_scale": 10,
                                "shrinkA": 0, "shrinkB": 0})


def band_limits(path: AggregatedPath) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % band drawn at the layers: the GP's, with its lower edge clipped at 0 where the path is
    MI itself (never negative); a bias-corrected path (which can be negative) is drawn as it is."""
    floor = 0.0 if np.all(path.mean >= 0) else -np.inf
    return np.maximum(path.lower, floor), path.upper


def draw_row(axes: Sequence[Any], curves: Sequence[Curve], title: str | None = None) -> None:
    """IIP | OIP | IOC panels of aggregated curves: the GP mean at the conv layers (points joined by lines),
    its 95 % band there (:func:`band_limits`), and the IOC of the curves drawn there. Each curve of the row has
    its own marker (and the earlier curves are drawn wider, so a later one drawn on top leaves them visible); in
    the IOC panel the first curve's points carry their layer numbers (k=1 … k=K) and every curve has an
    arrowhead on each segment, pointing from layer k to k + 1. A panel whose path is one constant for every curve
    says it carries no information."""
    for ax, (name, xlabel, ylabel) in zip(axes, PANEL_LABELS):
        ax.set_title(f"{name}{' — ' + title if title else ''}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ioc = [c for c in curves if c.ioc]
    for i, curve in enumerate(curves):
        marker = curve.marker or MARKERS[i % len(MARKERS)]
        # The first curve (the reference) widest, the later ones narrower on top of it: one that coincides
        # with an earlier one leaves the earlier one's edges and larger markers in sight.
        width = 3.0 if i == 0 else max(2.0 - 0.25 * (i - 1), 1.2) if curve.band else 1.2
        size = 6.5 if i == 0 else max(5.0 - 0.5 * (i - 1), 3.0)
        for ax, name in zip(axes[:2], ("iip", "oip")):
            path = curve.paths[name]
            if curve.band:
                ax.fill_between(path.layers, *band_limits(path), color=curve.color, alpha=0.15, lw=0)
            ax.plot(path.layers, path.mean, color=curve.color, ls=curve.linestyle, lw=width, marker=marker, ms=size,
                    alpha=0.9, zorder=2 + 0.01 * i, label=curve.label)
            integer_ticks(ax)
        if curve.ioc:
            iip, oip = curve.paths["iip"], curve.paths["oip"]
            axes[2].plot(iip.mean, oip.mean, color=curve.color, ls=curve.linestyle, lw=2.4 if i == 0 else 1.4,
                         marker=marker, ms=size, alpha=0.9, zorder=2 + 0.01 * i, label=curve.label)
    for curve in ioc:
        direction_arrows(axes[2], curve.paths["iip"].mean, curve.paths["oip"].mean, curve.color)
    if ioc:
        first = ioc[0].paths
        label_layers(axes[2], first["iip"].mean, first["oip"].mean, first["iip"].layers, ioc[0].color)
    for ax, name, key in zip(axes, ("IIP", "OIP"), ("iip", "oip")):
        if curves:
            note_if_constant(ax, name, [c.paths[key].mean for c in curves])
    if ioc:
        for name, key, other in (("OIP", "oip", "IIP"), ("IIP", "iip", "OIP")):
            value = constant_value([c.paths[key].mean for c in ioc])
            if value is not None:
                note(axes[2], f"no information: the {name} is {value:.3g}\nat every layer for every set\n"
                              f"(the IOC only traces the {other})")
                break
    if curves:
        handles, labels = axes[1].get_legend_handles_labels()  # every curve, controls included
        axes[2].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_SIZE,
                       frameon=False)


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
