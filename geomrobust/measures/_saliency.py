"""Interpretability and robustness: saliency maps, gradient-image alignment, and images
synthesised by large targeted attacks.

Alignment (Etmann, Lunz, Maass, Schönlieb, "On the Connection Between Adversarial Robustness
and Saliency Map Interpretability", ICML 2019, definition 1):

    α(x) = |<x, g(x)>| / (||x|| ||g(x)||),

with ``g = ∇ f_y`` (``gradient="logit"``, the saliency map of the label's logit) or
``g = ∇ (f_y - f_j)``, ``j`` the runner-up class at ``x`` (``gradient="margin"``, their
binarised classifier ``Ψ``). For a bias-free linear ``Ψ(x) = <w, x>`` the distance to the
boundary is ``|<w, x>| / ||w|| = α(x) ||x||`` exactly (their theorem 1; tested), so alignment
is the margin in units of ``||x||``; for ReLU networks (positively homogeneous without biases)
the relation holds locally.

Saliency maps: the gradient ``∇ f_y(x)`` (Simonyan et al. 2014), gradient × input (Shrikumar
et al. 2017) and SmoothGrad, the mean gradient at ``x + N(0, (s (max x - min x))² I)``
(Smilkov et al. 2017, ``s = 0.15``, 50 samples).

Synthesis: targeted PGD with a large L2 radius from a seed image towards every class
(Tsipras et al., "Robustness May Be at Odds with Accuracy", ICLR 2019; Santurkar et al.,
"Image Synthesis with a Single (Robust) Classifier", NeurIPS 2019): robust models' gradients
are "perceptually aligned", the images look like the target class; a standard model's do not.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import (
    check_batch,
    check_classifier,
    check_int,
    check_key,
    check_labels,
    check_positive,
)
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ..search import pgd

__all__ = ["Alignment", "Synthesis", "class_synthesis", "gradient_alignment", "saliency_maps"]

_METHODS = ("gradient", "gradient_x_input", "smoothgrad")


class Alignment(NamedTuple):
    """alignment ``(N,)`` ``|<x, g>| / (||x|| ||g||)`` (NaN where not valid); gradient_norm
    ``(N,)`` ``||g(x)||``; label ``(N,)`` the class ``y`` used; valid ``(N,)`` bool: finite,
    ``x ≠ 0`` and ``g ≠ 0``."""

    alignment: Array
    gradient_norm: Array
    label: Array
    valid: Array


class Synthesis(NamedTuple):
    """images ``(S, K, *s)``: from seed ``s`` towards class ``k``; success ``(S, K)`` bool:
    classified as ``k`` (a non-finite logit row never is); confidence ``(S, K)`` the softmax
    probability of ``k``; classes ``(K,)``; status ``(S, K)`` int8
    :class:`geomrobust.Status` of the targeted attack (``success == (status ==
    Status.SUCCESS)``; ``NONFINITE`` or ``NOT_FOUND``, as :class:`geomrobust.AttackResult`)."""

    images: Array
    success: Array
    confidence: Array
    classes: Array
    status: Array


def _labels(clf, x, y, k):
    n = x.shape[0]
    if y is None:
        return jnp.full((n,), -1, jnp.int32)
    y = jnp.asarray(y)
    check_labels(y, k, n, "y")
    return y.astype(jnp.int32)


def _score_fn(clf, gradient):
    def score(xi, yi):
        logits = clf(xi[None])[0]
        label = jnp.where(yi < 0, jnp.argmax(logits), yi)
        fy = logits[label]
        if gradient == "logit":
            return fy, label
        other = jnp.max(jnp.where(jnp.arange(logits.shape[0]) == label, -jnp.inf, logits))
        return fy - other, label

    return score


def gradient_alignment(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    gradient: str = "logit",
    chunk_size: int = 256,
    devices=None,
    progress=None,
) -> Alignment:
    """Gradient-image alignment ``|<x, g>| / (||x|| ||g||)`` per example (Etmann et al. 2019).

    Parameters
    ----------
    logits_fn : the classifier (any form :func:`geomrobust.as_classifier` accepts).
    x : ``(N, *s)`` examples; y : ``(N,)`` labels or None (the predicted class).
    gradient : ``"logit"`` (``g = ∇ f_y``, default) or ``"margin"`` (``g = ∇ (f_y - f_j)``,
        ``j`` the runner-up at ``x``).
    chunk_size, devices, progress : the executor's options.

    Returns
    -------
    Alignment; dtype of ``x``.
    """
    if gradient not in ("logit", "margin"):
        raise ValueError(f"gradient must be 'logit' or 'margin', got {gradient!r}")
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    x = jnp.asarray(x)
    k = check_classifier(clf, x)
    if gradient == "margin" and k < 2:
        raise ValueError("gradient='margin' needs at least two classes")
    y = _labels(clf, x, y, k)
    align, gnorm, label, valid = run_program(
        partial(_alignment_program, gradient=gradient), (clf,), (x, y),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="alignment",
    )  # fmt: skip
    return Alignment(jnp.where(valid, align, jnp.nan), gnorm, label, valid)


@partial(jax.jit, static_argnames="gradient")
def _alignment_program(clf, xc, yc, *, gradient):
    score = _score_fn(clf, gradient)
    g, label = jax.vmap(jax.grad(score, has_aux=True))(xc, yc)
    c = xc.shape[0]
    xf, gf = xc.reshape(c, -1), g.reshape(c, -1)
    xn, gn = jnp.linalg.norm(xf, axis=1), jnp.linalg.norm(gf, axis=1)
    dot = jnp.abs(jnp.sum(xf * gf, axis=1))
    valid = jnp.isfinite(dot) & (xn > 0) & (gn > 0)
    return dot / jnp.where(valid, xn * gn, 1), gn, label.astype(jnp.int32), valid


def saliency_maps(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    method: str = "gradient",
    key: Array | None = None,
    samples: int = 50,
    noise: float = 0.15,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> Array:
    """Saliency maps ``(N, *s)`` of the label's logit ``f_y``.

    ``method``: ``"gradient"`` ``∇ f_y(x)``; ``"gradient_x_input"`` ``x ⊙ ∇ f_y(x)``;
    ``"smoothgrad"`` ``mean_i ∇ f_y(x + ε_i)``, ``ε_i ~ N(0, (noise (max x - min x))² I)``
    per example, ``samples`` draws from ``fold_in(key, n)`` (needs ``key``). ``y`` None: the
    predicted class. Signed maps; plot ``|map|`` or its channel sum as the papers do.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    x = jnp.asarray(x)
    k = check_classifier(clf, x)
    y = _labels(clf, x, y, k)
    if method == "smoothgrad":
        if key is None:
            raise ValueError("method='smoothgrad' needs key= (a jax.random.key)")
        check_key(key, "key")
        samples = check_int(samples, "samples")
        check_positive(noise, "noise", allow_zero=True)
    else:
        key, samples = jax.random.key(0), 1
    n = x.shape[0]
    (maps,) = run_program(
        partial(_saliency_program, method=method, samples=int(samples)),
        (clf, key, jnp.asarray(noise, x.dtype)), (x, y, jnp.arange(n, dtype=jnp.int32)),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="saliency",
    )  # fmt: skip
    return maps


