"""The measurement stages of the report: arrays in, ``(arrays, summary)`` out.

Each stage runs one analysis on every model of the report and returns

* ``arrays``: a flat dict of NumPy arrays, keys ``"<model>__<name>"`` (saved as ``.npz``);
* ``summary``: a JSON-ready dict of the numbers shown in the report, with explicit counts of
  unconverged / excluded examples.

Stages compute through :mod:`geomrobust.analyses` (the same analyses as the ``geomrobust``
subcommands, so the report and the CLI measure the same way, and the report's models, of one
architecture, share every compiled program); they only pick, rename and prefix what the
analyses return. Three measurements have no analysis (no ``geomrobust`` subcommand measures
them) and are called from :mod:`geomrobust.measures` directly:

* ``frequency``: the Fourier heat map (one error per frequency over the whole held-out set,
  not a per-example array an analysis could chunk and resume) and the spectrum of the
  margins stage's perturbations (a transform of arrays already computed);
* ``noise``: the error in Gaussian noise draws example ``n``'s noise from
  ``fold_in(key, n)`` over the whole set, where the diagnose analysis' ``noise`` draws from
  ``fold_in(fold_in(key, 3), first example of the chunk)`` per chunk, so routing it through
  diagnose would change the report's numbers; the corruption accuracies are predictions on
  corrupted copies of the set;
* ``interpretability``: saliency maps of a few examples and the class synthesis from one
  seed (figures, not dataset measurements); its gradient alignment is the diagnose
  analysis', as the ``thickness`` stage's thickness is (both reusing the margins stage's
  DeepFool and chunked as the library functions chunk, so the numbers are theirs).

Stages do not plot (``_figures`` draws from the arrays) and do not write
files (the driver saves each stage atomically, so an interrupted report resumes). Methods and
references:

* margins: DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), L2 and Linf;
* DCT-subspace margins: "Hold me tight! Influence of discriminative features on deep network
  boundaries" (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, NeurIPS 2020);
* random-subspace margins vs ``sqrt(D/m)``: Fawzi, Moosavi-Dezfooli, Frossard, "Robustness of
  classifiers: from adversarial to random noise", NeurIPS 2016;
* principal curvatures, shared directions, slices: Fawzi, Moosavi-Dezfooli, Frossard, Soatto,
  "Empirical study of the topology and geometry of deep networks", CVPR 2018;
* input-loss Hessian spectra: Moosavi-Dezfooli, Fawzi, Uesato, Frossard, "Robustness via
  curvature regularization, and vice versa" (CURE), CVPR 2019;
* NADs: Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural anisotropy directions",
  NeurIPS 2020;
* boundary thickness: Yang, Khanna, Yu, Gholami, Keutzer, Gonzalez, Ramchandran, Mahoney,
  "Boundary thickness and robustness in learning models", NeurIPS 2020;
* Fourier heat map and perturbation spectra: Yin, Gontijo Lopes, Shlens, Cubuk, Gilmer, "A
  Fourier Perspective on Model Robustness in Computer Vision", NeurIPS 2019;
* error in noise vs margins: Ford, Gilmer, Carlini, Cubuk, "Adversarial Examples Are a Natural
  Consequence of Test Error in Noise", ICML 2019; common corruptions: Hendrycks & Dietterich,
  ICLR 2019;
* gradient-image alignment: Etmann, Lunz, Maass, Schönlieb, ICML 2019; saliency maps
  (gradient, SmoothGrad: Smilkov et al. 2017); class synthesis by large targeted attacks:
  Tsipras et al., ICLR 2019, Santurkar et al., NeurIPS 2019;
* minimal margins: FMN (Pintor, Roli, Brendel, Biggio, NeurIPS 2021) and C&W L2 (Carlini,
  Wagner, S&P 2017) against DeepFool.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import jax
import numpy as np

from geomrobust import analyses
from geomrobust.analyses import (
    CurvatureSettings,
    DiagnoseSettings,
    MarginSettings,
    NADSettings,
    SliceSettings,
)
from geomrobust.data import CORRUPTIONS, corrupt
from geomrobust.engine import CHUNK_SIZE
from geomrobust.measures import (
    PiecewiseLinearWarning,
    class_synthesis,
    fourier_heat_map,
    frequency_radius,
    gaussian_noise_errors,
    noise_vs_margin,
    perturbation_spectrum,
    saliency_maps,
    sigma_at_error,
)
from geomrobust.search._minimal import ratio_summary

__all__ = ["REQUIRES", "STAGES", "Context", "ReportModel"]

#: Examples per chunk of the report's analyses: every held-out set of the report fits in one
#: chunk (the library defaults of the searches; thickness and curvature their own).
CHUNK = 1024


class ReportModel(NamedTuple):
    """name : short id (``standard``, ``pgd``, or the checkpoint's folder name); label : the
    legend text; logits_fn : the classifier (a :class:`geomrobust.Classifier`); metadata : the
    checkpoint metadata plus ``checkpoint_path`` and ``checkpoint_sha256``; smooth : whether
    the network is C² (smooth activation, no max pooling; None: unknown, decided by the
    exact Hessian at the boundary points), required for meaningful
    curvature."""

    name: str
    label: str
    logits_fn: Callable
    metadata: dict
    smooth: bool | None


class Context(NamedTuple):
    """Everything a stage reads: the models, the held-out examples ``x`` ``(N, *s)`` with
    labels ``y``, the size settings, the stage's PRNG ``key``, results of earlier stages
    (``previous[stage] = (arrays, summary)``) and ``progress`` (the analyses' option: True
    for progress bars, a callable ``progress(n)`` counting finished examples, None for
    none)."""

    models: list
    x: jax.Array
    y: jax.Array
    sizes: dict
    key: jax.Array
    previous: dict
    progress: Any


def _prefixed(name: str, arrays: dict, keys: dict) -> dict:
    """``{"<name>__<new>": arrays[old]}`` for ``keys = {old: new}``."""
    return {f"{name}__{new}": arrays[old] for old, new in keys.items()}


# --------------------------------------------------------------------------- stages


def stage_accuracy(ctx: Context):
    """Clean accuracy on the analysed examples and PGD (Linf) accuracy at ``sizes['eps']``."""
    eps = ctx.sizes["eps"]
    settings = MarginSettings(
        method="pgd",
        norm="inf",
        eps=(eps,),
        steps=ctx.sizes["pgd_steps_eval"],
        bounds=(0.0, 1.0),
        chunk_size=256,
    )
    arrays, summary = {}, {}
    for m in ctx.models:
        pred = analyses.predict(m.logits_fn, ctx.x)
        a, _ = analyses.margins.compute(
            m.logits_fn, (ctx.x, ctx.y), settings, key=ctx.key, progress=ctx.progress
        )
        arrays[f"{m.name}__pred"] = pred
        summary[m.name] = {
            "clean_accuracy": float(np.mean(pred == np.asarray(ctx.y))),
            "pgd_accuracy": float(a["accuracy"][0]),
            "pgd_eps_linf": eps,
            "test_accuracy_full_split": m.metadata.get("accuracy"),
            "method": m.metadata.get("method", "unknown"),
        }
    return arrays, summary


def stage_margins(ctx: Context):
    """L2 and Linf DeepFool margins around the predicted labels; ``ρ = mean ||r|| / ||x||``."""
    arrays, summary = {}, {}
    for m in ctx.models:
        summary[m.name] = {}
        for tag, norm in (("l2", "2"), ("linf", "inf")):
            a, s = analyses.margins.compute(
                m.logits_fn,
                ctx.x,
                MarginSettings(norm=norm, chunk_size=CHUNK),
                progress=ctx.progress,
            )
            keys = {"margin": f"{tag}_margin", "converged": f"{tag}_converged"}
            if tag == "l2":  # reused by the curvature stage
                keys["perturbation"] = "l2_perturbation"
            arrays.update(_prefixed(m.name, a, keys))
            summary[m.name][tag] = {
                **s["margin"],
                "n_unconverged": s["n_unconverged"],
                "rho": s["rho"],
            }
    return arrays, summary


def stage_dct(ctx: Context):
    """L2 DeepFool margins inside diagonal K×K DCT blocks (low to high frequency)."""
    settings = MarginSettings(
        subspaces="dct",
        block=ctx.sizes["dct_block"],
        stride=ctx.sizes["dct_stride"],
        chunk_size=CHUNK,
    )
    arrays, summary = {}, {"block": settings.block, "stride": settings.stride}
    for m in ctx.models:
        a, s = analyses.margins.compute(m.logits_fn, ctx.x, settings, progress=ctx.progress)
        summary["n_bands"] = s["n_bands"]
        arrays.update(_prefixed(m.name, a, {"margin": "margin", "converged": "converged"}))
        b = s["bands"]
        summary[m.name] = {
            k: np.asarray(b[k]).tolist()
            for k in ("median", "q25", "q75", "n_converged", "n_unconverged")
        }
    return arrays, summary


def stage_random(ctx: Context):
    """Margins in random m-dimensional subspaces over the minimal margin, vs ``sqrt(D/m)``."""
    d = math.prod(ctx.x.shape[1:])
    dims = [m for m in ctx.sizes["random_dims"] if 1 <= m <= d]
    arrays, summary = {"dims": np.asarray(dims)}, {"dims": dims, "D": d}
    summary["predicted_ratio"] = [math.sqrt(d / m) for m in dims]
    for m in ctx.models:
        med, n_valid, n_bad = [], [], []
        for i, dim in enumerate(dims):
            settings = MarginSettings(
                subspaces="random",
                subspace_dim=dim,
                draws=ctx.sizes["random_draws"],
                chunk_size=CHUNK,
            )
            a, s = analyses.margins.compute(
                m.logits_fn,
                ctx.x,
                settings,
                key=jax.random.fold_in(ctx.key, i),
                progress=ctx.progress,
            )
            arrays[f"{m.name}__ratio_m{dim}"] = a["ratio"]
            med.append(s["median_ratio"])
            n_valid.append(s["ratio_n_valid"])
            n_bad.append(s["ratio_n_excluded"])
        summary[m.name] = {"median_ratio": med, "n_valid": n_valid, "n_unconverged": n_bad}
    return arrays, summary


#: The curvature analysis' summary keys and the report's names for them.
_CURVATURE_KEYS = {
    "num_boundary_points": "n_boundary_points",
    "num_no_boundary_point": "n_no_boundary_point",
    "num_converged": "n_converged",
    "num_unconverged": "n_unconverged",
    "median_abs_curvature_by_rank": "median_abs_curvature_by_rank",
    "median_curvature_by_rank": "median_curvature_by_rank",
    "normals_singular_values": "normals_singular_values",
    "top_directions_singular_values": "top_directions_singular_values",
    "fooling_radius": "fooling_radius",
    "fooling_subspace_dim": "fooling_subspace_dim",
    "fooling_rate_shared_subspace": "fooling_rate_shared",
    "fooling_rate_isotropic": "fooling_rate_isotropic",
    "num_piecewise_linear": "n_piecewise_linear",
    "scale": "scale",
    "median_top_stderr": "median_top_stderr",
}
#: the scale of the curvature of piecewise-linear (ReLU) models, in pixel units of images in
#: [0, 1] (docs/curvature.md: perturbations of norm about σ sqrt(D))
CURVATURE_SCALE = 0.02
_CURVATURE_ARRAYS = {
    f: f
    for f in ("index", "values", "converged", "z", "y", "k", "normal", "top_direction", "margin")
}
_CURVATURE_ARRAYS.update(
    normals_singular_values="normals_sv", top_directions_singular_values="top_sv"
)


def stage_curvature(ctx: Context):
    """Boundary points (DeepFool of the margins stage + bisection), principal curvatures,
    shared directions and fooling rates of random perturbations in the shared subspace vs
    isotropic ones."""
    n = min(ctx.sizes["curv_n"], ctx.x.shape[0])
    x = ctx.x[:n]
    num = min(ctx.sizes["curv_num"], math.prod(x.shape[1:]) - 1)
    settings = CurvatureSettings(
        num=num,
        shared_dim=ctx.sizes["shared_dim"],
        fooling_samples=ctx.sizes["fooling_samples"],
        chunk_size=64,
    )
    arrays, summary = {}, {"num": num, "n_points": n}
    margins, _ = ctx.previous["margins"]
    for m in ctx.models:
        found = SimpleNamespace(
            perturbation=margins[f"{m.name}__l2_perturbation"][:n],
            margin=margins[f"{m.name}__l2_margin"][:n],
            converged=margins[f"{m.name}__l2_converged"][:n],
        )
        run = dict(key=ctx.key, deepfool=found, progress=ctx.progress)
        smooth = m.smooth
        if smooth is not False:  # a C² network, or unknown: the exact curvature first
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PiecewiseLinearWarning)  # counted below
                a, s = analyses.curvature.compute(m.logits_fn, x, settings, **run)
            if smooth is None:  # unknown architecture: the Hessian tells
                smooth = not s.get("num_piecewise_linear", 0)
        if not smooth:  # piecewise linear: the curvature at a scale
            samples = ctx.sizes.get("curv_samples", 64)
            scaled = dataclasses.replace(settings, scale=CURVATURE_SCALE, samples=samples)
            a, s = analyses.curvature.compute(m.logits_fn, x, scaled, **run)
        summary[m.name] = {new: s[old] for old, new in _CURVATURE_KEYS.items() if old in s}
        summary[m.name]["smooth_network"] = bool(smooth)
        for k in ("median_abs_curvature_by_rank", "median_curvature_by_rank"):
            if k in summary[m.name]:
                summary[m.name][k] = summary[m.name][k] or None
        if a["index"].size:
            arrays.update(_prefixed(m.name, a, _CURVATURE_ARRAYS))
    return arrays, summary


def stage_loss_hessian(ctx: Context):
    """Largest eigenvalues of the input-space Hessian of the cross-entropy at data points."""
    n = min(ctx.sizes["hess_n"], ctx.x.shape[0])
    num = min(ctx.sizes["hess_num"], math.prod(ctx.x.shape[1:]))
    arrays, summary = {}, {"num": num, "n_points": n}
    for m in ctx.models:
        a, summary[m.name] = analyses.curvature.loss_spectrum(
            m.logits_fn, ctx.x[:n], ctx.y[:n], num=num, key=ctx.key, progress=ctx.progress
        )
        arrays.update(_prefixed(m.name, a, {"values": "values", "converged": "converged"}))
    return arrays, summary


_SLICE_PLANES = ("curved", "flat", "data")


def stage_slices(ctx: Context):
    """Three planes per model at the first boundary point of the curvature stage: (top
    principal direction, normal), (random tangent, normal), and through x: (normal, random)."""
    curv, _ = ctx.previous["curvature"]
    arrays, summary = {}, {"resolution": ctx.sizes["slice_res"]}
    settings = SliceSettings(
        planes=_SLICE_PLANES,
        resolution=ctx.sizes["slice_res"],
        extent_scale=ctx.sizes["slice_extent"],
    )
    for m in ctx.models:
        if f"{m.name}__z" not in curv:
            summary[m.name] = {"skipped": "no boundary point"}
            continue
        i = int(curv[f"{m.name}__index"][0])
        points = {
            f: curv[f"{m.name}__{f}"][:1]
            for f in ("z", "y", "k", "normal", "top_direction", "margin")
        }
        a, s = analyses.slices.compute(
            m.logits_fn,
            ctx.x,
            dataclasses.replace(settings, index=(i,)),
            key=ctx.key,
            points=points,
            progress=ctx.progress,
        )
        first = s["slices"][0]
        summary[m.name] = {
            "example": i,
            "classes": [first["y"], first["k"]],
            "extent": first["extent"],
            "margin": first["margin"],
        }
        for r in s["slices"]:
            tag = r["plane"]
            summary[m.name][f"{tag}_boundary_points"] = r["boundary_points"]
            for f in ("labels", "contour", "a", "b"):
                arrays[f"{m.name}__{tag}_{f}"] = a[f"{f}_{i}_{tag}"]
    return arrays, summary


def stage_nads(ctx: Context):
    """NADs of the (first) model's architecture: eigenvectors of ``E_θ[∇f ∇fᵀ]`` at ``x_0``."""
    arch = analyses.Architecture.from_metadata(ctx.models[0].metadata)
    settings = NADSettings(num_networks=ctx.sizes["nads_networks"], num=ctx.sizes["nads_num"])
    a, summary = analyses.nads.compute(arch, None, settings, key=ctx.key, progress=ctx.progress)
    arrays = {k: a[k] for k in ("eigenvalues", "eigenvectors", "fourier_magnitude")}
    return arrays, summary


def stage_thickness(ctx: Context):
    """Boundary thickness (alpha = 0, beta = 0.75) on the segment from x to its L2 DeepFool
    point around the predicted label (the margins stage's search, not run again); examples
    whose DeepFool did not converge are excluded. The diagnose analysis, in chunks of
    :data:`geomrobust.engine.CHUNK_SIZE` (the chunks of ``boundary_thickness``)."""

    settings = DiagnoseSettings(what=("thickness",), chunk_size=CHUNK_SIZE)
    arrays, summary = {}, {"alpha": settings.alpha, "beta": settings.beta}
    margins, _ = ctx.previous["margins"]
    for m in ctx.models:
        found = SimpleNamespace(
            perturbation=margins[f"{m.name}__l2_perturbation"],
            margin=margins[f"{m.name}__l2_margin"],
            converged=margins[f"{m.name}__l2_converged"],
        )
        a, _ = analyses.diagnose.compute(
            m.logits_fn, ctx.x, settings, deepfool=found, progress=ctx.progress
        )
        arrays.update({
            f"{m.name}__thickness": a["thickness"],
            f"{m.name}__valid": a["thickness_valid"],
            f"{m.name}__distance": a["thickness_distance"],
        })  # fmt: skip
        summary[m.name] = analyses.summarize(a["thickness"], a["thickness_valid"])
    return arrays, summary


def stage_frequency(ctx: Context):
    """Fourier heat map (error under ``x + r ε U_ij`` per frequency, clipped to [0, 1]) and the
    mean DFT magnitude of the margins stage's L2 DeepFool perturbations."""

    eps, stride = ctx.sizes["heat_eps"], ctx.sizes["heat_stride"]
    arrays, summary = {}, {"eps": eps, "stride": stride, "n_examples": int(ctx.x.shape[0])}
    margins, _ = ctx.previous["margins"]
    for m in ctx.models:
        hm = fourier_heat_map(
            m.logits_fn, ctx.x, ctx.y, eps=eps, key=ctx.key, stride=stride, bounds=(0.0, 1.0),
            progress=ctx.progress,
        )  # fmt: skip
        ok = margins[f"{m.name}__l2_converged"]
        pert = margins[f"{m.name}__l2_perturbation"][ok]
        spec = np.asarray(perturbation_spectrum(pert)) if pert.shape[0] else None
        err = np.asarray(hm.error)
        arrays[f"{m.name}__heat_grid"] = np.asarray(hm.grid)
        if spec is not None:
            arrays[f"{m.name}__spectrum"] = spec
        radius = frequency_radius(hm.frequencies, ctx.x.shape[1:3])
        cut = np.median(radius)
        summary[m.name] = {
            "clean_error": hm.clean_error,
            "mean_error": float(err.mean()),
            "max_error": float(err.max()),
            "mean_error_low_frequencies": float(err[radius <= cut].mean()),
            "mean_error_high_frequencies": float(err[radius > cut].mean()),
            # the error the noise adds to the clean error: comparable between models
            "excess_error_low_frequencies": float(err[radius <= cut].mean() - hm.clean_error),
            "excess_error_high_frequencies": float(err[radius > cut].mean() - hm.clean_error),
            "n_invalid": hm.n_invalid,
            "n_spectrum": int(pert.shape[0]),
        }
    return arrays, summary


def stage_noise(ctx: Context):
    """Error in Gaussian noise over a grid of σ (no clipping, the half-space setting) against
    ``Φ(-d/σ)`` from the L2 DeepFool margins, and accuracy under common corruptions."""

    sigmas = list(ctx.sizes["noise_sigmas"])
    summary = {"sigmas": sigmas, "samples": ctx.sizes["noise_samples"],
               "corruptions": list(CORRUPTIONS), "severities": [1, 2, 3, 4, 5]}  # fmt: skip
    arrays = {}
    margins, _ = ctx.previous["margins"]
    x = np.asarray(ctx.x)
    corrupted = {
        (c, s): corrupt(x, c, s, key=jax.random.fold_in(ctx.key, 7 * i + s))
        for i, c in enumerate(CORRUPTIONS)
        for s in range(1, 6)
    }
    for m in ctx.models:
        res = gaussian_noise_errors(
            m.logits_fn, ctx.x, ctx.y, sigmas, key=ctx.key,
            samples=ctx.sizes["noise_samples"], progress=ctx.progress,
        )  # fmt: skip
        d = np.where(margins[f"{m.name}__l2_converged"], margins[f"{m.name}__l2_margin"], np.nan)
        cmp = noise_vs_margin(res, d)
        acc = np.array([[float(np.mean(analyses.predict(m.logits_fn, corrupted[c, s])
                                       == np.asarray(ctx.y))) for s in range(1, 6)]
                        for c in CORRUPTIONS])  # fmt: skip
        arrays.update({
            f"{m.name}__noise_error": np.asarray(res.error),
            f"{m.name}__example_error": np.asarray(res.example_error),
            f"{m.name}__predicted": np.asarray(cmp.predicted),
            f"{m.name}__ratio": np.asarray(cmp.ratio),
            f"{m.name}__corruption_accuracy": acc,
        })  # fmt: skip
        summary[m.name] = {
            "error": [float(v) for v in np.asarray(res.error)],
            "predicted_error": [float(v) for v in np.nanmean(np.asarray(cmp.predicted), 0)],
            "median_ratio": [float(v) for v in np.asarray(cmp.median_ratio)],
            "sigma_at_10pct_error": sigma_at_error(res, 0.1),
            "sigma_at_50pct_error": sigma_at_error(res, 0.5),
            "n_invalid": res.n_invalid,
            "corruption_accuracy": {
                c: [float(v) for v in row] for c, row in zip(CORRUPTIONS, acc, strict=True)
            },
            "mean_corruption_accuracy": float(acc.mean()),
        }
    return arrays, summary


def stage_interpretability(ctx: Context):
    """Gradient-image alignment against the DeepFool margin, saliency maps (gradient,
    SmoothGrad) of a few examples, and images synthesised from one seed towards every class by
    large-radius targeted L2 PGD."""

    k = ctx.sizes["saliency_n"]
    arrays, summary = {}, {"saliency_examples": k, "synth_eps": ctx.sizes["synth_eps"],
                           "synth_steps": ctx.sizes["synth_steps"]}  # fmt: skip
    margins, _ = ctx.previous["margins"]
    # the diagnose analysis in the chunks of gradient_alignment (CHUNK_SIZE)
    alignment = DiagnoseSettings(what=("alignment",), chunk_size=CHUNK_SIZE)
    arrays["inputs"] = np.asarray(ctx.x[:k])
    for m in ctx.models:
        al, _ = analyses.diagnose.compute(m.logits_fn, (ctx.x, ctx.y), alignment,
                                          progress=ctx.progress)  # fmt: skip
        a, a_valid = al["alignment"], al["alignment_valid"]
        d = np.where(margins[f"{m.name}__l2_converged"], margins[f"{m.name}__l2_margin"], np.nan)
        norms = np.linalg.norm(np.asarray(ctx.x).reshape(len(a), -1), axis=1)
        ok = a_valid & np.isfinite(d)
        corr = float(np.corrcoef(a[ok] * norms[ok], d[ok])[0, 1]) if ok.sum() > 2 else None
        grad = saliency_maps(m.logits_fn, ctx.x[:k], ctx.y[:k])
        smooth = saliency_maps(m.logits_fn, ctx.x[:k], ctx.y[:k], method="smoothgrad",
                               key=ctx.key, samples=ctx.sizes["smoothgrad_samples"])  # fmt: skip
        syn = class_synthesis(m.logits_fn, ctx.x[:1], eps=ctx.sizes["synth_eps"],
                              steps=ctx.sizes["synth_steps"], bounds=(0.0, 1.0))  # fmt: skip
        arrays.update({
            f"{m.name}__alignment": a,
            f"{m.name}__alignment_valid": a_valid,
            f"{m.name}__margin": d,
            f"{m.name}__gradient": np.asarray(grad),
            f"{m.name}__smoothgrad": np.asarray(smooth),
            f"{m.name}__synthesis": np.asarray(syn.images[0]),
            f"{m.name}__synthesis_success": np.asarray(syn.success[0]),
        })  # fmt: skip
        summary[m.name] = {
            **{f"alignment_{k2}": v for k2, v in analyses.summarize(a, a_valid).items()},
            "correlation_alignment_norm_vs_margin": corr,
            "synthesis_success": int(np.asarray(syn.success).sum()),
            "synthesis_classes": int(syn.success.size),
            "synthesis_mean_confidence": float(np.mean(np.asarray(syn.confidence))),
        }
    return arrays, summary


def stage_minimal(ctx: Context):
    """How loose DeepFool's L2 margin is: the smallest perturbation over DeepFool and FMN
    (:func:`geomrobust.search.minimal_margin`; ``sizes['minimal_searches']``, FMN with
    ``sizes['minimal_fmn_steps']`` steps) on the first ``sizes['minimal_n']`` examples,
    around the predicted labels, and the ratio ``||r_DeepFool|| / ||r_min||`` per example.
    C&W is left out by default: at a budget that keeps the report fast (a few hundred steps)
    it rarely beats FMN, and costs several times as much."""

    n = min(ctx.sizes.get("minimal_n", 32), ctx.x.shape[0])
    settings = MarginSettings(
        method="best",
        searches=tuple(ctx.sizes.get("minimal_searches", ("deepfool", "fmn"))),
        fmn_steps=ctx.sizes.get("minimal_fmn_steps", 50),
        cw_steps=ctx.sizes.get("minimal_cw_steps", 50),
        cw_binary_steps=ctx.sizes.get("minimal_cw_binary_steps", 3),
        bounds=None,  # as the margins stage: no box
        chunk_size=CHUNK,
    )
    arrays, summary = {}, {"n_points": n, "searches": None}
    for m in ctx.models:
        a, s = analyses.margins.compute(m.logits_fn, ctx.x[:n], settings, progress=ctx.progress)
        summary["searches"] = s["searches"]
        ok = a["converged"] & (a["margin"] > 0)
        ratio = np.where(ok, a["deepfool_ratio"], np.inf)
        arrays[f"{m.name}__ratio"] = ratio
        arrays[f"{m.name}__margin"] = a["margin"]
        arrays[f"{m.name}__found_by"] = a["found_by"]
        arrays[f"{m.name}__margins"] = a["margins"]
        summary[m.name] = {
            "ratio": ratio_summary(ratio),
            "median_minimal_margin": s["margin"].get("median"),
            "found_by": s["found_by"],
            "n_unconverged": s["n_unconverged"],
        }
    return arrays, summary


#: ``name -> (title, function)`` in execution order.
STAGES: dict[str, tuple[str, Any]] = {
    "accuracy": ("accuracy and PGD robustness", stage_accuracy),
    "margins": ("DeepFool margins (L2, Linf)", stage_margins),
    "dct": ("DCT-subspace margins", stage_dct),
    "random": ("random-subspace margins", stage_random),
    "curvature": ("principal curvatures and shared directions", stage_curvature),
    "loss_hessian": ("input-loss Hessian spectra", stage_loss_hessian),
    "slices": ("2-D boundary slices", stage_slices),
    "nads": ("neural anisotropy directions", stage_nads),
    "thickness": ("boundary thickness", stage_thickness),
    "frequency": ("Fourier heat map and perturbation spectra", stage_frequency),
    "noise": ("noise and corruption robustness", stage_noise),
    "interpretability": ("alignment, saliency and class synthesis", stage_interpretability),
    "minimal": ("minimal margins: how loose DeepFool is", stage_minimal),
}

#: Stages whose results a stage reads (run first, or reused from disk).
REQUIRES: dict[str, tuple[str, ...]] = {
    "curvature": ("margins",),
    "thickness": ("margins",),
    "slices": ("margins", "curvature"),
    "frequency": ("margins",),
    "noise": ("margins",),
    "interpretability": ("margins",),
}
