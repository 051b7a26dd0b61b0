"""Figures of margins: distributions, subspace (frequency-band) profiles, perturbation grids.

Matplotlib only; every function takes arrays (NumPy or JAX), does no JAX computation, labels its
axes and returns ``(fig, ax)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["plot_margin_distribution", "plot_perturbation_grid", "plot_subspace_profile"]


def _axes(ax, figsize=(5.0, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def plot_margin_distribution(
    margins: Mapping[str, np.ndarray] | np.ndarray,
    converged: Mapping[str, np.ndarray] | np.ndarray | None = None,
    *,
    kind: str = "ecdf",
    bins: int = 30,
    xlabel: str = "margin ||r||",
    ax=None,
):
    """Histogram or ECDF of margins, several models overlaid (one entry per model).

    Unconverged margins (``converged`` False, or non-finite) are excluded and counted in the
    legend; the ECDF's y-axis is the fraction of ALL examples, so it stays below 1 when some
    did not converge.
    """
    if kind not in ("ecdf", "hist"):
        raise ValueError(f"kind must be 'ecdf' or 'hist', got {kind!r}")
    if not isinstance(margins, Mapping):
        margins = {"": margins}
        converged = None if converged is None else {"": converged}
    fig, ax = _axes(ax)
    for name, m in margins.items():
        m = np.asarray(m, np.float64).ravel()
        ok = np.isfinite(m)
        if converged is not None:
            ok &= np.asarray(converged[name], bool).ravel()
        v = np.sort(m[ok])
        label = f"{name} (n={m.size}, {int((~ok).sum())} unconverged)".strip()
        if kind == "ecdf":
            ax.step(v, np.arange(1, v.size + 1) / max(m.size, 1), where="post", label=label)
            ax.set_ylabel("fraction of examples with margin ≤ x")
        else:
            ax.hist(v, bins=bins, histtype="step", label=label)
            ax.set_ylabel("examples")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="small")
    return fig, ax


def plot_subspace_profile(
    margin: np.ndarray,
    converged: np.ndarray | None = None,
    *,
    band_labels: Sequence[str] | None = None,
    show_points: bool = True,
    log: bool = True,
    ax=None,
):
    """Margin per subspace (frequency band): median with interquartile bars and the points.

    ``margin``, ``converged``: ``(n_subspaces, N)``. Statistics use converged examples only;
    the number excluded per band is written above it.
    """
    m = np.asarray(margin, np.float64)
    if m.ndim != 2:
        raise ValueError(f"margin must be (n_subspaces, N), got shape {m.shape}")
    c = np.isfinite(m) if converged is None else np.asarray(converged, bool) & np.isfinite(m)
    fig, ax = _axes(ax, (6.5, 3.5))
    pos = np.arange(m.shape[0])
    med, lo, hi = (np.full(m.shape[0], np.nan) for _ in range(3))
    for i in range(m.shape[0]):
        v = m[i][c[i]]
        if v.size:
            lo[i], med[i], hi[i] = np.percentile(v, [25, 50, 75])
            if show_points:
                jitter = (np.random.default_rng(i).random(v.size) - 0.5) * 0.3
                ax.scatter(pos[i] + jitter, v, s=4, alpha=0.25, color="gray")
    ax.errorbar(pos, med, yerr=[med - lo, hi - med], fmt="o-", capsize=3, label="median, IQR")
    top = np.nanmax(hi) if np.isfinite(hi).any() else 1.0
    for i in range(m.shape[0]):
        excluded = int((~c[i]).sum())
        if excluded:
            ax.annotate(f"{excluded}✕", (pos[i], top), ha="center", va="bottom", fontsize=7)
    if log and np.isfinite(med).any():
        ax.set_yscale("log")
    ax.set_xticks(pos)
    ax.set_xticklabels(
        band_labels if band_labels is not None else [str(i) for i in pos],
        rotation=45 if m.shape[0] > 12 else 0,
        fontsize=7,
    )
    ax.set_xlabel("subspace (low → high frequency)")
    ax.set_ylabel("margin in subspace (L2)")
    ax.legend(fontsize="small", title="✕: unconverged, excluded", title_fontsize="x-small")
    fig.tight_layout()
    return fig, ax


def plot_perturbation_grid(
    images: np.ndarray,
    perturbations: np.ndarray,
    *,
    labels: Sequence | None = None,
    adv_labels: Sequence | None = None,
    max_rows: int = 6,
):
    """Rows of (clean image, perturbation, perturbed image) for NHWC (or NHW) arrays.

    The perturbation is shown rescaled to its own symmetric range (colour bar per row);
    images are shown in ``[0, 1]`` after clipping. Returns ``(fig, axes)`` with ``axes`` of
    shape ``(rows, 3)``.
    """
    import matplotlib.pyplot as plt

    x = np.asarray(images, np.float64)
    r = np.asarray(perturbations, np.float64)
    if x.shape != r.shape:
        raise ValueError(f"images and perturbations must match, got {x.shape} and {r.shape}")
    rows = min(max_rows, x.shape[0])
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)

    def show(a, img, **kw):
        img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        return a.imshow(img, cmap=kw.pop("cmap", "gray" if img.ndim == 2 else None), **kw)

    for i in range(rows):
        show(axes[i, 0], np.clip(x[i], 0, 1), vmin=0, vmax=1)
        s = np.abs(r[i]).max() or 1.0
        pr = r[i].mean(axis=-1) if r[i].ndim == 3 else r[i]
        im = show(axes[i, 1], pr, cmap="RdBu_r", vmin=-s, vmax=s)
        fig.colorbar(im, ax=axes[i, 1], fraction=0.046)
        show(axes[i, 2], np.clip(x[i] + r[i], 0, 1), vmin=0, vmax=1)
        axes[i, 0].set_ylabel(f"label {labels[i]}" if labels is not None else f"#{i}")
        if adv_labels is not None:
            axes[i, 2].set_title(f"→ {adv_labels[i]}", fontsize=8)
        for a in axes[i]:
            a.set_xticks([])
            a.set_yticks([])
    for j, t in enumerate(("clean", "perturbation", "perturbed")):
        axes[-1, j].set_xlabel(t, fontsize=9)
        if adv_labels is None:
            axes[0, j].set_title(t, fontsize=9)
    fig.tight_layout()
    return fig, axes
