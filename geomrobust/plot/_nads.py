"""Figures of neural anisotropy directions and Fourier accuracy maps (matplotlib only)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_accuracy_map", "plot_image_grid", "plot_nads"]


def plot_image_grid(images, *, ncols: int = 8, titles=None, cmap: str = "RdBu_r", symmetric=True):
    """A grid of images ``(n, H, W[, C])`` (channels averaged); returns ``(fig, axes)``."""
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim == 4:
        imgs = imgs.mean(-1)
    if imgs.ndim != 3:
        raise ValueError(f"images must be (n, H, W) or (n, H, W, C), got {imgs.shape}")
    n = imgs.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        m = np.abs(imgs[i]).max() or 1.0
        kw = dict(vmin=-m, vmax=m) if symmetric else {}
        ax.imshow(imgs[i], cmap=cmap, **kw)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    return fig, axes


def plot_nads(eigenvectors, eigenvalues=None, *, ncols: int = 8, fourier: bool = False):
    """Leading NADs as images (``NADs.eigenvectors``), or their centred DFT magnitudes
    (``fourier=True``, pass ``fourier_magnitude(eigenvectors)``); titled by eigenvalue."""
    titles = None
    if eigenvalues is not None:
        titles = [f"λ={float(v):.2g}" for v in np.asarray(eigenvalues)]
    if fourier:
        fig, axes = plot_image_grid(eigenvectors, ncols=ncols, titles=titles, cmap="magma",
                                    symmetric=False)  # fmt: skip
    else:
        fig, axes = plot_image_grid(eigenvectors, ncols=ncols, titles=titles)
    # above the tiles' titles, never on them (saved with bbox_inches="tight")
    fig.suptitle("NADs: |DFT|" if fourier else "Neural anisotropy directions", y=1.0,
                 va="bottom")  # fmt: skip
    return fig, axes


def plot_accuracy_map(
    grid, *, ax=None, title: str = "Fourier accuracy map", stride: int = 1, centered: bool = False
):
    """Test accuracy on ``D(v)`` per 2-D frequency (``AccuracyMap.grid``, ``(H, W)``).

    ``stride=s`` draws the computed frequencies of a map made with every ``s``-th frequency,
    ``grid[::s, ::s]`` (the others are NaN). ``centered=True`` draws it as the NADs paper
    does: signed frequencies in ``[-H/2, H/2)``, the zero frequency in the middle, and the axes
    labelled by frequency.
    """
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"grid must be (H, W), got {g.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    else:
        fig = ax.figure
    s = int(stride)
    labels = [np.arange(0, n, s) for n in g.shape]
    g = g[::s, ::s]
    if centered:
        signed = [np.where(f >= n // 2, f - n, f) for f, n in zip(labels, grid.shape, strict=True)]
        order = [np.argsort(f, kind="stable") for f in signed]
        g = g[np.ix_(order[0], order[1])]
        labels = [f[o] for f, o in zip(signed, order, strict=True)]
    im = ax.imshow(g, vmin=0.5, vmax=1.0, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label="test accuracy")
    for lab, set_ticks, set_labels in (
        (labels[1], ax.set_xticks, ax.set_xticklabels),
        (labels[0], ax.set_yticks, ax.set_yticklabels),
    ):
        step = max(1, len(lab) // 8)
        set_ticks(np.arange(0, len(lab), step))
        set_labels([str(int(v)) for v in lab[::step]])
    ax.set_xlabel("frequency j")
    ax.set_ylabel("frequency i")
    ax.set_title(f"{title}\n(mean {np.nanmean(g):.0%})")
    return fig, ax
