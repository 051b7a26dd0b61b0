"""Figures of boundary curvature and loss spectra (matplotlib only: arrays in, (fig, ax) out)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "plot_curvature_magnitudes",
    "plot_curvature_spectrum",
    "plot_eigenvalue_spectra",
    "plot_shared_directions",
    "plot_singular_values",
    "plot_spectral_density",
]


def _axes(ax, figsize=(5, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _colors(n: int, colors=None) -> list:
    return list(colors) if colors is not None else [f"C{i}" for i in range(n)]


def plot_curvature_spectrum(
    values, *, ax=None, per_point: bool = True, max_points: int = 20, color: str = "C0",
    label: str | None = None,
):  # fmt: skip
    """Principal curvatures against their rank by magnitude: the median ``|κ_i|`` per rank
    with its 25–75% band (the numbers a report's table gives), and each point's curvatures
    as markers at ``|κ_i|`` showing the sign (red ▲: bends towards the example's class,
    blue ▼: away from it).

    Parameters
    ----------
    values : ``(N, num)`` principal curvatures, largest magnitude first (``Curvatures.values``).
    per_point : draw each point's curvatures (at most ``max_points`` points).
    color, label : of the median line (label default ``"median |κ|"``).

    The signed median per rank is not drawn: the sign of the i-th largest curvature differs
    between points, so that median zig-zags around zero and hides the magnitude.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (N, num), got shape {v.shape}")
    fig, ax = _axes(ax)
    rank = np.arange(1, v.shape[1] + 1)
    a = np.abs(v)
    if per_point and v.shape[0]:
        pts = v[:max_points]
        rr = np.broadcast_to(rank, pts.shape)
        pos = pts > 0
        ax.scatter(rr[pos], np.abs(pts[pos]), marker="^", s=24, color="tab:red", alpha=0.7,
                   lw=0, label="κ > 0 (one point)")  # fmt: skip
        ax.scatter(rr[~pos], np.abs(pts[~pos]), marker="v", s=24, color="tab:blue",
                   alpha=0.7, lw=0, label="κ < 0 (one point)")  # fmt: skip
    q1, med, q3 = np.percentile(a, [25, 50, 75], axis=0)
    ax.fill_between(rank, q1, q3, color=color, alpha=0.2)
    ax.plot(rank, med, color=color, lw=2, marker="o", ms=3,
            label=label or "median |κ| (25–75%)")  # fmt: skip
    ax.set_ylim(bottom=0.0)
    ax.set_xticks(rank)
    ax.set_xlabel("rank i by |curvature|")
    ax.set_ylabel("|principal curvature κ_i|")
    ax.set_title("Boundary curvature spectrum")
    ax.legend(loc="upper right", fontsize=8)
    return fig, ax


def plot_curvature_magnitudes(values, *, ax=None, colors=None):
    """Several models' curvature spectra on one axis: the median ``|κ_i|`` per rank with its
    25–75% band, one colour per model, the median ``|κ_1|`` in the legend.

    ``values``: ``{label: (N, num) principal curvatures}`` (converged points only)."""
    fig, ax = _axes(ax)
    for (name, v), c in zip(values.items(), _colors(len(values), colors), strict=True):
        a = np.abs(np.asarray(v, dtype=np.float64))
        if a.ndim != 2:
            raise ValueError(f"values[{name!r}] must be (N, num), got shape {a.shape}")
        if a.shape[0] == 0:
            continue
        rank = np.arange(1, a.shape[1] + 1)
        q1, med, q3 = np.percentile(a, [25, 50, 75], axis=0)
        ax.fill_between(rank, q1, q3, color=c, alpha=0.2)
        ax.plot(rank, med, color=c, lw=2, marker="o", ms=3,
                label=f"{name} (median |κ₁| {med[0]:.3g})")  # fmt: skip
        ax.set_xticks(rank)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("rank i by |curvature|")
    ax.set_ylabel("median |κ_i| (25–75% band)")
    ax.set_title("Curvature magnitude by rank")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig, ax


def plot_singular_values(
    normalized, *, ax=None, label: str | None = None, log: bool = True, color=None,
    linestyle: str = "-",
):  # fmt: skip
    """Decay of normalised singular values ``σ_i/σ_1`` (``SharedDirections.normalized``)."""
    s = np.asarray(normalized, dtype=np.float64).ravel()
    fig, ax = _axes(ax)
    ax.plot(np.arange(1, s.size + 1), s, marker="o", ms=3, label=label, color=color,
            linestyle=linestyle)  # fmt: skip
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title("Shared directions: singular-value decay")
    if label is not None:
        ax.legend(loc="best", fontsize=8)  # rebuilt on every call: every line is in it
    return fig, ax


def plot_shared_directions(normals, top_directions=None, *, ax=None, colors=None):
    """Singular-value decay of several models' stacked boundary normals (solid) and top
    curved directions (dashed), one colour per model: ``{label: σ_i/σ_1}`` each."""
    fig, ax = _axes(ax, (5.5, 3.6))
    cs = _colors(len(normals), colors)
    for (name, sv), c in zip(normals.items(), cs, strict=True):
        plot_singular_values(sv, ax=ax, label=f"{name}: normals", color=c)
        if top_directions is not None and name in top_directions:
            plot_singular_values(top_directions[name], ax=ax, color=c, linestyle="--",
                                 label=f"{name}: top curved directions")  # fmt: skip
    return fig, ax


def plot_eigenvalue_spectra(values, *, ax=None, colors=None, linthresh: float = 1e-3,
                            ylabel: str = "eigenvalue"):  # fmt: skip
    """Top eigenvalues by rank for several models (e.g. of the input-space loss Hessian):
    median and 25–75% band per rank on a symmetric log scale; ``{label: (N, num)}``."""
    fig, ax = _axes(ax, (5.5, 3.6))
    for (name, v), c in zip(values.items(), _colors(len(values), colors), strict=True):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 2:
            raise ValueError(f"values[{name!r}] must be (N, num), got shape {v.shape}")
        if v.shape[0] == 0:
            continue
        rank = np.arange(1, v.shape[1] + 1)
        q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
        ax.fill_between(rank, q1, q3, color=c, alpha=0.2)
        ax.plot(rank, med, marker="o", color=c, label=f"{name} (median λ₁ {med[0]:.3g})")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig, ax


def plot_spectral_density(grid, density, *, ax=None, label: str | None = None, log: bool = False):
    """Spectral density of the input-space loss Hessian (``spectral_density`` output).

    ``density`` is ``(G,)`` or ``(N, G)`` (then the mean over examples is drawn).
    """
    t = np.asarray(grid, dtype=np.float64)
    rho = np.asarray(density, dtype=np.float64)
    if rho.ndim == 2:
        rho = rho.mean(0)
    if rho.shape != t.shape:
        raise ValueError(f"density must match grid {t.shape}, got {rho.shape}")
    fig, ax = _axes(ax)
    ax.plot(t, rho, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue of ∇²ℓ(x)")
    ax.set_ylabel("density")
    ax.set_title("Loss-Hessian spectral density (SLQ)")
    if label is not None:
        ax.legend(loc="best", fontsize=8)
    return fig, ax
