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
