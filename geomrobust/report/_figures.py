"""Figures of the report: one function per stage, arrays in, PNG files + plain-words captions out.

No JAX here: every figure is drawn from the arrays a stage saved, so a resumed report redraws
its figures without recomputing anything. The drawing itself is done by the public
:mod:`geomrobust.plot` functions (a notebook calls the same ones); this module picks the
arrays, writes the PNGs and the captions.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from geomrobust import plot
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


def _color_of(models, m) -> str:
    """The colour of model ``m`` in every figure: ``C<i>`` for its position in ``models``."""
    return f"C{[k.name for k in models].index(m.name)}"


def _labelled(models, arrays, key: str, fn=None) -> dict:
    """``{model label: arrays[f"{name}__{key}"]}`` (optionally ``fn(model, array)``) for the
    models that have the array, in the order of ``models``."""
    out = {}
    for m in models:
        a = arrays.get(f"{m.name}__{key}")
        if a is not None:
            out[m.label] = a if fn is None else fn(m, a)
    return out


def _converged(arrays, values: str, converged: str):
    """A function ``(model, values) -> values`` with the unconverged ones set to NaN (or left
    out, for 2-D values)."""

    def pick(m, v):
        ok = np.asarray(arrays[f"{m.name}__{converged}"], bool)
        v = np.asarray(v, float)
        return v[ok] if v.ndim == 2 else np.where(ok, v, np.nan)

    return pick


def _margins(arrays, summary, models, out):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, tag, name in zip(axes, ("l2", "linf"), ("L2", "L∞"), strict=True):
        values = _labelled(models, arrays, f"{tag}_margin",
                           _converged(arrays, f"{tag}_margin", f"{tag}_converged"))  # fmt: skip
        plot.plot_ecdf(values, ax=ax, xlabel=f"DeepFool {name} margin ‖r‖",
                       ylabel="fraction of examples ≤ margin")  # fmt: skip
        ax.set_title(f"{name} margins")
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
    profiles = {m.label: summary[m.name] for m in models if isinstance(summary.get(m.name), dict)}
    k, t = summary["block"], summary["stride"]
    fig, _ = plot.plot_band_margins(
        profiles, xlabel=f"DCT band j: frequencies [{t}j, {t}j+{k}) on both axes (low → high)"
    )
    cap = (
        f"Distance to the boundary when the perturbation may only use a {k}×{k} block of 2-D "
        "DCT frequencies (x axis: from the lowest-frequency block on the left to the "
        "highest on the right; log scale; line: median, shaded: 25–75%). Small values mean "
        "the model is sensitive to that frequency band; very large values mean it is nearly "
        "invariant there. The numbers above the plot, in each model's colour, count the "
        "examples for which no boundary was found inside the band (left out of the median, "
        "which is then a lower bound on the true one)."
    )
    return [_save(fig, out, "dct_margins.png", "DCT-subspace margin profile", cap)]


def _random(arrays, summary, models, out):
    ratios = {m.label: _floats(summary[m.name]["median_ratio"]) for m in models
              if isinstance(summary.get(m.name), dict)}  # fmt: skip
    fig, _ = plot.plot_subspace_ratios(summary["dims"], ratios, total_dim=summary["D"])
    cap = (
        "How much further the boundary is along a random m-dimensional subspace than along "
        "the worst-case (adversarial) direction, as the median ratio of the two margins. "
        "For a flat boundary the ratio is about √(D/m) (dashed line); points below the "
        "line mean the boundary curves towards the data, so random noise finds it sooner "
        "than flatness predicts."
    )
    return [_save(fig, out, "random_ratio.png", "Random vs adversarial margins", cap)]


def _curvature(arrays, summary, models, out):
    have = [m for m in models if f"{m.name}__values" in arrays]
    if not have:
        return []
    values = _labelled(have, arrays, "values", _converged(arrays, "values", "converged"))
    fig, axes = plt.subplots(1, 1 + len(have), figsize=(4.4 * (1 + len(have)), 3.6),
                             squeeze=False)  # fmt: skip
    plot.plot_curvature_magnitudes(values, ax=axes[0, 0],
                                   colors=[_color_of(models, m) for m in have])  # fmt: skip
    top = 0.0
    for ax, m in zip(axes[0, 1:], have, strict=True):
        v = values[m.label]
        if v.shape[0] == 0:
            ax.set_title(f"{m.label}: no converged point")
            continue
        plot.plot_curvature_spectrum(v, ax=ax, color=_color_of(models, m))
        ax.set_title(f"{m.label}: every point, with its sign", fontsize=10)
        top = max(top, float(np.abs(v).max()))
    for ax in axes[0, 1:]:
        if top > 0:
            ax.set_ylim(0, 1.08 * top)
    fig.tight_layout()
    cap = (
        "Principal curvatures of the decision boundary at boundary points next to held-out "
        "examples, ranked by magnitude. Left: the median |κ_i| of each rank with its "
        "25–75% band, the models side by side (the numbers of the table: rank 1 is the "
        "median |κ₁|). Right, one panel per model on a common scale: each point's "
        "curvatures, ▲ red where the boundary bends towards the example's class (κ > 0), "
        "▼ blue where it bends away (κ < 0). Zero means flat in that direction; a few "
        "large values followed by values near zero mean the boundary is flat in most "
        "directions and curved in a few. "
    ) + versus_literature(
        models,
        _median_of(arrays, models, "values", "converged", column=0),
        quantity="median |κ₁| (largest principal curvature in magnitude)",
        claim="robust training flattens the decision boundary near the data (smaller "
        "curvature; Fawzi et al. 2018, Moosavi-Dezfooli et al. 2019)",
        robust_higher=False,
    )
    figs = [_save(fig, out, "curvature_spectrum.png", "Boundary curvature spectra", cap)]
    fig, _ = plot.plot_shared_directions(
        _labelled(have, arrays, "normals_sv"),
        _labelled(have, arrays, "top_sv"),
        colors=[_color_of(models, m) for m in have],
    )
    cap = (
        "Are the boundary normals and the most curved directions shared across examples? "
        "Normalised singular values σ_i/σ_1 of the stacked unit vectors (one per example; "
        "solid: normals, dashed: top curved directions, one colour per model). A fast drop "
        "means the vectors from different examples span only a few common directions (a "
        "shared, low-dimensional subspace, the one universal perturbations exploit); a flat "
        "curve means they point in unrelated directions."
    )
    figs.append(_save(fig, out, "shared_directions.png", "Shared directions", cap))
    return figs


def _loss_hessian(arrays, summary, models, out):
    values = _labelled(models, arrays, "values", _converged(arrays, "values", "converged"))
    fig, ax = plot.plot_eigenvalue_spectra(values, ylabel="eigenvalue of ∇²ₓ loss")
    ax.set_title("Input-space loss Hessian: top eigenvalues")
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
    have = [m for m in models if f"{m.name}__curved_labels" in arrays]
    if not have:
        return []
    planes = (
        ("curved", "top curved direction", "boundary normal"),
        ("flat", "random tangent direction", "boundary normal"),
        ("data", "adversarial direction", "random direction"),
    )
    fig, axes = plt.subplots(len(have), 3, figsize=(13, 3.7 * len(have)), squeeze=False)
    for row, m in zip(axes, have, strict=True):
        classes = np.unique(np.concatenate([np.ravel(arrays[f"{m.name}__{t}_labels"])
                                            for t, _, _ in planes]))  # fmt: skip
        for j, (ax, (tag, xl, yl)) in enumerate(zip(row, planes, strict=True)):
            p = f"{m.name}__{tag}"
            plot.plot_slice(
                arrays[f"{p}_labels"], arrays[f"{p}_a"], arrays[f"{p}_b"],
                arrays[f"{p}_contour"], ax=ax, xlabel=xl, ylabel=yl,
                title=f"{m.label}: {'data point' if tag == 'data' else tag + ' plane'}",
                legend=j == 2, classes=classes, center_label="centre",
            )  # fmt: skip
    fig.tight_layout(h_pad=1.5, w_pad=1.5)
    cap = (
        "Two-dimensional cuts through input space; colours are the predicted classes (legend "
        "at right of each row) and black dots the boundary between the example's class and "
        "its DeepFool class. Left: centred on a boundary point (star), spanned by the "
        "boundary normal (vertical) and its most curved direction: the boundary bends. "
        "Middle: the same point with a random tangent direction: the boundary looks almost "
        "straight. Right: centred on the data point itself, spanned by its adversarial "
        "direction and a random one: the boundary is close along the first axis and far "
        "along the second. Axes are distances in input space."
    )
    return [_save(fig, out, "slices.png", "Boundary slices", cap)]


def _nads(arrays, summary, models, out):
    fig, _ = plot.plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    cap = (
        "Neural anisotropy directions of the architecture: the input directions along "
        "which randomly initialised networks of this architecture are most sensitive "
        "(eigenvectors of the average outer product of input gradients, largest eigenvalue "
        "first; red/blue are the signs). Directions of high rank are the ones this "
        "architecture learns to use most easily."
    )
    figs = [_save(fig, out, "nads.png", "Neural anisotropy directions", cap)]
    fig, _ = plot.plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    cap = (
        "The same NADs seen in frequency: magnitude of each direction's 2-D Fourier "
        "transform (zero frequency at the centre of each tile, bright = strong). A NAD "
        "concentrated on a few bright spots is a specific frequency pattern."
    )
    figs.append(_save(fig, out, "nads_fourier.png", "NADs in the Fourier domain", cap))
    return figs


def _thickness(arrays, summary, models, out):
    values = _labelled(models, arrays, "thickness", _converged(arrays, "thickness", "valid"))
    fig, ax = plot.plot_histograms(values, xlabel="boundary thickness (L2 length)")
    ax.set_title("Boundary thickness (α = 0, β = 0.75)")
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
    fig, _ = plot.plot_fourier_heat_maps(
        _labelled(have, arrays, "heat_grid"), _labelled(have, arrays, "spectrum")
    )
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
    have = [m for m in models if f"{m.name}__noise_error" in arrays]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    plot.plot_noise_errors(
        summary["sigmas"],
        _labelled(have, arrays, "noise_error"),
        _labelled(have, arrays, "predicted", lambda m, p: np.nanmean(p, axis=0)),
        ax=axes[0],
    )
    plot.plot_corruption_accuracy(
        summary["corruptions"], _labelled(models, arrays, "corruption_accuracy"), ax=axes[1]
    )
    fig.tight_layout()
    cap = (
        (
            "Left: error rate under additive Gaussian noise (solid; no clipping) and the error a "
            "flat boundary at each example's DeepFool distance d would give, Φ(-d/σ) (dashed): "
            "measured above dashed means noise finds the boundary sooner than the adversarial "
            "distance predicts for a flat boundary. Right: accuracy under common corruptions "
            "(Hendrycks & Dietterich 2019 severities, in JAX), the mean of severities 1–5. "
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
    fig, _ = plot.plot_alignment(
        _labelled(have, arrays, "margin"),
        _labelled(have, arrays, "alignment",
                  lambda m, a: np.where(arrays[f"{m.name}__alignment_valid"], a, np.nan)),
        colors=[_color_of(models, m) for m in have],
    )  # fmt: skip
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
    maps = {m.label: {"gradient": arrays[f"{m.name}__gradient"],
                      "SmoothGrad": arrays[f"{m.name}__smoothgrad"]} for m in have}  # fmt: skip
    fig, _ = plot.plot_saliency(arrays["inputs"], maps)
    cap = (
        f"Saliency maps of the label's logit for the first {k} held-out examples, one row per "
        "example with the input at left: the gradient and SmoothGrad (mean gradient under "
        "noise; Smilkov et al. 2017) of each model; red positive, blue negative, each map on "
        "its own scale."
    )
    figs.append(_save(fig, out, "saliency.png", "Saliency maps", cap))
    fig, _ = plot.plot_class_synthesis(
        arrays["inputs"][0],
        _labelled(have, arrays, "synthesis"),
        _labelled(have, arrays, "synthesis_success"),
    )
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
    fig, ax = plot.plot_ecdf(_labelled(models, arrays, "ratio"),
                             xlabel="DeepFool margin / minimal margin",
                             ylabel="fraction of examples ≤ ratio")  # fmt: skip
    ax.axvline(1.02, color="0.5", ls=":", lw=1, label="1 + overshoot (0.02)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("How loose DeepFool's L2 margin is")
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
