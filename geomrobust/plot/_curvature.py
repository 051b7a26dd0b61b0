"""Figures of boundary curvature and loss spectra (matplotlib only: arrays in, (fig, ax) out)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_curvature_spectrum", "plot_singular_values", "plot_spectral_density"]


def _axes(ax, figsize=(5, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_curvature_spectrum(values, *, ax=None, per_point: bool = True, max_points: int = 20):
    """Principal curvatures against their rank (by magnitude), per point and aggregated.

    Parameters
    ----------
    values : ``(N, num)`` principal curvatures, largest magnitude first (``Curvatures.values``).
    per_point : draw each point's spectrum (thin lines, at most ``max_points``).

    The aggregate is the median over points with the 25–75% band; the zero line marks a flat
    boundary.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (N, num), got shape {v.shape}")
    fig, ax = _axes(ax)
    rank = np.arange(1, v.shape[1] + 1)
    if per_point:
        for row in v[:max_points]:
            ax.plot(rank, row, color="0.6", lw=0.7, alpha=0.7)
    q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
    ax.fill_between(rank, q1, q3, color="C0", alpha=0.25, label="25–75%")
    ax.plot(rank, med, color="C0", lw=2, marker="o", ms=3, label="median")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xlabel("rank by |curvature|")
    ax.set_ylabel("principal curvature κ")
    ax.set_title("Boundary curvature spectrum")
    ax.legend(loc="best", fontsize=8)
    return fig, ax


def plot_singular_values(normalized, *, ax=None, label: str | None = None, log: bool = True):
    """Decay of normalised singular values ``σ_i/σ_1`` (``SharedDirections.normalized``)."""
    s = np.asarray(normalized, dtype=np.float64).ravel()
    fig, ax = _axes(ax)
    ax.plot(np.arange(1, s.size + 1), s, marker="o", ms=3, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title("Shared directions: singular-value decay")
    if label is not None:
        ax.legend(loc="best", fontsize=8)
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
