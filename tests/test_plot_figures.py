"""The multi-model figures of geomrobust.plot (the report draws every figure through them):
each draws the numbers it is given, and its legend names only what is drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from geomrobust import plot


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_curvature_figures_plot_the_median_magnitude_per_rank():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((9, 5)) * np.array([0.4, 0.3, 0.2, 0.1, 0.05])
    v = v[:, np.argsort(-np.abs(v).mean(0))]
    _, ax = plot.plot_curvature_magnitudes({"standard": v, "PGD-AT": 2 * v})
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.median(np.abs(v), 0))
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.median(np.abs(2 * v), 0))
    assert all(y >= 0 for line in ax.lines for y in line.get_ydata())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"{np.median(np.abs(v[:, 0])):.3g}" in labels[0]
    _, ax = plot.plot_curvature_spectrum(v)
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), np.median(np.abs(v), 0))
    pos = sum(len(c.get_offsets()) for c in ax.collections if "κ > 0" in c.get_label())
    assert pos == int((v > 0).sum())


def test_shared_directions_legend_matches_the_lines():
    sv = {"standard": [1.0, 0.5, 0.2], "PGD-AT": [1.0, 0.7, 0.4]}
    _, ax = plot.plot_shared_directions(sv, {k: np.square(v) for k, v in sv.items()})
    leg = ax.get_legend()
    assert len(leg.get_lines()) == len(ax.lines) == 4
    for handle, line in zip(leg.get_lines(), ax.lines, strict=True):
        assert mcolors.same_color(handle.get_color(), line.get_color())
        assert handle.get_linestyle() == line.get_linestyle()
    assert {mcolors.to_hex(line.get_color()) for line in ax.lines} == {
        mcolors.to_hex("C0"), mcolors.to_hex("C1")}  # fmt: skip


def _inside(outer, inner) -> bool:
    return (outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0
            and inner.y1 <= outer.y1)  # fmt: skip


def test_band_margin_counts_sit_above_the_axes_without_overlap():
    prof = {"standard": {"median": [0.5, 1, 2, 4], "q25": [0.4, 0.8, 1, 3],
                         "q75": [0.6, 1.2, 3, 5], "n_unconverged": [0, 0, 3, 12]},
            "PGD-AT": {"median": [1, 2, 4, 8], "q25": [0.8, 1, 3, 6],
                       "q75": [1.2, 3, 5, 9], "n_unconverged": [0, 1, 5, 14]}}  # fmt: skip
    fig, ax = plot.plot_band_margins(prof)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = ax.get_window_extent(r)
    texts = [t for t in ax.texts if t.get_text().isdigit()]  # annotations are texts
    assert len(texts) == 8
    boxes = [t.get_window_extent(r) for t in texts]
    assert all(b.y0 > box.y1 for b in boxes)  # above the frame
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    assert not ax.title.get_window_extent(r).overlaps(boxes[-1])


def test_corruption_legend_covers_no_bar():
    acc = {"standard": np.full((4, 5), 0.95), "PGD-AT": np.full((4, 5), 0.9)}
    fig, ax = plot.plot_corruption_accuracy(["a", "b", "c", "d"], acc)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg = ax.get_legend().get_window_extent(r)
    assert len(ax.patches) == 8
    assert not any(leg.overlaps(p.get_window_extent(r)) for p in ax.patches)


def test_saliency_shows_each_example_beside_its_maps():
    x = np.random.default_rng(1).random((3, 4, 4, 1))
    g = {"gradient": x - 0.5, "SmoothGrad": 0.5 - x}
    _, axes = plot.plot_saliency(x, {"standard": g, "PGD-AT": g})
    assert axes.shape == (3, 5)
    for j in range(3):
        np.testing.assert_allclose(axes[j, 0].images[0].get_array(), x[j, ..., 0])
        np.testing.assert_allclose(axes[j, 1].images[0].get_array(), x[j, ..., 0] - 0.5)


def test_slice_legend_names_every_class_colour():
    labels = np.array([[0, 0, 3], [0, 3, 3]])
    _, ax = plot.plot_slice(labels, np.arange(3.0), np.arange(2.0), np.ones((2, 2)), legend=True)
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names[:2] == ["class 0", "class 3"] and "boundary" in names


def test_ecdf_and_histograms_leave_out_non_finite_values():
    _, ax = plot.plot_ecdf({"a": [1.0, np.inf, 2.0, 3.0]}, xlabel="margin")
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1, 2, 3])
    assert "median 2" in ax.get_legend().get_texts()[0].get_text()
    _, ax = plot.plot_histograms({"a": [1.0, np.nan, 2.0]})
    assert "median 1.5" in ax.get_legend().get_texts()[0].get_text()
