"""Boundary thickness (Yang, Khanna, Yu, Gholami, Keutzer, Gonzalez, Ramchandran, Mahoney,
"Boundary thickness and robustness in learning models", NeurIPS 2020, definition 1).

For an example ``x`` of class ``i`` and an adversarial point ``x_r`` of class ``j``, with
``g_ij(z) = p_i(z) - p_j(z)`` (softmax probabilities),

    Θ(x, x_r) = ||x_r - x|| ∫_0^1 1{α < g_ij(x + t (x_r - x)) < β} dt,

the length of the part of the segment on which the classifier is "uncertain" between the two
classes; the paper uses ``α = 0``, ``β = 0.75`` and reports the mean over the data set. A
thicker boundary goes with robustness.

Integration. ``g`` is evaluated on ``num_points`` equispaced ``t`` in ``[0, 1]``, linearly
interpolated between grid points, and the measure of ``{α < ĝ < β}`` of the interpolant is
computed exactly on every grid cell (so the only error is the interpolation of ``g``,
``O(1/num_points²)`` on smooth stretches, rather than ``O(1/num_points)`` of a Riemann sum
of the indicator).

Endpoint. The paper takes ``x_r`` from an L2 PGD attack with a large radius; this module
takes any ``x_r`` (:func:`boundary_thickness`) and the driver :func:`thickness` computes it
with DeepFool (default: the minimal L2 perturbation, endpoint just past the boundary, so
``g_ij(x_r)`` is slightly negative; this covers the default ``α = 0`` but truncates ranges
with ``α < g(x_r)``) or with L2 PGD (``attack="pgd"``, radius ``eps``, as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_batch, check_classifier, check_labels
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ..search import deepfool_dataset, pgd

__all__ = ["Thickness", "boundary_thickness", "segment_fraction", "thickness"]


class Thickness(NamedTuple):
    """thickness ``(N,)`` (NaN where not valid); distance ``(N,)`` ``||x_r - x||_2``;
    fraction ``(N,)`` the fraction of the segment inside ``(α, β)``; label ``(N,)`` class
    ``i``; adv_label ``(N,)`` class ``j`` (predicted at ``x_r``); valid ``(N,)`` bool: ``x``
    is predicted as ``i`` and ``x_r`` as another class (else the segment crosses no boundary
    between ``i`` and ``j``); mean : mean thickness over the valid examples."""

    thickness: Array
    distance: Array
    fraction: Array
    label: Array
    adv_label: Array
    valid: Array
    mean: float


def segment_fraction(g: Array, alpha, beta) -> Array:
    """Fraction of ``[0, 1]`` on which the piecewise-linear interpolant of ``g`` (values on
    an equispaced grid along the last axis, ``(..., M)``) lies in the open interval
    ``(alpha, beta)``; exact for the interpolant."""
    g0, g1 = g[..., :-1], g[..., 1:]
    lo, hi = jnp.minimum(g0, g1), jnp.maximum(g0, g1)
    span = hi - lo
    overlap = jnp.clip(jnp.minimum(hi, beta) - jnp.maximum(lo, alpha), 0, None)
    flat = (g0 > alpha) & (g0 < beta)
    frac = jnp.where(span > 0, overlap / jnp.where(span > 0, span, 1), flat.astype(g.dtype))
    return jnp.mean(frac, axis=-1)


def _check_range(alpha, beta, num_points):
    if not (-1.0 <= float(alpha) < float(beta) <= 1.0):
        raise ValueError(f"need -1 <= alpha < beta <= 1, got alpha={alpha!r}, beta={beta!r}")
    if not isinstance(num_points, int | np.integer) or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}")


def boundary_thickness(
    logits_fn: Callable[[Array], Array],
    x: Array,
    x_adv: Array,
    y: Array | None = None,
    *,
    alpha: float = 0.0,
    beta: float = 0.75,
    num_points: int = 256,
    target: Array | None = None,
    estimator: str = "interpolant",
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> Thickness:
    """Boundary thickness ``Θ(x, x_r)`` for given endpoints (Yang et al. 2020, definition 1).

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)`` (any form :func:`geomrobust.as_classifier`
        accepts).
    x, x_adv : ``(N, *s)`` the examples and their adversarial points ``x_r``.
    y : ``(N,)`` class ``i`` of each example, or None for the predicted class at ``x``.
    alpha, beta : the band ``α < p_i - p_j < β`` (defaults 0 and 0.75 as in the paper).
    num_points : grid points in ``t ∈ [0, 1]`` (``num_points - 1`` cells).
    chunk_size : examples per jitted chunk (each evaluates ``chunk_size * num_points``
        inputs in one forward pass); one compilation per architecture and shapes: calling
        again with other weights, data, ``N``, ``alpha`` or ``beta`` does not recompile.
    devices, progress : the executor's options.
    target : ``(N,)`` the class ``j`` of each pair (default None: the class predicted at
        ``x_r``). The authors' code attacks towards a random wrong class and measures
        ``p_i - p_target`` whether or not the attack reached it: pass that target.
    estimator : ``"interpolant"`` (default): the exact measure of ``{α < ĝ < β}`` for the
        piecewise-linear interpolant of ``g`` on the grid; ``"points"``: the fraction of the
        ``num_points`` grid points inside the band, the authors' estimator (128 points).
        See docs/conventions.md for the full recipe of the published numbers.

    Returns
    -------
    Thickness; dtype of ``x``.
    """
    if estimator not in ("interpolant", "points"):
        raise ValueError(f"estimator must be 'interpolant' or 'points', got {estimator!r}")
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    x = jnp.asarray(x)
    x_adv = jnp.asarray(x_adv, x.dtype)
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {x.shape}, got {x_adv.shape}")
    _check_range(alpha, beta, num_points)
    n = x.shape[0]
    k = check_classifier(clf, x)
    if y is None:
        y = jnp.full((n,), -1, jnp.int32)
    else:
        y = jnp.asarray(y)
        check_labels(y, k, n, "y")
    if target is None:
        target = jnp.full((n,), -1, jnp.int32)
    else:
        target = jnp.asarray(target)
        check_labels(target, k, n, "target")
    ts = jnp.linspace(0.0, 1.0, int(num_points), dtype=x.dtype)
    a = jnp.asarray(alpha, x.dtype)
    b = jnp.asarray(beta, x.dtype)

    theta, dist, frac, i, j, valid = run_program(
        partial(_thickness_program, points=estimator == "points"), (clf, ts, a, b),
        (x, x_adv, y, target), chunk_size=chunk_size, devices=devices, progress=progress,
        desc="thickness",
    )  # fmt: skip
    theta = jnp.where(valid, theta, jnp.nan)
    v = np.asarray(valid)
    mean = float(np.mean(np.asarray(theta)[v])) if v.any() else float("nan")
    return Thickness(theta, dist, frac, i, j, valid, mean)


@partial(jax.jit, static_argnames="points")
def _thickness_program(clf, ts, a, b, xc, xa, yc, tc, *, points):
    """The chunk of :func:`boundary_thickness`: one program per architecture and shapes (the
    weights, the grid and the band are arguments, not constants)."""
    c = xc.shape[0]
    pred = jnp.argmax(clf(xc), axis=-1).astype(jnp.int32)
    i = jnp.where(yc < 0, pred, yc).astype(jnp.int32)
    j = jnp.where(tc < 0, jnp.argmax(clf(xa), axis=-1), tc).astype(jnp.int32)
    d = xa - xc
    shape = (1, -1) + (1,) * (xc.ndim - 1)
    pts = xc[:, None] + ts.reshape(shape) * d[:, None]  # (C, M, *s)
    p = jax.nn.softmax(clf(pts.reshape(c * ts.shape[0], *xc.shape[1:])), axis=-1)
    p = p.reshape(c, ts.shape[0], -1)
    g = (
        jnp.take_along_axis(p, i[:, None, None], -1)[..., 0]
        - jnp.take_along_axis(p, j[:, None, None], -1)[..., 0]
    )
    frac = (
        jnp.mean((g > a) & (g < b), axis=-1).astype(g.dtype)
        if points
        else (segment_fraction(g, a, b))
    )
    dist = jnp.sqrt(jnp.sum(d.reshape(c, -1) ** 2, axis=1))
    valid = (pred == i) & (j != i)
    return frac * dist, dist, frac, i, j, valid


def thickness(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    attack: str = "deepfool",
    eps: float | None = None,
    key: Array | None = None,
    steps: int = 20,
    bounds: tuple | None = None,
    alpha: float = 0.0,
    beta: float = 0.75,
    num_points: int = 256,
    **deepfool_kw,
) -> Thickness:
    """Boundary thickness with the endpoints computed by an attack.

    ``attack="deepfool"`` (default): ``x_r = x + r`` from L2
    :func:`geomrobust.search.deepfool_dataset` (``deepfool_kw`` passed on); examples where
    DeepFool did not converge are marked not valid. ``attack="pgd"``: ``x_r`` from L2
    :func:`geomrobust.search.pgd` with radius ``eps`` and ``steps`` steps (``key`` required),
    as in Yang et al. (who use a radius well beyond the margin); examples the attack does not
    flip are not valid. See :func:`boundary_thickness` for the rest.
    """
    clf = as_classifier(logits_fn)
    x = jnp.asarray(x)
    y_arr = None if y is None else jnp.asarray(y)
    if attack == "deepfool":
        res = deepfool_dataset(clf, x, y_arr, norm=2, bounds=bounds, **deepfool_kw)
        x_adv = x + res.perturbation
        ok = res.converged & (res.margin > 0)
    elif attack == "pgd":
        if eps is None or key is None:
            raise ValueError("attack='pgd' needs eps (the L2 radius) and key")
        labels = y_arr if y_arr is not None else jnp.argmax(clf(x), axis=-1)
        res = pgd(clf, x, labels, key=key, eps=eps, norm=2, steps=steps, bounds=bounds)
        x_adv = res.adversarial
        ok = res.success
    else:
        raise ValueError(f"attack must be 'deepfool' or 'pgd', got {attack!r}")
    out = boundary_thickness(clf, x, x_adv, y_arr, alpha=alpha, beta=beta, num_points=num_points)
    valid = out.valid & ok
    theta = jnp.where(valid, out.thickness, jnp.nan)
    v = np.asarray(valid)
    mean = float(np.mean(np.asarray(theta)[v])) if v.any() else float("nan")
    return out._replace(thickness=theta, valid=valid, mean=mean)
