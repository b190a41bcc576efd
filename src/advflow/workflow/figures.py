"""Shared by every figure and table of advflow (the report's and the defense stage's): seaborn's style, a palette
with no grey, rendering to PNG at a given dpi with a PDF beside it, and the one format of rates ("33.3 %").
Kept out of :mod:`advflow.report`, so a rule that draws a figure does not depend on the report's code."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advflow.workflow.io import atomic_path


class FigureBytes(bytes):
    """A figure's PNG, with its vector version (PDF) in ``pdf``, written beside it for print."""

    pdf: bytes = b""


@dataclass(frozen=True)
class Figure:
    """A figure of the report: file name (``.png``), image and caption."""

    name: str
    image: FigureBytes
    caption: str


#: Legend text (points). The widest figures are about 13.5 in and shown at most 1320 px wide, so 1 pt is at least
#: 1.36 px on screen and a 9 pt legend at least 12 px.
LEGEND_SIZE = 9
#: Line styles and markers given in turn to the curves of a panel that can coincide (ROC curves of attacks that
#: score alike, rates that are equal), so that a curve drawn over another leaves it in sight.
LINE_STYLES: tuple[tuple[Any, str], ...] = (("-", "o"), ((0, (5, 2)), "s"), ((0, (1, 1.5)), "^"), ("-.", "D"),
                                            ((0, (3, 1, 1, 1, 1, 1)), "v"), ((0, (8, 2)), "P"), ((0, (2, 2)), "X"),
                                            ((0, (6, 1.5, 1, 1.5)), "h"))


def line_style(i: int) -> tuple[Any, str]:
    """The ``i``-th curve's (line style, marker) of :data:`LINE_STYLES`."""
    return LINE_STYLES[i % len(LINE_STYLES)]


def lighter(color: Any, amount: float = 0.4) -> tuple[float, float, float]:
    """``color`` mixed with ``amount`` of white: a reference's or a control's shade of its set's colour."""
    from matplotlib.colors import to_rgb

    return tuple(float(c + (1.0 - c) * amount) for c in to_rgb(color))  # type: ignore[return-value]


def identical_labels(labels: list[str], curves: list[tuple[Any, ...]]) -> list[str]:
    """``labels`` with " (identical to X)" after each whose curve (a tuple of arrays) equals an earlier one's, X
    the first such earlier label."""
    out = []
    for i, (label, curve) in enumerate(zip(labels, curves)):
        same = next((labels[j] for j in range(i) if _equal(curves[j], curve)), None)
        out.append(f"{label} (identical to {same})" if same else label)
    return out


def _equal(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    import numpy as np

    return len(a) == len(b) and all(np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y),
                                                                                  equal_nan=True)
                                    for x, y in zip(a, b))


def palette(n: int) -> list[Any]:
    """``n`` distinct colours, none of them grey: seaborn's "deep" without its grey (9 colours), then evenly
    spaced HUSL hues for more."""
    import seaborn as sns

    deep = [c for i, c in enumerate(sns.color_palette("deep", 10)) if i != 7]  # index 7 is deep's grey
    return deep[:max(n, 1)] if n <= len(deep) else list(sns.color_palette("husl", n))


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Seaborn's white-grid style and paper context, for the figures drawn inside the block only."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        yield


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), layout="constrained")


def integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def render(figure: Any, dpi: int) -> FigureBytes:
    """The figure as PNG at ``dpi``, with its PDF in ``.pdf``; no dates or tool versions in either file, so
    the same figure is the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    png = FigureBytes(buffer.getvalue())
    # The PNG's draw solved the constrained layout; the PDF keeps those positions instead of solving it again (the
    # layout is in inches and points, the same at any dpi), which halves the layout work of every figure.
    if figure.get_layout_engine() is not None:
        figure.set_layout_engine("none")
    vector = io.BytesIO()
    figure.savefig(vector, format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None})
    png.pdf = vector.getvalue()
    return png


def percent(value: float) -> str:
    """A rate as every table and finding of the report writes it: one decimal, e.g. "33.3 %"."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{100 * float(value):.1f} %"


def write_file(path: Path, data: bytes | str) -> None:
    """``data`` (text as UTF-8) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(data, encoding="utf-8") if isinstance(data, str) else tmp.write_bytes(data)


def save(figure: Figure, folder: Path) -> None:
    """A figure's PNG, its PDF and its caption (``{stem}.rst``, for Snakemake's ``report()``) in ``folder``."""
    stem = Path(figure.name).stem
    write_file(folder / figure.name, bytes(figure.image))
    write_file(folder / f"{stem}.pdf", figure.image.pdf)
    write_file(folder / f"{stem}.rst", figure.caption + "\n")
