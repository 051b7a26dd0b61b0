"""Figures of 2-D boundary and loss slices (matplotlib only; arrays in, ``(fig, ax)`` out)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_loss_surface", "plot_slice"]


def _axes(ax, figsize=(4.5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_slice(
    labels, a, b, contour=None, *, ax=None, xlabel: str = "a (u)", ylabel: str = "b (v)",
    title: str = "Decision regions", legend: bool = False, center_label: str = "x",
    classes=None,
):  # fmt: skip
    """Predicted labels on a plane (``Slice.labels``, rows follow ``b``), the boundary points
    (``Slice.contour``, ``(P, 2)`` in ``(a, b)``) and the centre point ``(0, 0)``.

    ``legend=True`` adds a legend (outside the axes, on the right) naming the colour of
    every class present (or of ``classes``, e.g. those of several panels side by side), the
    boundary points and the centre point (``center_label``)."""
    lab = np.asarray(labels)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if lab.shape != (b.size, a.size):
        raise ValueError(f"labels must be (len(b), len(a)) = {(b.size, a.size)}, got {lab.shape}")
    fig, ax = _axes(ax)
    ax.imshow(
        lab, origin="lower", extent=(a[0], a[-1], b[0], b[-1]), cmap="tab10",
        vmin=0, vmax=9, interpolation="nearest", aspect="auto", alpha=0.8,
    )  # fmt: skip
    if contour is not None and len(contour):
        c = np.asarray(contour, dtype=np.float64)
        ax.plot(c[:, 0], c[:, 1], "k.", ms=1.5, label="boundary")
    ax.plot([0], [0], "w*", ms=10, mec="k", label=center_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        cmap = plt.get_cmap("tab10")
        shown = np.unique(lab) if classes is None else np.unique(np.asarray(classes))
        handles = [Patch(color=cmap(int(k) % 10), alpha=0.8, label=f"class {int(k)}")
                   for k in shown]  # fmt: skip
        if contour is not None and len(contour):
            handles.append(Line2D([], [], ls="none", marker=".", color="k", ms=5,
                                  label="boundary"))  # fmt: skip
        handles.append(Line2D([], [], ls="none", marker="*", color="w", mec="k", ms=10,
                              label=center_label))  # fmt: skip
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                  frameon=False)  # fmt: skip
    return fig, ax


def plot_loss_surface(
    loss, a, b, *, ax=None, xlabel: str = "a (u)", ylabel: str = "b (v)", log: bool = True
):
    """Cross-entropy on the same plane (``Slice.loss``) as filled contours (log scale)."""
    z = np.asarray(loss, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if z.shape != (b.size, a.size):
        raise ValueError(f"loss must be (len(b), len(a)) = {(b.size, a.size)}, got {z.shape}")
    fig, ax = _axes(ax)
    data = np.log10(np.maximum(z, 1e-12)) if log else z
    cs = ax.contourf(a, b, data, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 loss" if log else "loss")
    ax.plot([0], [0], "w*", ms=10, mec="k")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Loss surface")
    return fig, ax
