"""Figures of margins: distributions, subspace (frequency-band) profiles, perturbation grids.

Matplotlib only; every function takes arrays (NumPy or JAX), does no JAX computation, labels its
axes and returns ``(fig, ax)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "plot_band_margins",
    "plot_ecdf",
    "plot_histograms",
    "plot_margin_distribution",
    "plot_perturbation_grid",
    "plot_subspace_profile",
    "plot_subspace_ratios",
]


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


def _colors(n: int, colors=None) -> list:
    return list(colors) if colors is not None else [f"C{i}" for i in range(n)]


def plot_ecdf(
    values: Mapping[str, np.ndarray],
    *,
    ax=None,
    xlabel: str = "value",
    ylabel: str = "fraction of examples ≤ x",
    colors=None,
    legend_loc: str = "lower right",
):
    """Cumulative distributions of several models' values (margins, ratios), one step curve
    per ``{label: values}`` entry, its median in the legend.

    Non-finite values (unconverged searches) are left out of each curve; the y axis is the
    fraction of the finite ones (the caller reports how many were left out)."""
    fig, ax = _axes(ax)
    for (name, v), c in zip(values.items(), _colors(len(values), colors), strict=True):
        v = np.asarray(v, np.float64).ravel()
        v = np.sort(v[np.isfinite(v)])
        if v.size == 0:
            continue
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=c,
                label=f"{name} (median {np.median(v):.3g})")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    return fig, ax


def plot_histograms(
    values: Mapping[str, np.ndarray], *, ax=None, bins: int = 24, xlabel: str = "value",
    colors=None,
):  # fmt: skip
    """Step histograms of several models' values on common bins (non-finite values left
    out), the median of each in the legend."""
    fig, ax = _axes(ax, (5.5, 3.4))
    vals = {k: np.asarray(v, np.float64).ravel() for k, v in values.items()}
    vals = {k: v[np.isfinite(v)] for k, v in vals.items()}
    allv = np.concatenate([v for v in vals.values() if v.size] or [np.zeros(1)])
    edges = np.linspace(min(0.0, float(allv.min())), max(float(allv.max()), 1e-6) * 1.05,
                        bins + 1)  # fmt: skip
    for (name, v), c in zip(vals.items(), _colors(len(vals), colors), strict=True):
        if v.size:
            ax.hist(v, bins=edges, histtype="step", lw=2, color=c,
                    label=f"{name} (median {np.median(v):.3g})")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def plot_band_margins(
    profiles: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    ax=None,
    xlabel: str = "DCT band j (low → high frequency)",
    colors=None,
):
    """Median margin per subspace band for several models, with the 25–75% band, on a log
    scale; ``profiles = {label: {"median", "q25", "q75", "n_unconverged"}}`` (per band).

    The number of examples without a boundary inside each band (left out of the median) is
    written in a row per model above the axes, in the model's colour, so it never overlaps
    the curves or the frame."""
    fig, ax = _axes(ax, (6.5, 3.8))
    cs = _colors(len(profiles), colors)
    nb = 0
    for (name, p), c in zip(profiles.items(), cs, strict=True):
        med, q1, q3 = (np.array([np.nan if v is None else float(v) for v in p[k]], np.float64)
                       for k in ("median", "q25", "q75"))  # fmt: skip
        band = np.arange(med.size)
        nb = max(nb, med.size)
        ax.fill_between(band, q1, q3, color=c, alpha=0.2)
        ax.plot(band, med, marker="o", color=c, label=f"{name} (median, 25–75%)")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(nb))
    ax.set_xlim(-0.5, nb - 0.5)
    ax.margins(y=0.1)
    from matplotlib.transforms import blended_transform_factory

    tr = blended_transform_factory(ax.transData, ax.transAxes)
    rows = [(name, p, c) for (name, p), c in zip(profiles.items(), cs, strict=True)
            if any(int(u or 0) for u in p.get("n_unconverged", ()))]  # fmt: skip
    step = 10  # points per row of counts
    for r, (_, p, c) in enumerate(rows):
        for j, u in enumerate(p["n_unconverged"]):
            ax.annotate(str(int(u or 0)), (j, 1.0), xycoords=tr, xytext=(0, 4 + step * r),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        color=c, annotation_clip=False)  # fmt: skip
    if rows:
        ax.annotate("no boundary in band:", (0.0, 1.0), xycoords="axes fraction",
                    xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom",
                    fontsize=7, annotation_clip=False)  # fmt: skip
    ax.set_title("Margins in DCT subspaces", pad=8 + step * len(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("L2 margin inside the band")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return fig, ax


def plot_subspace_ratios(
    dims: Sequence[int],
    ratios: Mapping[str, Sequence[float]],
    *,
    total_dim: int,
    ax=None,
    colors=None,
):
    """Median ratio of the margin in a random ``m``-dimensional subspace to the minimal
    margin against ``m`` (log-log), with the flat-boundary prediction ``sqrt(D/m)``
    (Fawzi et al. 2016); ``ratios = {label: median ratio per m}``."""
    import matplotlib.ticker as mticker

    fig, ax = _axes(ax, (5.5, 3.6))
    d = np.asarray(dims, np.float64)
    ax.plot(d, np.sqrt(total_dim / d), "k--", label="√(D/m): flat boundary")
    for (name, r), c in zip(ratios.items(), _colors(len(ratios), colors), strict=True):
        r = np.array([np.nan if v is None else float(v) for v in r], np.float64)
        ax.plot(d, r, marker="o", color=c, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # label the measured dimensions only: log-axis minor labels overlap on a short range
    ax.xaxis.set_major_locator(mticker.FixedLocator(d))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    ax.set_xlabel("subspace dimension m")
    ax.set_ylabel("median random-subspace / minimal margin")
    ax.set_title(f"Random vs adversarial margins (D = {total_dim})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig, ax
