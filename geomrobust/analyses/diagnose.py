"""Robustness diagnostics of a classifier: boundary thickness, margin signature, local
linearity, normalized robustness.

``compute(classifier, data, settings)`` is ``geomrobust diagnose`` (README.md, "Command
line"):

* ``thickness``: the length of the segment from ``x`` to its DeepFool point (or an L2 PGD
  point of radius ``eps``) over which ``alpha < p_y - p_k < beta`` (Yang, Khanna, Yu,
  Gholami, Keutzer, Gonzalez, Ramchandran, Mahoney, "Boundary thickness and robustness in
  learning models", NeurIPS 2020);
* ``signature``: quartiles of the first-order margins at the input and, given ``splits``,
  at hidden layers, normalized by the layer's total feature spread (Jiang, Krishnan,
  Mobahi, Bengio, "Predicting the generalization gap in deep networks with margin
  distributions", ICLR 2019);
* ``linearity``: local linearity ``γ(ε, x)`` (Qin et al., "Adversarial robustness through
  local linearization", NeurIPS 2019);
* ``rho``: ``mean ||r(x)|| / ||x||`` of L2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016);
* ``alignment``: gradient-image alignment ``|<x, ∇f_y>| / (||x|| ||∇f_y||)`` (Etmann, Lunz,
  Maass, Schönlieb, ICML 2019);
* ``noise``: error in Gaussian noise per example and ``σ`` of ``noise_sigmas`` (Ford, Gilmer,
  Carlini, Cubuk, ICML 2019), with the DeepFool margin's half-space prediction ``Φ(-d/σ)``.

The per-example diagnostics (thickness, linearity, rho) run over chunks, resumable with a
store; chunk ``c`` draws its random starts from ``fold_in(key_what, first example of c)``.
The signature normalizes by a statistic of the whole dataset, so it runs on all examples at
once after them.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.measures import (
    boundary_thickness,
    gaussian_noise_errors,
    gradient_alignment,
    local_linearity,
    margin_signature,
    noise_vs_margin,
    normalized_robustness,
    thickness,
)
from geomrobust.models import as_classifier
from geomrobust.search import deepfool_dataset

from ._common import (
    AnalysisResult,
    chunked,
    compute_doc,
    inputs,
    predict,
    resolve_key,
    summarize,
)

__all__ = ["DEFAULT_WHAT", "WHAT", "DiagnoseSettings", "compute"]

WHAT = ("thickness", "signature", "linearity", "rho", "alignment", "noise")
#: the diagnostics computed when none are named
DEFAULT_WHAT = ("thickness", "signature", "linearity", "rho")


@dataclasses.dataclass(frozen=True)
class DiagnoseSettings:
    """The options that change the numbers (defaults: those of ``geomrobust diagnose``).

    what : diagnostics among :data:`WHAT`; alpha, beta : the thickness band; attack :
    ``deepfool`` or ``pgd`` (thickness endpoint); eps : L2 PGD radius (thickness) and Linf
    radius (linearity); steps : PGD steps of both; grid : thickness integration points;
    noise_sigmas, noise_samples : the noise levels and draws per example of ``noise``;
    chunk_size : examples per chunk; key : PRNG seed.
    """

    what: tuple[str, ...] = DEFAULT_WHAT
    alpha: float = 0.0
    beta: float = 0.75
    attack: str = "deepfool"
    eps: float | None = None
    steps: int = 10
    grid: int = 256
    noise_sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
    noise_samples: int = 32
    chunk_size: int = 128
    key: int = 0

    def validate(self) -> DiagnoseSettings:
        """Raise ValueError for settings that cannot run (the defaults need ``eps`` for the
        linearity); returns the settings."""
        unknown = [w for w in self.what if w not in WHAT]
        if unknown:
            raise ValueError(f"what must be among {WHAT}, got {unknown}")
        if self.attack not in ("deepfool", "pgd"):
            raise ValueError(f"attack must be 'deepfool' or 'pgd', got {self.attack!r}")
        if ("linearity" in self.what or self.attack == "pgd") and not (self.eps and self.eps > 0):
            raise ValueError("--what linearity and --attack pgd need --eps > 0")
        sig = self.noise_sigmas
        if not sig or not all(np.isfinite(v) and v > 0 for v in sig):
            raise ValueError(f"noise_sigmas must be positive numbers, got {sig!r}")
        return self


@compute_doc
def compute(
    classifier,
    data,
    settings: DiagnoseSettings = DiagnoseSettings(),
    *,
    store=None,
    key=None,
    splits=None,
    deepfool=None,
    devices=None,
    progress=None,
) -> AnalysisResult:
    """The diagnostics ``settings.what`` of ``classifier`` on ``data``.

    Parameters
    ----------
    classifier : anything :func:`geomrobust.as_classifier` accepts.
    data : an ``ArrayDataset``, ``(x, y)`` or ``x`` (predicted labels where absent).
    settings : :class:`DiagnoseSettings` (``store``, ``progress`` and ``devices`` serve the
        per-example diagnostics).
    {shared parameters}
    splits : hidden layers of the signature, ``{name: (features_fn, head_fn)}``
        (:func:`geomrobust.measures.layer_splits`); None: the input layer only.
    deepfool : an L2 DeepFool result of ``x`` to reuse (``perturbation``, ``margin``,
        ``converged``; e.g. the margins analysis' with the same labels) instead of searching
        again: the thickness endpoints ``x + r`` (``attack="deepfool"``; examples where it
        did not converge, or has margin 0, are not valid), ``rho`` and ``noise``.

    Returns
    -------
    (arrays, summary)
        ``thickness``, ``thickness_valid``, ``thickness_distance``, ``signature_<layer>``,
        ``linearity_gamma``, ``deepfool_margin``, ``deepfool_converged`` for the diagnostics
        asked for; the summary holds their statistics and counts of valid / excluded
        examples.
    """
    clf = as_classifier(classifier)
    x, y = inputs(data)
    s = settings.validate()
    k = resolve_key(s, key, store)
    per_example = [w for w in ("thickness", "linearity", "rho", "alignment", "noise")
                   if w in s.what]  # fmt: skip
    arrays, summary = {}, {"n": int(x.shape[0])}
    if per_example:
        given = () if deepfool is None else _given(deepfool)
        batched = (x, *given) if y is None else (x, *given, y)

        def chunk(clf, xc, *rest, chunk):
            df = _Found(*rest[:3]) if given else None
            yc = rest[len(given)] if y is not None else None
            return _per_example(clf, xc, yc, s, k, chunk, per_example, df)

        arrays.update(
            chunked(
                chunk,
                batched,
                (clf,),
                chunk_size=s.chunk_size,
                desc="diagnose",
                store=store,
                progress=progress,
                devices=devices,
            )
        )
    if "thickness" in s.what:
        summary["thickness"] = {
            **summarize(arrays["thickness"], arrays["thickness_valid"]),
            "attack": s.attack,
            "alpha": s.alpha,
            "beta": s.beta,
        }
    if "linearity" in s.what:
        gamma = arrays["linearity_gamma"]
        summary["linearity"] = {
            "eps": s.eps,
            "mean_gamma": float(np.mean(gamma)),
            **summarize(gamma),
        }
    if "rho" in s.what:
        conv = arrays["deepfool_converged"]
        rho = normalized_robustness(arrays["deepfool_margin"], x, conv)
        summary["rho"] = {
            "rho": rho,
            "converged": int(conv.sum()),
            "n_unconverged": int((~conv).sum()),
        }
    if "alignment" in s.what:
        summary["alignment"] = summarize(arrays["alignment"], arrays["alignment_valid"])
    if "noise" in s.what:
        ok = arrays["noise_valid"]
        err = arrays["noise_error"][ok]
        pred = arrays["noise_predicted"][ok]
        summary["noise"] = {
            "sigmas": list(s.noise_sigmas),
            "samples": s.noise_samples,
            "error": [
                float(v)
                for v in (err.mean(0) if ok.any() else np.full(len(s.noise_sigmas), np.nan))
            ],
            "halfspace_error": [
                float(v)
                for v in (np.nanmean(pred, 0) if ok.any() else np.full(len(s.noise_sigmas), np.nan))
            ],
            "n_valid": int(ok.sum()),
            "n_excluded": int((~ok).sum()),
        }
    if "signature" in s.what:
        labels = y if y is not None else jnp.asarray(predict(clf, x, devices=devices))
        sig = margin_signature(clf, x, labels, splits=splits or {})
        summary["signature"] = {
            name: {
                "stats": sig.stats[i].tolist(),
                "normalized_stats": sig.normalized_stats[i].tolist(),
                "normalizer": float(sig.normalizer[i]),
            }
            for i, name in enumerate(sig.layers)
        }
        arrays.update(
            {f"signature_{name}": np.asarray(sig.margins[i]) for i, name in enumerate(sig.layers)}
        )
    return AnalysisResult(arrays, summary)


class _Found(NamedTuple):
    """A DeepFool result given as three arrays (one chunk's rows)."""

    perturbation: jax.Array
    margin: jax.Array
    converged: jax.Array


def _given(deepfool) -> tuple:
    return (
        np.asarray(deepfool.perturbation),
        np.asarray(deepfool.margin),
        np.asarray(deepfool.converged, bool),
    )


def _per_example(clf, xc, yc, s: DiagnoseSettings, key, chunk, what, df=None) -> dict:
    """Thickness, local linearity and DeepFool margins of one chunk (``df``: the chunk's
    rows of a DeepFool result to reuse)."""
    out = {}
    if "thickness" in what and df is not None and s.attack == "deepfool":
        t = boundary_thickness(clf, xc, xc + df.perturbation, yc, alpha=s.alpha, beta=s.beta,
                               num_points=s.grid, chunk_size=chunk.size)  # fmt: skip
        valid = t.valid & df.converged & (df.margin > 0)  # as thickness(attack="deepfool")
        t = t._replace(thickness=jnp.where(valid, t.thickness, jnp.nan), valid=valid)
        out.update(thickness=t.thickness, thickness_valid=t.valid, thickness_distance=t.distance)
    elif "thickness" in what:
        t = thickness(
            clf,
            xc,
            yc,
            attack=s.attack,
            eps=s.eps,
            key=jax.random.fold_in(jax.random.fold_in(key, 1), chunk.start),
            steps=s.steps,
            alpha=s.alpha,
            beta=s.beta,
            num_points=s.grid,
            chunk_size=chunk.size,
        )
        out.update(thickness=t.thickness, thickness_valid=t.valid, thickness_distance=t.distance)
    if "linearity" in what:
        labels = yc if yc is not None else jnp.argmax(clf(xc), -1)
        ll = local_linearity(
            clf,
            xc,
            labels,
            eps=s.eps,
            key=jax.random.fold_in(jax.random.fold_in(key, 2), chunk.start),
            steps=s.steps,
            bounds=(0.0, 1.0),
        )
        out["linearity_gamma"] = ll.gamma
    if "rho" in what or "noise" in what:
        r = df if df is not None else deepfool_dataset(clf, xc, yc, norm=2, chunk_size=chunk.size)
        out.update(deepfool_margin=r.margin, deepfool_converged=r.converged)
    labels = None
    if "alignment" in what or "noise" in what:
        labels = yc if yc is not None else jnp.argmax(clf(xc), -1)
    if "alignment" in what:
        a = gradient_alignment(clf, xc, labels, chunk_size=chunk.size)
        out.update(alignment=a.alignment, alignment_valid=a.valid)
    if "noise" in what:
        res = gaussian_noise_errors(
            clf, xc, labels, s.noise_sigmas, samples=s.noise_samples, chunk_size=chunk.size,
            key=jax.random.fold_in(jax.random.fold_in(key, 3), chunk.start),
        )  # fmt: skip
        d = jnp.where(r.converged, r.margin, jnp.nan)
        cmp = noise_vs_margin(res, d)
        out.update(noise_error=res.example_error, noise_predicted=cmp.predicted,
                   noise_valid=res.valid)  # fmt: skip
    return out
