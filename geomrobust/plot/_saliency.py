"""Figures of gradient alignment, saliency maps and class synthesis (matplotlib only; arrays
in, ``(fig, ax)`` out)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_alignment", "plot_class_synthesis", "plot_saliency"]


def _image(ax, img, *, signed=False, title=None):
    v = np.asarray(img, np.float64)
    v = v[..., 0] if v.ndim == 3 and v.shape[-1] == 1 else v
    if signed:
        v = v.sum(-1) if v.ndim == 3 else v
        lim = max(float(np.abs(v).max()), 1e-12)
        ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        ax.imshow(np.clip(v, 0, 1), cmap="gray" if v.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_alignment(
    margins: Mapping[str, np.ndarray], alignment: Mapping[str, np.ndarray], *, ax=None,
    colors=None,
):  # fmt: skip
    """Gradient-image alignment ``|<x, ∇f_y>| / (‖x‖‖∇f_y‖)`` against the L2 margin, one
    point per example (non-finite ones left out), one colour per model."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
    fig = ax.figure
    cs = list(colors) if colors is not None else [f"C{i}" for i in range(len(margins))]
    for (name, d), c in zip(margins.items(), cs, strict=True):
        d, a = np.asarray(d, np.float64), np.asarray(alignment[name], np.float64)
        ok = np.isfinite(d) & np.isfinite(a)
        ax.scatter(d[ok], a[ok], s=12, color=c, label=f"{name} ({int(ok.sum())} examples)")
    ax.set_xlabel("DeepFool L2 margin")
    ax.set_ylabel("alignment |<x, ∇f_y>| / (‖x‖‖∇f_y‖)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def plot_saliency(
    inputs: np.ndarray,
    maps: Mapping[str, Mapping[str, np.ndarray]],
):
    """Saliency maps next to the image they explain: one row per example ``inputs[j]``, then
    for every model (``maps = {model: {method: (n, H, W[, C]) maps}}``) one column per
    method; red positive, blue negative, each map on its own symmetric scale. Returns
    ``(fig, axes)`` with axes ``(n, 1 + Σ methods)``."""
    x = np.asarray(inputs)
    n = x.shape[0]
    cols = [(model, method, np.asarray(m)) for model, per in maps.items()
            for method, m in per.items()]  # fmt: skip
    fig, axes = plt.subplots(n, 1 + len(cols), figsize=(1.55 * (1 + len(cols)), 1.6 * n + 0.4),
                             squeeze=False)  # fmt: skip
    for j in range(n):
        _image(axes[j, 0], x[j], title="input" if j == 0 else None)
        axes[j, 0].set_ylabel(f"example {j}", fontsize=8)
        for c, (model, method, m) in enumerate(cols):
            _image(axes[j, 1 + c], m[j], signed=True,
                   title=f"{model}\n{method}" if j == 0 else None)  # fmt: skip
    fig.tight_layout()
    return fig, axes


def plot_class_synthesis(
    seed: np.ndarray, images: Mapping[str, np.ndarray], success: Mapping[str, np.ndarray]
):
    """Images synthesised from ``seed`` towards every class, one row per model
    (``images = {model: (classes, H, W[, C])}``, ``success = {model: (classes,) bool}``;
    ✗ marks a class not reached). Returns ``(fig, axes)``."""
    names = list(images)
    ncls = np.asarray(images[names[0]]).shape[0]
    fig, axes = plt.subplots(len(names), ncls + 1,
                             figsize=(1.3 * (ncls + 1), 1.55 * len(names) + 0.3),
                             squeeze=False)  # fmt: skip
    for row, name in zip(axes, names, strict=True):
        _image(row[0], seed, title="seed")
        row[0].set_ylabel(name, fontsize=8)
        ok = np.asarray(success[name])
        for c in range(ncls):
            _image(row[1 + c], np.asarray(images[name])[c],
                   title=f"→ {c}" + ("" if ok[c] else " ✗"))  # fmt: skip
    fig.tight_layout()
    return fig, axes
