"""Robustness to random noise, tied to the margin (Fawzi, Moosavi-Dezfooli, Frossard, "Robustness
of classifiers: from adversarial to random noise", NeurIPS 2016; Ford, Gilmer, Carlini, Cubuk,
"Adversarial Examples Are a Natural Consequence of Test Error in Noise", ICML 2019).

Error in Gaussian noise. For each example and noise level ``σ``, the probability that
``x + σ z``, ``z ~ N(0, I)``, is misclassified, estimated with ``samples`` draws. The same
draws ``z`` serve every ``σ`` (common random numbers: the curves are smooth in ``σ``), and the
draws of example ``n`` come from ``fold_in(key, n)``, so results do not depend on chunking.

The half-space closed form. For an affine binary boundary at distance ``d`` from a correctly
classified ``x``, ``<w, σ z> / ||w|| ~ N(0, σ²)``, so the error in noise is exactly
``Φ(-d / σ)`` (``Φ`` the standard normal CDF). :func:`noise_vs_margin` compares the measured
error with ``Φ(-d/σ)`` for the DeepFool margin ``d`` of each example: ratio ``≈ 1`` means the
boundary is flat at the noise's scale; ``> 1`` means noise finds the boundary sooner than a
flat boundary at distance ``d`` would (it curves towards the data); ``< 1`` the reverse. Ford
et al.'s argument runs the other way round: a model with test error in noise must have small
adversarial margins, ``d ≤ -σ Φ⁻¹(error)`` for a half-space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import ndtr

from .._validation import (
    check_batch,
    check_bounds,
    check_classifier,
    check_int,
    check_key,
    check_labels,
)
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier

__all__ = [
    "NoiseErrors",
    "NoiseMargin",
    "gaussian_noise_errors",
    "halfspace_noise_error",
    "noise_vs_margin",
    "sigma_at_error",
]


class NoiseErrors(NamedTuple):
    """sigmas ``(S,)``; error ``(S,)`` error rate of the valid examples in noise (each example
    with all its draws); example_error ``(N, S)`` the fraction of draws misclassified per
    example; correct ``(N,)`` bool: classified correctly without noise; valid ``(N,)`` bool:
    finite logits at ``x`` and every noisy draw; n_invalid : examples left out; samples :
    draws per example and ``σ``."""

    sigmas: Array
    error: Array
    example_error: Array
    correct: Array
    valid: Array
    n_invalid: int
    samples: int


class NoiseMargin(NamedTuple):
    """predicted ``(N, S)``: ``Φ(-d/σ)`` for correctly classified examples and
    ``Φ(d/σ)`` for misclassified ones (the half-space's error in noise); ratio ``(N, S)``
    measured / predicted, NaN where the prediction is below ``1 / samples`` (not resolvable
    with the draws) or the example is not valid; median_ratio ``(S,)`` over the examples
    where it is defined."""

    predicted: Array
    ratio: Array
    median_ratio: Array


def halfspace_noise_error(margin, sigma) -> Array:
    """``Φ(-d / σ)``: the probability that Gaussian noise of std ``σ`` (per coordinate) moves a
    point at distance ``d`` from an affine boundary across it; broadcasts ``d`` and ``σ``."""
    d = jnp.asarray(margin)
    s = jnp.asarray(sigma, d.dtype if jnp.issubdtype(d.dtype, jnp.floating) else None)
    return ndtr(-d / s)


def gaussian_noise_errors(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    sigmas: Sequence[float],
    *,
    key: Array,
    samples: int = 64,
    bounds: tuple | None = None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> NoiseErrors:
    """Error rate under additive Gaussian noise ``x + σ z`` for each ``σ`` in ``sigmas``.

    Parameters
    ----------
    logits_fn : the classifier (any form :func:`geomrobust.as_classifier` accepts).
    x, y : ``(N, *s)`` examples and ``(N,)`` labels.
    sigmas : noise standard deviations per coordinate (positive, any order).
    key : PRNG key; example ``n`` draws from ``fold_in(key, n)``, the same ``z`` for every σ.
    samples : draws per example.
    bounds : clip the noisy input to ``(lo, hi)`` (images), or None (default, the closed
        form's setting).
    chunk_size, devices, progress : the executor's options (each chunk evaluates
        ``chunk_size × samples`` inputs per σ).

    Returns
    -------
    NoiseErrors.
    """
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    x = jnp.asarray(x)
    n = x.shape[0]
    k = check_classifier(clf, x)
    y = jnp.asarray(y)
    check_labels(y, k, n, "y")
    check_key(key, "key")
    samples = check_int(samples, "samples")
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sigmas must be finite positive numbers, got {sigmas!r}")
    bounds = check_bounds(bounds)
    lo, hi = (-jnp.inf, jnp.inf) if bounds is None else bounds
    wrong, clean_wrong, valid = run_program(
        partial(_noise_program, samples=samples),
        (clf, key, jnp.asarray(s, x.dtype), jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype)),
        (x, y, jnp.arange(n, dtype=jnp.int32)),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="Gaussian noise",
    )  # fmt: skip
    v = np.asarray(valid)
    frac = np.asarray(wrong)
    err = frac[v].mean(axis=0) if v.any() else np.full(s.size, np.nan)
    return NoiseErrors(
        jnp.asarray(s, x.dtype), jnp.asarray(err), jnp.asarray(frac), ~jnp.asarray(clean_wrong),
        jnp.asarray(valid), int((~v).sum()), samples,
    )  # fmt: skip


@partial(jax.jit, static_argnames="samples")
def _noise_program(clf, key, sigmas, lo, hi, xc, yc, ids, *, samples):
    """``(C, S)`` fraction of misclassified draws, ``(C,)`` clean misclassification and
    validity. One program per architecture, shapes and number of draws."""
    c = xc.shape[0]
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (samples, *xc.shape[1:]),
                                             xc.dtype))(ids)  # fmt: skip
    logits0 = clf(xc)
    ok0 = jnp.all(jnp.isfinite(logits0), axis=-1)

    def at(sigma):
        pts = jnp.clip(xc[:, None] + sigma * z, lo, hi).reshape(c * samples, *xc.shape[1:])
        logits = clf(pts).reshape(c, samples, -1)
        wrong = jnp.argmax(logits, axis=-1) != yc[:, None]
        ok = jnp.all(jnp.isfinite(logits), axis=(1, 2))
        return jnp.mean(wrong.astype(xc.dtype), axis=1), ok

    frac, ok = jax.lax.map(at, sigmas)  # (S, C)
    return frac.T, jnp.argmax(logits0, axis=-1) != yc, ok0 & jnp.all(ok, axis=0)


def sigma_at_error(result: NoiseErrors, rate: float) -> float:
    """The noise level at which the dataset's error in noise first reaches ``rate``: linear
    interpolation in ``log σ`` between the two grid levels that bracket it (sigmas sorted);
    the smallest σ if it is already reached there; NaN if it is never reached."""
    s = np.asarray(result.sigmas, np.float64)
    e = np.asarray(result.error, np.float64)
    order = np.argsort(s)
    s, e = s[order], e[order]
    if not (0 < float(rate) <= 1):
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    above = np.nonzero(e >= rate)[0]
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(s[0])
    t = (rate - e[i - 1]) / (e[i] - e[i - 1])
    return float(np.exp(np.log(s[i - 1]) + t * (np.log(s[i]) - np.log(s[i - 1]))))


def noise_vs_margin(result: NoiseErrors, margin) -> NoiseMargin:
    """Measured error in noise against the half-space prediction from each example's margin
    (e.g. ``deepfool(...).margin``, L2): ``Φ(-d/σ)`` for correct examples, ``Φ(d/σ)`` for
    misclassified ones; the ratio is measured / predicted (see the module docstring)."""
    d = np.asarray(margin, np.float64).reshape(-1)
    ex = np.asarray(result.example_error, np.float64)
    if d.shape[0] != ex.shape[0]:
        raise ValueError(f"margin must have one value per example ({ex.shape[0]}), got {d.shape}")
    if np.any(d < 0):
        i = int(np.argmax(d < 0))
        raise ValueError(
            f"margin must hold distances >= 0 (inf or NaN where none was found), got {d[i]!r} "
            f"for example {i}; pass the margins' absolute values, e.g. deepfool(...).margin"
        )
    s = np.asarray(result.sigmas, np.float64)
    correct = np.asarray(result.correct)
    signed = np.where(correct, d, -d)[:, None]  # misclassified: the error is Φ(d/σ)
    pred = np.asarray(halfspace_noise_error(signed, s[None, :]))
    ok = np.asarray(result.valid)[:, None] & np.isfinite(d)[:, None] & (pred >= 1 / result.samples)
    ratio = np.where(ok, ex / np.where(ok, pred, 1.0), np.nan)
    med = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                    for c in ratio.T])  # fmt: skip
    return NoiseMargin(jnp.asarray(pred), jnp.asarray(ratio), jnp.asarray(med))
