"""Figures of the report: one function per stage, arrays in, PNG files + plain-words captions out.

No JAX here: every figure is drawn from the arrays a stage saved, so a resumed report redraws
its figures without recomputing anything.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

from geomrobust.io import atomic_write

__all__ = ["draw_stage"]

DPI = 100


def _save(fig, out: Path, file: str, title: str, caption: str) -> dict:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write(out / file, buf.getvalue())  # never a half-written PNG
    return {"file": file, "title": title, "caption": caption}


def _color(i: int) -> str:
    return f"C{i}"


def _floats(values) -> np.ndarray:
    """Summary numbers as floats: the JSON record holds non-finite ones as ``"nan"``,
    ``"inf"`` (:func:`geomrobust.io.to_json_text`) and missing ones as None."""
    return np.array([np.nan if v is None else float(v) for v in values], float)


def _method(m) -> str | None:
    """The training method recorded in the model's checkpoint (``standard``, ``pgd``, ...),
    None for models that come from elsewhere."""
    meta = m.metadata if isinstance(m.metadata, dict) else {}
    method = meta.get("method")
    return method if isinstance(method, str) else None


def versus_literature(
    models, medians: dict, *, quantity: str, claim: str, robust_higher: bool, tol: float = 0.0
):
    """One or two sentences: what the literature reports (``claim``), then what this run
    shows (the median ``quantity`` per model) and whether the two agree.

    ``medians``: model name -> the value of the quantity (NaN when it could not be
    measured); ``quantity`` names it, e.g. "median L2 margin".
    The comparison is made between the model trained with ``method == "standard"`` and each
    robustly trained one (any other recorded method); models without a recorded method are
    listed but not compared. A difference of at most ``tol`` (e.g. one example's share of
    an error rate) is "no measurable difference", neither agreement nor disagreement.
    Returns the text, never raises.
    """
    shown = [f"{m.label} {medians[m.name]:.3g}" for m in models if m.name in medians]
    text = f"The literature reports that {claim}."
    if not shown:
        return text
    text += f" In this run the {quantity} is " + ", ".join(shown) + "."
    standard = [m for m in models if _method(m) == "standard" and m.name in medians]
    robust = [m for m in models if _method(m) not in (None, "standard") and m.name in medians]
    if not standard or not robust:
        return text
    s = medians[standard[0].name]
    verdicts = []
    for m in robust:
        r = medians[m.name]
        if not (np.isfinite(s) and np.isfinite(r)):
            verdicts.append(f"{m.label}: not comparable (no finite value)")
            continue
        change = f"{r / s:.2f}×" if s > 0 and r > 0 else f"{r - s:+.3g}"
        if abs(r - s) <= tol:
            verdicts.append(f"{m.label} vs {standard[0].label}: no measurable difference")
            continue
        agrees = (r > s) if robust_higher else (r < s)
        verdicts.append(
            f"{m.label} vs {standard[0].label}: {change} — "
            + ("agrees with the literature" if agrees else "DISAGREES with the literature")
        )
    return text + " " + "; ".join(verdicts) + "."


def _median_of(arrays, models, values: str, valid: str, column=None) -> dict:
    out = {}
    for m in models:
        if f"{m.name}__{values}" not in arrays:
            continue
        v = np.asarray(arrays[f"{m.name}__{values}"], float)[
            np.asarray(arrays[f"{m.name}__{valid}"])
        ]
        if column is not None:
            v = np.abs(v[:, column]) if v.ndim == 2 else v[:0]
        out[m.name] = float(np.median(v)) if v.size else float("nan")
    return out


def _margins(arrays, summary, models, out):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, tag, name in zip(axes, ("l2", "linf"), ("L2", "L∞"), strict=True):
        for i, m in enumerate(models):
            v = arrays[f"{m.name}__{tag}_margin"][arrays[f"{m.name}__{tag}_converged"]]
            if v.size == 0:
                continue
            s = np.sort(v)
            ax.step(
                s,
                np.arange(1, s.size + 1) / s.size,
                where="post",
                color=_color(i),
                label=f"{m.label} (median {np.median(s):.3g})",
            )
        ax.set_xlabel(f"DeepFool {name} margin ‖r‖")
        ax.set_ylabel("fraction of examples ≤ margin")
        ax.set_title(f"{name} margins")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    cap = (
        "Cumulative distribution of the distance from each held-out example to the nearest "
        "decision boundary, estimated by DeepFool (left: Euclidean L2 distance; right: "
        "largest per-pixel change L∞). A curve further to the right means examples sit "
        "further from the boundary, i.e. the model is more robust. Examples on which "
        "DeepFool did not converge are left out and counted in the table. "
    ) + versus_literature(
        models,
        _median_of(arrays, models, "l2_margin", "l2_converged"),
        quantity="median L2 margin",
        claim="adversarial training moves examples further from the boundary (larger "
        "margins; Madry et al. 2018)",
        robust_higher=True,
    )
    return [_save(fig, out, "margins.png", "Margin distributions", cap)]


def _dct(arrays, summary, models, out):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    nb = summary["n_bands"]
    band = np.arange(nb)
    for i, m in enumerate(models):
        s = summary[m.name]
        med, q1, q3 = (_floats(s[k]) for k in ("median", "q25", "q75"))
        ax.fill_between(band, q1, q3, color=_color(i), alpha=0.2)
        ax.plot(band, med, marker="o", color=_color(i), label=f"{m.label} (median, 25–75%)")
        for j, bad in enumerate(s["n_unconverged"]):
            if bad and np.isfinite(med[j]):
                ax.annotate(
                    f"{bad}∞",
                    (j, med[j]),
                    fontsize=7,
                    color=_color(i),
                    xytext=(3, 4),
                    textcoords="offset points",
                )
    ax.set_yscale("log")
    ax.set_xticks(band)
    k, t = summary["block"], summary["stride"]
    ax.set_xlabel(f"DCT band j: frequencies [{t}j, {t}j+{k}) on both axes (low → high)")
    ax.set_ylabel("L2 margin inside the band")
    ax.set_title("Margins in DCT subspaces (Hold me tight!)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cap = (
        f"Distance to the boundary when the perturbation may only use a {k}×{k} block of 2-D "
        "DCT frequencies (x axis: from the lowest-frequency block on the left to the "
        "highest on the right; log scale). Small values mean the model is sensitive to "
        "that frequency band; very large values mean it is nearly invariant there. Labels "
        "'n∞' count examples for which no boundary was found inside the band (excluded "
        "from the median, a lower bound on the true margin)."
    )
    return [_save(fig, out, "dct_margins.png", "DCT-subspace margin profile", cap)]


def _random(arrays, summary, models, out):
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    dims = np.asarray(summary["dims"], float)
    ax.plot(dims, summary["predicted_ratio"], "k--", label="√(D/m): flat boundary")
    for i, m in enumerate(models):
        med = _floats(summary[m.name]["median_ratio"])
        ax.plot(dims, med, marker="o", color=_color(i), label=m.label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # label the measured dimensions only: log-axis minor labels overlap on a short range
    ax.xaxis.set_major_locator(mticker.FixedLocator(dims))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    ax.set_xlabel("subspace dimension m")
    ax.set_ylabel("median random-subspace / minimal margin")
    ax.set_title(f"Random vs adversarial margins (D = {summary['D']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cap = (
        "How much further the boundary is along a random m-dimensional subspace than along "
        "the worst-case (adversarial) direction, as the median ratio of the two margins. "
        "For a flat boundary the ratio is about √(D/m) (dashed line); points below the "
        "line mean the boundary curves towards the data, so random noise finds it sooner "
        "than flatness predicts."
    )
    return [_save(fig, out, "random_ratio.png", "Random vs adversarial margins", cap)]


def _curvature(arrays, summary, models, out):
    from geomrobust.plot import plot_curvature_spectrum, plot_singular_values

    have = [m for m in models if f"{m.name}__values" in arrays]
    if not have:
        return []
    fig, axes = plt.subplots(1, len(have), figsize=(4.6 * len(have), 3.4), squeeze=False)
    lim = 0.0
    for ax, m in zip(axes[0], have, strict=True):
        v = arrays[f"{m.name}__values"][arrays[f"{m.name}__converged"]]
        if v.size == 0:
            ax.set_title(f"{m.label}: no converged point")
            continue
        plot_curvature_spectrum(v, ax=ax)
        ax.set_title(f"{m.label}: principal curvatures")
        lim = max(lim, float(np.abs(v).max()))
    for ax in axes[0]:
        if lim > 0:
            ax.set_ylim(-1.05 * lim, 1.05 * lim)
    cap = (
        "Principal curvatures of the decision boundary at boundary points next to held-out "
        "examples, sorted by magnitude (grey: one line per point; blue: median and 25–75% "
        "band). Zero means a flat boundary in that direction; positive means it bends "
        "towards the example's class. A few large values followed by values near zero "
        "mean the boundary is flat in most directions and curved in a few; both panels "
        "share the y axis. "
    ) + versus_literature(
        models,
        _median_of(arrays, models, "values", "converged", column=0),
        quantity="median |κ₁| (largest principal curvature in magnitude)",
        claim="robust training flattens the decision boundary near the data (smaller "
        "curvature; Fawzi et al. 2018, Moosavi-Dezfooli et al. 2019)",
        robust_higher=False,
    )
    figs = [_save(fig, out, "curvature_spectrum.png", "Boundary curvature spectra", cap)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, m in enumerate(have):
        plot_singular_values(arrays[f"{m.name}__normals_sv"], ax=ax, label=f"{m.label}: normals")
        ax.lines[-1].set_color(_color(i))
        plot_singular_values(
            arrays[f"{m.name}__top_sv"], ax=ax, label=f"{m.label}: top curved directions"
        )
        ax.lines[-1].set_color(_color(i))
        ax.lines[-1].set_linestyle("--")
    cap = (
        "Are the boundary normals and the most curved directions shared across examples? "
        "Normalised singular values σ_i/σ_1 of the stacked unit vectors (one per example). "
        "A fast drop means the vectors from different examples span only a few common "
        "directions (a shared, low-dimensional subspace, the one universal perturbations "
        "exploit); a flat curve means they point in unrelated directions."
    )
    figs.append(_save(fig, out, "shared_directions.png", "Shared directions", cap))
    return figs


def _loss_hessian(arrays, summary, models, out):
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, m in enumerate(models):
        v = arrays[f"{m.name}__values"][arrays[f"{m.name}__converged"]]
        if v.size == 0:
            continue
        rank = np.arange(1, v.shape[1] + 1)
        q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
        ax.fill_between(rank, q1, q3, color=_color(i), alpha=0.2)
        ax.plot(rank, med, marker="o", color=_color(i), label=m.label)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue of ∇²ₓ loss")
    ax.set_title("Input-space loss Hessian: top eigenvalues")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cap = (
        "The largest eigenvalues of the Hessian of the cross-entropy loss with respect to "
        "the input, at held-out examples (median and 25–75% band; symmetric log scale). "
        "Large eigenvalues mean the loss bends sharply in a few input directions. "
    ) + versus_literature(
        models,
        _median_of(arrays, models, "values", "converged", column=0),
        quantity="median top eigenvalue",
        claim="robust training lowers them, i.e. a flatter loss in input space "
        "(Moosavi-Dezfooli et al. 2019, CURE); on a very confident standard model the loss "
        "and its Hessian can also be near zero at most test points",
        robust_higher=False,
    )
    return [_save(fig, out, "loss_hessian.png", "Loss-Hessian spectra", cap)]


def _slices(arrays, summary, models, out):
    from geomrobust.plot import plot_slice

    have = [m for m in models if f"{m.name}__curved_labels" in arrays]
    if not have:
        return []
    planes = (
        ("curved", "top curved direction", "boundary normal"),
        ("flat", "random tangent direction", "boundary normal"),
        ("data", "adversarial direction", "random direction"),
    )
    fig, axes = plt.subplots(len(have), 3, figsize=(12, 3.6 * len(have)), squeeze=False)
    for row, m in zip(axes, have, strict=True):
        for ax, (tag, xl, yl) in zip(row, planes, strict=True):
            p = f"{m.name}__{tag}"
            plot_slice(
                arrays[f"{p}_labels"],
                arrays[f"{p}_a"],
                arrays[f"{p}_b"],
                arrays[f"{p}_contour"],
                ax=ax,
                xlabel=xl,
                ylabel=yl,
                title=f"{m.label}: {'data point' if tag == 'data' else tag + ' plane'}",
            )
    fig.tight_layout(h_pad=1.5, w_pad=1.5)
    cap = (
        "Two-dimensional cuts through input space; colours are the predicted classes and "
        "black dots the boundary between the example's class and its DeepFool class. Left: "
        "centred on a boundary point (star), spanned by the boundary normal (vertical) and "
        "its most curved direction: the boundary bends. Middle: the same point with a "
        "random tangent direction: the boundary looks almost straight. Right: centred on "
        "the data point itself, spanned by its adversarial direction and a random one: the "
        "boundary is close along the first axis and far along the second. Axes are "
        "distances in input space."
    )
    return [_save(fig, out, "slices.png", "Boundary slices", cap)]


def _nads(arrays, summary, models, out):
    from geomrobust.plot import plot_nads

    fig, _ = plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    cap = (
        "Neural anisotropy directions of the architecture: the input directions along "
        "which randomly initialised networks of this architecture are most sensitive "
        "(eigenvectors of the average outer product of input gradients, largest eigenvalue "
        "first; red/blue are the signs). Directions of high rank are the ones this "
        "architecture learns to use most easily."
    )
    figs = [_save(fig, out, "nads.png", "Neural anisotropy directions", cap)]
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    cap = (
        "The same NADs seen in frequency: magnitude of each direction's 2-D Fourier "
        "transform (zero frequency at the centre of each tile, bright = strong). A NAD "
        "concentrated on a few bright spots is a specific frequency pattern."
    )
    figs.append(_save(fig, out, "nads_fourier.png", "NADs in the Fourier domain", cap))
    return figs


def _thickness(arrays, summary, models, out):
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    vals = [arrays[f"{m.name}__thickness"][arrays[f"{m.name}__valid"]] for m in models]
    allv = np.concatenate([v for v in vals if v.size] or [np.zeros(1)])
    bins = np.linspace(0, max(float(allv.max()), 1e-6) * 1.05, 25)
    for i, (m, v) in enumerate(zip(models, vals, strict=True)):
        if v.size:
            ax.hist(
                v,
                bins=bins,
                histtype="step",
                lw=2,
                color=_color(i),
                label=f"{m.label} (median {np.median(v):.3g})",
            )
    ax.set_xlabel("boundary thickness (L2 length)")
    ax.set_ylabel("number of examples")
    ax.set_title("Boundary thickness (α = 0, β = 0.75)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    cap = (
        "Boundary thickness: along the straight segment from each example to its DeepFool "
        "point, the length over which the model is uncertain (probability gap between the "
        "example's class and the adversarial class between 0 and 0.75). "
    ) + versus_literature(
        models,
        _median_of(arrays, models, "thickness", "valid"),
        quantity="median thickness",
        claim="robust training gives thicker boundaries (Yang et al. 2020)",
        robust_higher=True,
    )
    return [_save(fig, out, "thickness.png", "Boundary thickness", cap)]


def _image(ax, img, *, signed=False, title=None):
    v = np.asarray(img, float)
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


def _summary_of(summary, models, key) -> dict:
    out = {}
    for m in models:
        v = summary.get(m.name, {}).get(key) if isinstance(summary.get(m.name), dict) else None
        out[m.name] = float("nan") if v is None else float(v)
    return out


def _frequency(arrays, summary, models, out):
    have = [m for m in models if f"{m.name}__heat_grid" in arrays]
    if not have:
        return []
    fig, axes = plt.subplots(2, len(have), figsize=(4.2 * len(have), 7), squeeze=False)
    for col, m in enumerate(have):
        g = arrays[f"{m.name}__heat_grid"]
        im = axes[0, col].imshow(g, vmin=0, vmax=1, cmap="viridis")
        axes[0, col].set_title(f"{m.label}: error under Fourier noise", fontsize=9)
        fig.colorbar(im, ax=axes[0, col], fraction=0.046)
        spec = arrays.get(f"{m.name}__spectrum")
        if spec is not None:
            im = axes[1, col].imshow(np.log10(np.maximum(spec, 1e-6)), cmap="magma")
            fig.colorbar(im, ax=axes[1, col], fraction=0.046, label="log10 |DFT|")
        axes[1, col].set_title(f"{m.label}: spectrum of DeepFool perturbations", fontsize=9)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    cap = (
        (
            f"Top: test error when every example is perturbed by a single Fourier basis image of "
            f"L2 norm ε = {summary['eps']} with a random sign (zero frequency at the centre, "
            "highest frequencies at the edges), clipped to [0, 1]. Bottom: mean magnitude of the "
            "2-D DFT of each model's (unit-normalised) L2 DeepFool perturbations. "
        )
        + versus_literature(
            models,
            _summary_of(summary, models, "excess_error_high_frequencies"),
            quantity="error added by high-frequency Fourier noise (the mean over the upper "
            "half of the frequency radii, minus the clean error)",
            tol=1.0 / max(int(summary.get("n_examples", 0) or 0), 1),
            claim="adversarial training makes models less sensitive to high-frequency "
            "perturbations and more sensitive to low-frequency ones (Yin et al. 2019)",
            robust_higher=False,
        )
        + " "
        + versus_literature(
            models,
            _summary_of(summary, models, "excess_error_low_frequencies"),
            quantity="error added by low-frequency Fourier noise",
            tol=1.0 / max(int(summary.get("n_examples", 0) or 0), 1),
            claim="the sensitivity moves to low frequencies",
            robust_higher=True,
        )
    )
    return [_save(fig, out, "fourier_heat_map.png", "Fourier heat map", cap)]


def _noise(arrays, summary, models, out):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sig = np.asarray(summary["sigmas"], float)
    for i, m in enumerate(models):
        if f"{m.name}__noise_error" not in arrays:
            continue
        axes[0].plot(sig, arrays[f"{m.name}__noise_error"], marker="o", color=_color(i),
                     label=f"{m.label}: measured")  # fmt: skip
        pred = np.nanmean(arrays[f"{m.name}__predicted"], axis=0)
        axes[0].plot(sig, pred, ls="--", color=_color(i), label=f"{m.label}: Φ(-d/σ)")
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_locator(mticker.FixedLocator(sig))
    axes[0].xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    axes[0].xaxis.set_minor_formatter(mticker.NullFormatter())
    axes[0].set_xlabel("noise std σ (per pixel)")
    axes[0].set_ylabel("error rate in Gaussian noise")
    axes[0].grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    names = summary["corruptions"]
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        acc = arrays.get(f"{m.name}__corruption_accuracy")
        if acc is None:
            continue
        axes[1].bar(np.arange(len(names)) + i * width, acc.mean(axis=1), width,
                    color=_color(i), label=m.label)  # fmt: skip
    axes[1].set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    axes[1].set_xticklabels([n.replace("_", " ") for n in names], rotation=30, fontsize=8)
    axes[1].set_ylabel("accuracy (mean of severities 1–5)")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    cap = (
        (
            "Left: error rate under additive Gaussian noise (solid; no clipping) and the error a "
            "flat boundary at each example's DeepFool distance d would give, Φ(-d/σ) (dashed): "
            "measured above dashed means noise finds the boundary sooner than the adversarial "
            "distance predicts for a flat boundary. Right: accuracy under common corruptions "
            "(Hendrycks & Dietterich 2019 severities, in JAX). "
        )
        + versus_literature(
            models,
            _summary_of(summary, models, "sigma_at_10pct_error"),
            quantity="σ at which the error in noise reaches 10 %",
            claim="adversarial training also improves robustness to Gaussian noise, and models "
            "with errors in noise have small adversarial margins (Ford et al. 2019)",
            robust_higher=True,
        )
        + " "
        + versus_literature(
            models,
            {
                m.name: float(np.mean(summary[m.name]["corruption_accuracy"]["contrast"]))
                for m in models
                if isinstance(summary.get(m.name), dict)
            },
            quantity="accuracy under low contrast (mean of severities)",
            claim="adversarial training lowers the accuracy under contrast and fog corruptions, "
            "which are concentrated at low frequencies (Yin et al. 2019)",
            robust_higher=False,
        )
    )
    return [_save(fig, out, "noise.png", "Noise and corruption robustness", cap)]


def _interpretability(arrays, summary, models, out):
    have = [m for m in models if f"{m.name}__alignment" in arrays]
    if not have:
        return []
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, m in enumerate(have):
        a, d = arrays[f"{m.name}__alignment"], arrays[f"{m.name}__margin"]
        ok = arrays[f"{m.name}__alignment_valid"] & np.isfinite(d)
        ax.scatter(d[ok], a[ok], s=10, color=_color(i), label=m.label)
    ax.set_xlabel("DeepFool L2 margin")
    ax.set_ylabel("alignment |<x, ∇f_y>| / (‖x‖‖∇f_y‖)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    cap = (
        "Gradient-image alignment per example against its distance to the boundary. For a "
        "bias-free linear model alignment × ‖x‖ equals the margin exactly (Etmann et al. "
        "2019, theorem 1). "
    ) + versus_literature(
        have,
        _summary_of(summary, have, "alignment_median"),
        quantity="median alignment",
        claim="robust models have saliency maps better aligned with the image (Etmann et al. 2019)",
        robust_higher=True,
    )
    figs = [_save(fig, out, "alignment.png", "Gradient-image alignment", cap)]
    k = arrays["inputs"].shape[0]
    fig, axes = plt.subplots(len(have), 1 + 2 * k, figsize=(1.5 * (1 + 2 * k), 1.7 * len(have)),
                             squeeze=False)  # fmt: skip
    for row, m in zip(axes, have, strict=True):
        _image(row[0], arrays["inputs"][0], title="input")
        row[0].set_ylabel(m.label, fontsize=8)
        for j in range(k):
            _image(row[1 + j], arrays[f"{m.name}__gradient"][j], signed=True,
                   title=f"gradient {j}")  # fmt: skip
            _image(row[1 + k + j], arrays[f"{m.name}__smoothgrad"][j], signed=True,
                   title=f"SmoothGrad {j}")  # fmt: skip
    cap = (
        f"Saliency maps of the label's logit for the first {k} held-out examples (the first "
        "is shown at left): the gradient and SmoothGrad (mean gradient under noise; Smilkov "
        "et al. 2017); red positive, blue negative."
    )
    figs.append(_save(fig, out, "saliency.png", "Saliency maps", cap))
    ncls = arrays[f"{have[0].name}__synthesis"].shape[0]
    fig, axes = plt.subplots(len(have), ncls + 1, figsize=(1.3 * (ncls + 1), 1.5 * len(have)),
                             squeeze=False)  # fmt: skip
    for row, m in zip(axes, have, strict=True):
        _image(row[0], arrays["inputs"][0], title="seed")
        row[0].set_ylabel(m.label, fontsize=8)
        ok = arrays[f"{m.name}__synthesis_success"]
        for c in range(ncls):
            _image(row[1 + c], arrays[f"{m.name}__synthesis"][c],
                   title=f"→ {c}" + ("" if ok[c] else " ✗"))  # fmt: skip
    cap = (
        f"Targeted L2 PGD with a large radius (ε = {summary['synth_eps']}, "
        f"{summary['synth_steps']} steps) from the seed towards every class (✗: the class was "
        "not reached). The literature reports that a robust model's images look like the "
        "target class (perceptually aligned gradients; Tsipras et al. 2019, Santurkar et al. "
        "2019) while a standard model's stay noise-like; judge by eye, the report does not "
        "score it."
    )
    figs.append(_save(fig, out, "synthesis.png", "Class synthesis", cap))
    return figs


def _minimal(arrays, summary, models, out):
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, m in enumerate(models):
        r = arrays[f"{m.name}__ratio"]
        r = np.sort(r[np.isfinite(r)])
        if r.size == 0:
            continue
        ax.step(r, np.arange(1, r.size + 1) / r.size, where="post", color=_color(i),
                label=f"{m.label} (median {np.median(r):.3g})")  # fmt: skip
    ax.axvline(1.02, color="0.5", ls=":", lw=1, label="1 + overshoot (0.02)")
    ax.set_xlabel("DeepFool margin / minimal margin")
    ax.set_ylabel("fraction of examples ≤ ratio")
    ax.set_title("How loose DeepFool's L2 margin is")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    searches = ", ".join(summary.get("searches") or [])
    cap = (
        "For each example, DeepFool's L2 margin divided by the smallest adversarial "
        f"perturbation found by any of {searches} (each point re-tested). DeepFool's margin "
        "is an upper bound on the distance to the boundary; a ratio of 1.02 is its overshoot "
        "alone, larger ratios mean the boundary is closer than DeepFool says (a curved "
        "boundary, or a linearization that overshoots)."
    )
    return [_save(fig, out, "minimal_ratio.png", "DeepFool vs minimal margins", cap)]


_DRAW = {
    "margins": _margins,
    "dct": _dct,
    "random": _random,
    "curvature": _curvature,
    "loss_hessian": _loss_hessian,
    "slices": _slices,
    "nads": _nads,
    "thickness": _thickness,
    "frequency": _frequency,
    "noise": _noise,
    "interpretability": _interpretability,
    "minimal": _minimal,
}


def draw_stage(name: str, arrays: dict, summary: dict, models, out) -> list[dict]:
    """Draw the figures of stage ``name`` into ``out``; returns ``[{file, title, caption}]``."""
    fn = _DRAW.get(name)
    return [] if fn is None else fn(arrays, summary, models, Path(out))
