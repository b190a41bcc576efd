"""Figures a reader can read (issue 27): legends of at least 8 pt, curves that coincide told apart by marker and
line style (and "identical to" in the legend), a note in a panel whose path carries no information, layer numbers
in the IOC panel. Drawn on small hand-made data; the matplotlib figure is caught before it is rendered."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure as MplFigure
from matplotlib.text import Annotation

from advflow.defenses import metrics as m
from advflow.information.aggregate import AggregatedPath
from advflow.report.plotting import Curve, draw_row
from advflow.workflow import figures as wf

K = 5


def path(values) -> AggregatedPath:
    layers = np.arange(1.0, K + 1)
    mean = np.asarray(values, dtype=np.float64)
    return AggregatedPath(layers, mean, mean, mean, layers, mean, mean, mean)


def notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if "no information" in t.get_text()]


def test_a_row_whose_oip_is_zero_for_every_set_says_so_and_the_other_panels_do_not():
    iip = path(np.linspace(0.1, 0.5, K))
    curves = [Curve("normal", {"iip": iip, "oip": path(np.zeros(K))}, "k"),
              Curve("fgsm", {"iip": path(np.linspace(0.2, 0.6, K)), "oip": path(np.zeros(K))}, "C0")]
    axes = MplFigure().subplots(1, 3)
    draw_row(axes, curves)
    assert notes(axes[0]) == []
    assert len(notes(axes[1])) == 1 and "OIP is 0" in notes(axes[1])[0] and "1×1" in notes(axes[1])[0]
    assert len(notes(axes[2])) == 1 and "only traces the IIP" in notes(axes[2])[0]
    axes = MplFigure().subplots(1, 3)
    draw_row(axes, [Curve("normal", {"iip": iip, "oip": path(np.full(K, 0.3))}, "k")])
    assert "constant" in notes(axes[1])[0] and "0.3" in notes(axes[1])[0]
    axes = MplFigure().subplots(1, 3)
    draw_row(axes, [Curve("normal", {"iip": iip, "oip": path(np.linspace(0.3, 0.1, K))}, "k")])
    assert not any(notes(ax) for ax in axes)


def test_curves_of_a_row_get_their_own_markers_and_the_ioc_panel_numbers_the_layers():
    same = path(np.linspace(0.1, 0.5, K))
    curves = [Curve("normal", {"iip": same, "oip": same}, "k"), Curve("fgsm", {"iip": same, "oip": same}, "C0"),
              Curve("igsm", {"iip": same, "oip": same}, "C1"),
              Curve("fgsm control", {"iip": same, "oip": same}, "C0", ":", band=False, ioc=False)]
    axes = MplFigure().subplots(1, 3)
    draw_row(axes, curves)
    for ax in axes:
        markers = [line.get_marker() for line in ax.lines]
        assert len(set(markers)) == len(markers)
    widths = [line.get_linewidth() for line in axes[1].lines[:3]]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # the lower curves stay in sight
    texts = [t.get_text() for t in axes[2].texts if t.get_text()]
    assert texts[:1] == ["k=1"] and f"k={K}" in texts and all(str(k) in texts for k in range(2, K))
    arrows = [t for t in axes[2].texts if isinstance(t, Annotation) and t.arrow_patch is not None]
    assert len(arrows) == 3 * (K - 1)  # one arrowhead per segment of each IOC curve
    assert axes[2].get_legend().get_texts()[0].get_fontsize() >= 8


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the defense stage draws, caught at render."""
    caught = []
    real = wf.render

    def render(figure, dpi):
        caught.append(figure)
        return real(figure, 20)

    monkeypatch.setattr(wf, "render", render)
    return caught


def scores(rng: np.random.Generator, n: int, detectors, *, attacked: bool) -> dict[str, np.ndarray]:
    """A score table as the defense stage writes it (every input of an attacked set fooled the classifier)."""
    label = np.zeros(n, dtype=np.int64)
    return {"index": np.arange(n), "label": label, "prediction": label + attacked, "success": label + attacked > 0,
            "reformed_prediction": label, "margin": np.full(n, np.nan),
            **{f"score_{d}": rng.random(n) for d in detectors}}


def dash(line) -> tuple:
    return (line.get_linestyle(), str(getattr(line, "_unscaled_dash_pattern", "")))


def test_roc_curves_of_sets_that_score_alike_differ_in_style_and_say_they_are_identical(drawn):
    rng = np.random.default_rng(3)
    detectors = ["l1", "l2", "mid", "jsd"]
    clean, alike = scores(rng, 30, detectors, attacked=False), scores(rng, 20, detectors, attacked=True)
    sets = {("pgd", 0.1): scores(rng, 20, detectors, attacked=True), ("cw", 10.0): alike,
            ("ead_l1", 10.0): dict(alike), ("ead_en", 10.0): dict(alike)}
    m.roc_figure(clean, sets, detectors, dpi=20)
    (figure,) = drawn
    axes = [ax for ax in figure.axes if ax.get_visible() and ax.axison]
    assert len(axes) == 4 and len({ax.get_position().y0 for ax in axes}) == 2  # two rows, not one
    for ax in axes:
        lines = [line for line in ax.lines if line.get_label() and not line.get_label().startswith("_")]
        assert len(lines) == 4
        assert len({line.get_marker() for line in lines}) == 4
        assert len({dash(line) for line in lines}) == 4
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sum("identical to C&W-L2" in label for label in labels) == 2 and "identical" not in labels[0]
        assert min(t.get_fontsize() for t in ax.get_legend().get_texts()) >= 8
    assert figure.get_figwidth() <= 13.5


def test_defense_rate_lines_of_equal_rates_differ_in_style_and_say_they_are_identical(drawn):
    row = {"inputs": 20, "defense_rate_attacked": 0.3, "defense_rate_attacked_low": 0.1,
           "defense_rate_attacked_high": 0.5}
    table1 = [{**row, "attack": a, "epsilon": e} for a in ("pgd", "bim") for e in (0.1, 0.3)]
    m.defense_rate_figure(table1, [], dpi=20)
    (figure,) = drawn
    ax = figure.axes[0]
    ours = [line for line in ax.lines if "(ours" in line.get_label()]
    assert [line.get_label() for line in ours] == ["PGD (ours)", "BIM (ours; identical to PGD)"]
    assert ours[0].get_marker() != ours[1].get_marker() and ours[0].get_linewidth() > ours[1].get_linewidth()
    assert dash(ours[0]) != dash(ours[1])
    assert min(t.get_fontsize() for t in ax.get_legend().get_texts()) >= 8
