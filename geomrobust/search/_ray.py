"""Margins along directions: the first label change on the rays ``x + t d``, ``t > 0``.

DESIGN.md section 3.2. For each example and each unit direction, bracket the first label change
by stepping ``t = h, 2h, ...`` (``h = max_dist / num_steps``), then bisect the bracket to a
tolerance relative to ``t``. Random directions uniform on the sphere give the "random margins"
of Fawzi, Moosavi-Dezfooli, Frossard, "Robustness of classifiers: from adversarial to random
noise", NeurIPS 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_batch, check_classifier, check_positive, is_concrete
from ..ops import map_in_chunks
from ..parallel import map_sharded, resolve_devices

__all__ = ["DirectionalMargins", "margin_along"]


class DirectionalMargins(NamedTuple):
    """margin : ``(N, M)`` smallest ``t > 0`` with a label change at ``x + t d`` (the upper
    end of the final bracket), ``+inf`` if none within ``max_dist`` (on the stepping grid) or
    where not converged; adv_label : ``(N, M)`` label at ``x + margin d`` (``-1`` if none);
    converged : ``(N, M)`` bool, False only where logits were non-finite on the ray."""

    margin: Array
    adv_label: Array
    converged: Array


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


def margin_along(
    logits_fn: Callable[[Array], Array],
    x: Array,
    directions: Array,
    *,
    max_dist: float,
    tol: float = 1e-4,
    num_steps: int = 32,
    max_bisect: int = 64,
    chunk_size: int = 256,
    devices=None,
) -> DirectionalMargins:
    """Smallest ``t > 0`` with ``argmax f(x + t d) != argmax f(x)``, per example and direction.

    Bracketing: ``t_j = j · max_dist / num_steps``, ``j = 1..num_steps``, until the label
    changes (a change between two grid points and back is not seen: refine the grid with
    ``num_steps``); then bisection until ``hi - lo <= tol · hi``. All rays are evaluated
    together, one forward pass of ``N·M`` points per step, and finished rays are masked.

    Parameters
    ----------
    logits_fn : batched classifier ``(N, *s) -> (N, K)``.
    x : ``(N, *s)``.
    directions : unit vectors, ``(M, *s)`` shared by all examples or ``(N, M, *s)`` per
        example. Directions are VALIDATED (not normalized): a norm off 1 by more than 1e-4
        (float32) / 1e-8 (float64) raises, since ``t`` is only a distance for unit ``d``.
    max_dist : the largest ``t`` searched, > 0.
    tol : bisection tolerance relative to ``t``, > 0.
    num_steps : grid steps of the bracketing phase.
    max_bisect : bisection steps at most (64 reach float64 resolution).
    chunk_size : examples per jitted call (the last chunk padded), so peak memory is that of
        ``chunk_size · M`` rays and one compilation serves every chunk and every call with
        the same shapes; ``max_dist`` and ``tol`` are traced (changing them does not
        recompile). Results do not depend on ``chunk_size`` beyond the rounding of batched
        forward passes.
    devices : None (default device), ``"all"``, an int or a list of devices: chunks are
        spread over them (:func:`geomrobust.parallel.map_sharded`), results bit-for-bit
        identical to one device.

    Returns
    -------
    DirectionalMargins with ``margin``, ``adv_label``, ``converged`` of shape ``(N, M)``.
    """
    check_batch(x, "x")
    check_classifier(logits_fn, x)
    x = jnp.asarray(x)
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
    if not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    dtype = x.dtype
    directions = directions.astype(dtype)
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    program = _program(logits_fn, per_example, int(num_steps), int(max_bisect))
    static = dict(step=jnp.asarray(max_dist / num_steps, dtype), tol=jnp.asarray(tol, dtype))
    arrays = (x, directions) if per_example else (x,)
    if not per_example:
        static["shared"] = directions
    if not all(is_concrete(a) for a in (*arrays, *static.values())):
        return program(*arrays, **static)  # inside jit / vmap: stay transformable
    size = min(int(chunk_size), n)
    devs = resolve_devices(devices)
    if devs is not None and len(devs) > 1:
        out = map_sharded(program, *arrays, chunk_size=size, devices=devs, replicated=static)
    else:
        out = map_in_chunks(partial(program, **static), *arrays, chunk_size=size)
    return DirectionalMargins(*(jnp.asarray(o) for o in out))


@lru_cache(maxsize=8)
def _program(logits_fn, per_example: bool, num_steps: int, max_bisect: int):
    """The jitted batched search for a chunk (cached: one compilation per classifier)."""

    def batched(x, directions=None, *, step, tol, shared=None):
        return _search(logits_fn, x, directions if per_example else shared, per_example,
                       step, tol, num_steps, max_bisect)  # fmt: skip

    return jax.jit(batched)


def _search(logits_fn, x, directions, per_example, h, tol, num_steps, max_bisect):
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
        return jnp.any(~stop & (j < num_steps))

    def s_body(c):
        j, found, stop, bad, adv = c
        run = ~stop & (j < num_steps)
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
        return jnp.any(found & (hi - lo > tol * hi)) & (k < max_bisect)

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
    margin = jnp.where(found & ~bad, hi, jnp.asarray(jnp.inf, dtype))
    adv = jnp.where(found & ~bad, adv, -1)
    return DirectionalMargins(
        margin.reshape(n, m), adv.reshape(n, m).astype(jnp.int32), (~bad).reshape(n, m)
    )