@partial(jax.jit, static_argnames=("method", "samples"))
def _saliency_program(clf, key, noise, xc, yc, ids, *, method, samples):
    score = _score_fn(clf, "logit")
    grad = jax.vmap(jax.grad(score, has_aux=True))
    if method != "smoothgrad":
        g, _ = grad(xc, yc)
        return ((g * xc) if method == "gradient_x_input" else g,)
    axes = tuple(range(1, xc.ndim))
    scale = noise * (jnp.max(xc, axis=axes) - jnp.min(xc, axis=axes))
    # the label is fixed at the clean input, as in SmoothGrad
    label = jnp.where(yc < 0, jnp.argmax(clf(xc), axis=-1), yc).astype(jnp.int32)
    shape = (samples, *xc.shape[1:])
    eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, xc.dtype))(ids)
    eps = eps * scale.reshape((-1, 1) + (1,) * (xc.ndim - 1))

    def at(e):
        g, _ = grad(xc + e, label)
        return g

    return (jnp.mean(jax.lax.map(at, jnp.swapaxes(eps, 0, 1)), axis=0),)


def class_synthesis(
    logits_fn: Callable[[Array], Array],
    seeds: Array,
    *,
    eps: float,
    steps: int = 60,
    step_size: float | None = None,
    classes=None,
    bounds: tuple | None = None,
) -> Synthesis:
    """Large-radius targeted L2 PGD from every seed towards every class (no random start).

    ``seeds (S, *s)``; ``classes`` default ``range(K)``; ``step_size`` default
    ``2.5 eps / steps`` (:func:`geomrobust.pgd`). The images of a robust model look like their
    target class ("perceptually aligned gradients", Tsipras et al. 2019; Santurkar et al. 2019).
    ``bounds``: the input box of the search (default None, no box; ``(0.0, 1.0)`` for images).
    """
    check_positive(eps, "eps")
    check_int(steps, "steps")
    if step_size is not None:
        check_positive(step_size, "step_size")
    clf = as_classifier(logits_fn)
    check_batch(seeds, "seeds")
    seeds = jnp.asarray(seeds)
    k = check_classifier(clf, seeds)
    classes = np.arange(k) if classes is None else np.asarray(classes, np.int64).reshape(-1)
    check_labels(jnp.asarray(classes), k, classes.size, "classes")
    s = seeds.shape[0]
    x = jnp.repeat(seeds, classes.size, axis=0)
    target = jnp.tile(jnp.asarray(classes, jnp.int32), s)
    y = jnp.argmax(clf(seeds), axis=-1).astype(jnp.int32)
    y = jnp.repeat(y, classes.size)
    res = pgd(clf, x, y, key=None, eps=eps, norm=2, steps=steps, step_size=step_size,
              random_start=False, target=target, bounds=bounds)  # fmt: skip
    p = jax.nn.softmax(clf(res.adversarial), axis=-1)
    conf = jnp.take_along_axis(p, target[:, None], axis=-1)[:, 0]
    shape = (s, classes.size)
    return Synthesis(
        res.adversarial.reshape(shape + seeds.shape[1:]), res.success.reshape(shape),
        conf.reshape(shape), jnp.asarray(classes), res.status.reshape(shape),
    )  # fmt: skip
