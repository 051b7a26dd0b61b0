"""Margins along directions: the first label change on the rays ``x + t d``, ``t > 0``.

docs/methods.md section 3. For each example and each unit direction, bracket the first label change
by stepping ``t = h, 2h, ...`` (``h = max_dist / steps``), then bisect the bracket to a
tolerance relative to ``t``. Random directions uniform on the sphere give the "random margins"
of Fawzi, Moosavi-Dezfooli, Frossard, "Robustness of classifiers: from adversarial to random
noise", NeurIPS 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._status import Status, status_codes
from .._validation import check_positive, is_concrete, search_inputs
from ..engine import run_program
from ..models import as_classifier

__all__ = ["DirectionalMargins", "margin_along"]


class DirectionalMargins(NamedTuple):
    """margin : ``(N, M)`` smallest ``t > 0`` with a label change at ``x + t d`` (the upper
    end of the final bracket), ``+inf`` where not converged; adv_label : ``(N, M)`` label at
    ``x + margin d`` (``-1`` where not converged); converged : ``(N, M)`` bool, ``status ==
    Status.SUCCESS``: a label change was bracketed and bisected to ``tol``; status :
    ``(N, M)`` int8 :class:`geomrobust.Status`: ``NOT_FOUND`` no label change within
    ``max_dist`` (on the stepping grid), ``NONFINITE`` non-finite logits at ``x`` or on the
    ray, ``MAX_STEPS`` the bisection ran out of ``bisect_steps`` before ``tol``."""

    margin: Array
    adv_label: Array
    converged: Array
    status: Array


def _labels(logits_fn, pts):
    logits = logits_fn(pts)
    finite = jnp.all(jnp.isfinite(logits), axis=-1)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), finite


def _check_unit(directions, x_ndim: int, per_example: bool):
    if not is_concrete(directions):
        return
    d = np.asarray(directions, np.float64)
    axes = tuple(range(2 if per_example else 1, d.ndim))
    norms = np.sqrt(np.sum(d * d, axis=axes))
    atol = 1e-8 if np.dtype(directions.dtype) == np.float64 else 1e-4
    if not np.all(np.abs(norms - 1) <= atol):
        worst = float(norms.flat[np.argmax(np.abs(norms - 1))])
        raise ValueError(
            f"directions must be unit vectors (||d|| = 1 per direction); found a norm of "
            f"{worst:.6g}. Normalize them, e.g. d / jnp.linalg.norm(d, axis=-1, keepdims=True)"
        )


@renamed(num_steps="steps", max_bisect="bisect_steps")
def margin_along(
    logits_fn: Callable[[Array], Array],
    x: Array,
    directions: Array,
    *,
    max_dist: float,
    tol: float = 1e-4,
    steps: int = 32,
    bisect_steps: int = 64,
    chunk_size: int = 256,
    devices=None,
    progress=None,
) -> DirectionalMargins:
    """Smallest ``t > 0`` with ``argmax f(x + t d) != argmax f(x)``, per example and direction.

    Bracketing: ``t_j = j · max_dist / steps``, ``j = 1..steps``, until the label
    changes (a change between two grid points and back is not seen: refine the grid with
    ``steps``); then bisection until ``hi - lo <= tol · hi``. All rays are evaluated
    together, one forward pass of ``N·M`` points per step, and finished rays are masked.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, :class:`geomrobust.Classifier`,
        NNX or Equinox module (see :func:`geomrobust.as_classifier`).
    x : ``(N, *s)``, computed in the search dtype (float32 for float16 / bfloat16, otherwise
        the wider of ``x``'s and the logits' dtype; docs/conventions.md "Input checks").
    directions : unit vectors, ``(M, *s)`` shared by all examples or ``(N, M, *s)`` per
        example. Directions are VALIDATED (not normalized): a norm off 1 by more than 1e-4
        (float32) / 1e-8 (float64) raises, since ``t`` is only a distance for unit ``d``.
    max_dist : the largest ``t`` searched, > 0.
    tol : bisection tolerance relative to ``t``, > 0.
    steps : grid steps of the bracketing phase (formerly ``num_steps``).
    bisect_steps : bisection steps at most (64 reach float64 resolution; formerly
        ``max_bisect``).
    chunk_size : examples per jitted call (the last chunk padded), so peak memory is that of
        ``chunk_size · M`` rays and one compilation serves every chunk and every call with
        the same shapes; ``max_dist`` and ``tol`` are traced (changing them does not
        recompile). Results do not depend on ``chunk_size`` beyond the rounding of batched
        forward passes.
    devices : None (one device), ``"all"``, an int or a list of devices: chunks are
        spread over them (:func:`geomrobust.engine.map_chunks`), results bit-for-bit
        identical to one device.
    progress : None, True (a bar counting examples) or a callable ``progress(n)``.

    Returns
    -------
    DirectionalMargins with ``margin``, ``adv_label``, ``converged`` and ``status`` of
    shape ``(N, M)``; ``converged`` is False (and ``margin`` ``inf``) where no label change
    lies within ``max_dist`` (``status`` ``NOT_FOUND``), as well as where logits were not
    finite (``NONFINITE``).
    """
    clf = as_classifier(logits_fn)
    x, _, _ = search_inputs(clf, jnp.asarray(x), "x")
    directions = jnp.asarray(directions)
    n, shape = x.shape[0], x.shape[1:]
    if directions.shape[-len(shape) :] != shape or directions.ndim not in (
        len(shape) + 1,
        len(shape) + 2,
    ):
        raise ValueError(
            f"directions must have shape (M, *s) or (N, M, *s) with s={tuple(shape)}, "
            f"got {tuple(directions.shape)}"
        )
    per_example = directions.ndim == len(shape) + 2
    if per_example and directions.shape[0] != n:
        raise ValueError(
            f"per-example directions must have leading axis N={n}, got {directions.shape}"
        )
    _check_unit(directions, x.ndim, per_example)
    max_dist = check_positive(max_dist, "max_dist")
    tol = check_positive(tol, "tol")
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    dtype = x.dtype
    directions = directions.astype(dtype)
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    program = partial(_along_program, per_example=per_example, steps=int(steps),
                      bisect_steps=int(bisect_steps))  # fmt: skip
    step = jnp.asarray(max_dist / steps, dtype)
    tol = jnp.asarray(tol, dtype)
    if per_example:
        shared, batched = (clf, step, tol, None), (x, directions)
    else:
        shared, batched = (clf, step, tol, directions), (x,)
    out = run_program(
        program, shared, batched, chunk_size=int(chunk_size), devices=devices,
        progress=progress, desc="margins along directions",
    )  # fmt: skip
    return DirectionalMargins(*out)


@partial(jax.jit, static_argnames=("per_example", "steps", "bisect_steps"))
def _along_program(clf, step, tol, shared, x, directions=None, *, per_example, steps,
                   bisect_steps):  # fmt: skip
    """The batched search of a chunk: one compilation per architecture and shapes (weights,
    data, directions, ``max_dist`` and ``tol`` are arguments)."""
    d = directions if per_example else shared
    return _search(clf, x, d, per_example, step, tol, steps, bisect_steps)


def _search(logits_fn, x, directions, per_example, h, tol, steps, bisect_steps):
    n, shape = x.shape[0], x.shape[1:]
    dtype = x.dtype
    m = directions.shape[1] if per_example else directions.shape[0]
    if not per_example:
        directions = jnp.broadcast_to(directions[None], (n, m, *shape))
    d = directions.reshape(n * m, *shape)
    xr = jnp.repeat(x, m, axis=0)
    label0, finite0 = _labels(logits_fn, x)
    label0 = jnp.repeat(label0, m)
    finite0 = jnp.repeat(finite0, m)
    r = n * m

    def at(t):
        return xr + t.reshape((-1,) + (1,) * len(shape)) * d

    # phase 1: bracket by stepping
    def s_cond(c):
        j, _, stop, *_ = c
        return jnp.any(~stop & (j < steps))

    def s_body(c):
        j, found, stop, bad, adv = c
        run = ~stop & (j < steps)
        j = j + run.astype(jnp.int32)
        lab, fin = _labels(logits_fn, at(j.astype(dtype) * h))
        hit = run & fin & (lab != label0)
        newbad = run & ~fin
        return (
            j,
            found | hit,
            stop | hit | newbad,
            bad | newbad,
            jnp.where(hit, lab, adv),
        )

    init = (
        jnp.zeros(r, jnp.int32),
        jnp.zeros(r, bool),
        ~finite0,
        ~finite0,
        jnp.full(r, -1, jnp.int32),
    )
    j, found, _, bad, adv = jax.lax.while_loop(s_cond, s_body, init)
    hi = j.astype(dtype) * h
    lo = hi - h

    # phase 2: bisection inside [lo, hi], keeping a label change at hi
    def b_cond(c):
        lo, hi, _, k = c
        return jnp.any(found & (hi - lo > tol * hi)) & (k < bisect_steps)

    def b_body(c):
        lo, hi, adv, k = c
        run = found & (hi - lo > tol * hi)
        mid = 0.5 * (lo + hi)
        lab, fin = _labels(logits_fn, at(mid))
        change = (lab != label0) | ~fin
        hi2 = jnp.where(run & change, mid, hi)
        lo2 = jnp.where(run & ~change, mid, lo)
        return lo2, hi2, jnp.where(run & change, lab, adv), k + 1

    lo, hi, adv, _ = jax.lax.while_loop(b_cond, b_body, (lo, hi, adv, jnp.asarray(0)))
    # bisected to tol, or to the dtype's resolution (the midpoint is one of the ends)
    mid = 0.5 * (lo + hi)
    resolved = (hi - lo <= tol * hi) | (mid <= lo) | (mid >= hi)
    status = status_codes(found & ~bad & resolved, bad, found)
    ok = status == Status.SUCCESS
    margin = jnp.where(ok, hi, jnp.asarray(jnp.inf, dtype))
    adv = jnp.where(ok, adv, -1)
    return DirectionalMargins(
        margin.reshape(n, m), adv.reshape(n, m).astype(jnp.int32), ok.reshape(n, m),
        status.reshape(n, m),
    )  # fmt: skip
