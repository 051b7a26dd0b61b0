"""Figures of frequency and noise robustness: Fourier heat maps, perturbation spectra, error in
Gaussian noise, accuracy under corruptions (matplotlib only; arrays in, ``(fig, ax)`` out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

__all__ = ["plot_corruption_accuracy", "plot_fourier_heat_maps", "plot_noise_errors"]


def _colors(n: int, colors=None) -> list:
    return list(colors) if colors is not None else [f"C{i}" for i in range(n)]


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_fourier_heat_maps(
    grids: Mapping[str, np.ndarray], spectra: Mapping[str, np.ndarray] | None = None
):
    """One column per model: the Fourier heat map (error per 2-D frequency, zero frequency
    at the centre, ``FourierHeatMap.grid``) above the mean DFT magnitude of its adversarial
    perturbations (``perturbation_spectrum``, log scale). Returns ``(fig, axes)``, axes
    ``(2, len(grids))`` (one row when ``spectra`` is None)."""
    names = list(grids)
    rows = 1 if spectra is None else 2
    fig, axes = plt.subplots(rows, len(names), figsize=(4.6 * len(names), 3.6 * rows),
                             squeeze=False)  # fmt: skip
    for col, name in enumerate(names):
        g = np.asarray(grids[name], np.float64)
        im = axes[0, col].imshow(g, vmin=0, vmax=1, cmap="viridis")
        axes[0, col].set_title(f"{name}: error under Fourier noise", fontsize=9)
        fig.colorbar(im, ax=axes[0, col], fraction=0.046, label="error rate")
        if rows == 2:
            spec = spectra.get(name)
            if spec is not None:
                im = axes[1, col].imshow(np.log10(np.maximum(np.asarray(spec), 1e-6)),
                                         cmap="magma")  # fmt: skip
                fig.colorbar(im, ax=axes[1, col], fraction=0.046, label="log10 |DFT|")
            axes[1, col].set_title(f"{name}: spectrum of DeepFool perturbations", fontsize=9)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("horizontal frequency (0 at centre)", fontsize=8)
            if col == 0:  # one label per row: beside a colour bar it would collide
                ax.set_ylabel("vertical frequency (0 at centre)", fontsize=8)
    fig.tight_layout()
    return fig, axes


def plot_noise_errors(
    sigmas: Sequence[float],
    measured: Mapping[str, Sequence[float]],
    predicted: Mapping[str, Sequence[float]] | None = None,
    *,
    ax=None,
    colors=None,
):
    """Error rate under Gaussian noise against σ (log axis), measured (solid) and, if given,
    the flat-boundary prediction ``Φ(-d/σ)`` (dashed), one colour per model."""
    fig, ax = _axes(ax, (5.5, 3.8))
    sig = np.asarray(sigmas, np.float64)
    for (name, e), c in zip(measured.items(), _colors(len(measured), colors), strict=True):
        ax.plot(sig, np.asarray(e, np.float64), marker="o", color=c, label=f"{name}: measured")
        if predicted is not None and name in predicted:
            ax.plot(sig, np.asarray(predicted[name], np.float64), ls="--", color=c,
                    label=f"{name}: flat boundary Φ(-d/σ)")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(mticker.FixedLocator(sig))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("noise std σ (per pixel)")
    ax.set_ylabel("error rate in Gaussian noise")
    ax.set_title("Error in Gaussian noise")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    return fig, ax


def plot_corruption_accuracy(
    names: Sequence[str], accuracy: Mapping[str, np.ndarray], *, ax=None, colors=None
):
    """Accuracy under each corruption, the mean over severities (``accuracy = {label:
    (len(names), severities)}``), grouped bars, the legend above the axes (never on a
    bar)."""
    fig, ax = _axes(ax, (5.5, 3.8))
    width = 0.8 / max(len(accuracy), 1)
    pos = np.arange(len(names))
    for i, ((label, acc), c) in enumerate(
        zip(accuracy.items(), _colors(len(accuracy), colors), strict=True)
    ):
        acc = np.asarray(acc, np.float64)
        ax.bar(pos + (i - (len(accuracy) - 1) / 2) * width, acc.mean(axis=1), width, color=c,
               label=label)  # fmt: skip
    ax.set_xticks(pos)
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=30, ha="right",
                       fontsize=8)  # fmt: skip
    ax.set_ylabel("accuracy (mean of severities)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(accuracy),
              frameon=False)  # fmt: skip
    return fig, ax
