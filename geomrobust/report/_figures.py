"""Figures of the report: one function per stage, arrays in, PNG files + plain-words captions out.

No JAX here: every figure is drawn from the arrays a stage saved, so a resumed report redraws
its figures without recomputing anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

__all__ = ["draw_stage"]

DPI = 100


def _save(fig, out: Path, file: str, title: str, caption: str) -> dict:
    fig.savefig(out / file, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return {"file": file, "title": title, "caption": caption}


def _color(i: int) -> str:
    return f"C{i}"


def _floats(values) -> np.ndarray:
    """Summary numbers as floats: the JSON record holds non-finite ones as ``"nan"``,
    ``"inf"`` (:func:`geomrobust.io.to_json_text`) and missing ones as None."""
    return np.array([np.nan if v is None else float(v) for v in values], float)


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
        "DeepFool did not converge are left out and counted in the table."
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
        "share the y axis."
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
        "Large eigenvalues mean the loss bends sharply in a few input directions; robust "
        "training is expected to lower them (a flatter loss in input space, as in CURE)."
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
        "example's class and the adversarial class between 0 and 0.75). Thicker boundaries "
        "(further right) go with more robust models."
    )
    return [_save(fig, out, "thickness.png", "Boundary thickness", cap)]


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
    "minimal": _minimal,
}


def draw_stage(name: str, arrays: dict, summary: dict, models, out) -> list[dict]:
    """Draw the figures of stage ``name`` into ``out``; returns ``[{file, title, caption}]``."""
    fn = _DRAW.get(name)
    return [] if fn is None else fn(arrays, summary, models, Path(out))
