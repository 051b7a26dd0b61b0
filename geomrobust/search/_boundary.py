"""Refinement of adversarial points onto the decision boundary, by bisection on a segment.

DeepFool (or any attack) returns ``x_adv`` just past the boundary. For curvature work the point
must lie ON the boundary ``{F_k = 0}``, ``F_k = f_k - f_y``, with ``k`` the label at ``x_adv``
(docs/methods.md). Bisection on ``t`` in ``[0, 1]`` along ``x + t (x_adv - x)`` keeps the
bracket ``F_k(lower) < 0 < F_k(upper)``; the state follows Optimistix's ``Bisection``
(``init`` / ``step`` / ``terminate``, a status instead of an exception under ``jit``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_batch, check_labels, search_inputs
from ..engine import run_program
from ..models import as_classifier
from ..ops import batch_logit_difference_grads
from ..ops._norms import lp_norm

__all__ = [
    "BisectionInfo",
    "BisectionState",
    "BoundaryPoints",
    "bisection_init",
    "bisection_step",
    "refine_boundary",
]


class BoundaryPoints(NamedTuple):
    """Points on the boundary between ``y`` and ``k``, with their unit normals.

    z : ``(N, *s)`` with ``F_k(z) ≈ 0`` (where not converged: ``x_adv``, for diagnosis).
    y, k : ``(N,)`` int32, the two classes (``F_k = f_k - f_y``; ``k`` = label at ``x_adv``).
    normal : ``(N, *s)``, ``∇F_k(z) / ||∇F_k(z)||``, pointing to the ``k`` side (0 where the
        gradient vanishes or the example did not converge).
    grad_norm : ``(N,)``, ``||∇F_k(z)||``.
    converged : ``(N,)`` bool: valid bracket, the tolerance reached, finite nonzero gradient.
    """

    z: Array
    y: Array
    k: Array
    normal: Array
    grad_norm: Array
    converged: Array


class BisectionState(NamedTuple):
    """``lower``, ``upper``: bracket in ``t`` ``(N,)``; ``t`` and ``F``: last midpoint and
    ``F_k`` there; ``scale``: ``max(|F_k(x)|, |F_k(x_adv)|)``; ``done``, ``converged``:
    ``(N,)`` bool; ``steps``: ``(N,)`` int32."""

    lower: Array
    upper: Array
    t: Array
    F: Array
    scale: Array
    done: Array
    converged: Array
    steps: Array


def _gap(logits: Array, y: Array, k: Array) -> Array:
    idx = jnp.arange(logits.shape[0])
    return logits[idx, k] - logits[idx, y]


def _along(x: Array, d: Array, t: Array) -> Array:
    return x + t.reshape(t.shape + (1,) * (x.ndim - 1)) * d


def bisection_init(F_lower: Array, F_upper: Array, valid: Array) -> BisectionState:
    """Bracket ``t`` in ``[0, 1]`` with ``F(0) = F_lower < 0 < F(1) = F_upper``; examples
    with an invalid bracket (``valid`` False) start done and not converged."""
    dtype = F_lower.dtype
    ok = valid & (F_lower < 0) & (F_upper > 0)
    n = F_lower.shape[0]
    return BisectionState(
        lower=jnp.zeros(n, dtype),
        upper=jnp.ones(n, dtype),
        t=jnp.ones(n, dtype),
        F=F_upper,
        scale=jnp.maximum(jnp.abs(F_lower), jnp.abs(F_upper)),
        done=~ok,
        converged=jnp.zeros(n, bool),
        steps=jnp.zeros(n, jnp.int32),
    )


class BisectionInfo(NamedTuple):
    """What one bisection step did: the midpoint ``t`` and ``F`` there, ``(N,)`` each."""

    t: Array
    F: Array


def bisection_step(
    F_at: Callable[[Array], Array], state: BisectionState, *, tol
) -> tuple[BisectionState, BisectionInfo]:
    """Halve the bracket of every running example; ``F_at(t) -> F`` evaluates all ``(N,)``.

    Terminates an example when ``|F(t)| <= tol · scale``, when ``upper - lower <= tol``
    (the segment is below ``tol`` relative to ``||x_adv - x||``), or when the midpoint is no
    longer representable between the ends (dtype resolution reached); all three converge.
    A non-finite ``F`` ends the example, not converged.
    """
    mid = 0.5 * (state.lower + state.upper)
    F = F_at(mid)
    finite = jnp.isfinite(F)
    pos = F > 0
    lower = jnp.where(pos, state.lower, mid)
    upper = jnp.where(pos, mid, state.upper)
    small = (jnp.abs(F) <= tol * state.scale) | (upper - lower <= tol)
    stalled = (mid <= state.lower) | (mid >= state.upper)
    done = small | stalled | ~finite
    run = ~state.done
    new = BisectionState(
        lower=jnp.where(run, lower, state.lower),
        upper=jnp.where(run, upper, state.upper),
        t=jnp.where(run, mid, state.t),
        F=jnp.where(run, F, state.F),
        scale=state.scale,
        done=state.done | (run & done),
        converged=state.converged | (run & done & finite),
        steps=state.steps + run.astype(jnp.int32),
    )
    return new, BisectionInfo(mid, F)


def refine_boundary(
    logits_fn: Callable[[Array], Array],
    x: Array,
    x_adv: Array,
    y: Array,
    *,
    tol: float = 1e-6,
    max_iter: int = 60,
    chunk_size: int | None = 1024,
    devices=None,
    progress=None,
) -> BoundaryPoints:
    """Bisect the segment ``[x, x_adv]`` onto the boundary ``F_k = f_k - f_y = 0``.

    ``k = argmax f(x_adv)``. With ``F_k(x) < 0 < F_k(x_adv)`` (a valid bracket), bisection on
    ``t`` in ``[0, 1]`` stops at ``|F_k(z)| <= tol · max(|F_k(x)|, |F_k(x_adv)|)`` or at a
    bracket shorter than ``tol · ||x_adv - x||`` (docs/methods.md); one forward pass per step,
    then one forward + batched VJP for the normals at ``z``. Along the segment ``F_k`` may
    vanish inside the region of a third class; ``z`` is then still on ``{F_k = 0}`` but not
    on the decision boundary of ``argmax``.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, :class:`geomrobust.Classifier`,
        NNX or Equinox module (see :func:`geomrobust.as_classifier`).
    x : ``(N, *s)`` clean points (label ``y`` side); x_adv : ``(N, *s)`` adversarial points.
        Both are cast to the search dtype (float32 for float16 / bfloat16, otherwise the
        wider of ``x``'s and the logits' dtype; docs/conventions.md "Input checks").
    y : ``(N,)`` integer labels of ``x``.
    tol : relative tolerance (on ``F_k`` and on the segment), > 0.
    max_iter : bisection steps at most (60 halvings reach float64 resolution).
    chunk_size, devices, progress : the executor's options (one compilation per
        architecture and chunk shape).

    Returns
    -------
    BoundaryPoints
        ``z``, ``y``, ``k``, unit ``normal`` ``∇F_k(z)/||∇F_k(z)||``, ``grad_norm``,
        ``converged`` (False: no valid bracket (``k == y``, ``F_k(x) >= 0``), non-finite
        values, ``max_iter`` reached, or a zero gradient at ``z``).
    """
    check_batch(x_adv, "x_adv")
    if tuple(x_adv.shape) != tuple(x.shape):
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {x_adv.shape}")
    if not isinstance(max_iter, int | np.integer) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    clf = as_classifier(logits_fn)
    x, k_classes, _ = search_inputs(clf, jnp.asarray(x), "x")
    x_adv = jnp.asarray(x_adv, x.dtype)
    y = jnp.asarray(y)
    check_labels(y, k_classes, x.shape[0], "y")
    y = y.astype(jnp.int32)
    program = partial(_refine_program, max_iter=int(max_iter))
    return run_program(
        program, (clf, jnp.asarray(tol, x.dtype)), (x, x_adv, y), chunk_size=chunk_size,
        devices=devices, progress=progress, desc="refine boundary",
    )  # fmt: skip


@partial(jax.jit, static_argnames="max_iter")
def _refine_program(clf, tol, x, x_adv, y, *, max_iter):
    """Bisection onto the boundary for a chunk (one compilation per architecture, shapes
    and ``max_iter``; ``tol`` is traced)."""
    logits_adv = clf(x_adv).astype(x.dtype)
    k = jnp.argmax(logits_adv, axis=-1).astype(jnp.int32)
    F_lo = _gap(clf(x).astype(x.dtype), y, k)
    F_hi = _gap(logits_adv, y, k)
    d = x_adv - x
    valid = (k != y) & jnp.isfinite(F_lo) & jnp.isfinite(F_hi)

    def F_at(t):
        return _gap(clf(_along(x, d, t)).astype(x.dtype), y, k)

    state = bisection_init(F_lo, F_hi, valid)
    state = jax.lax.while_loop(
        lambda s: jnp.any(~s.done & (s.steps < max_iter)),
        lambda s: bisection_step(F_at, s, tol=tol)[0],
        state,
    )
    z = _along(x, d, state.t)
    _, g = batch_logit_difference_grads(clf, z, y, k)
    gn = lp_norm(g.reshape(g.shape[0], -1), 2)  # scaled: no overflow for huge logits
    good = (gn > 0) & jnp.isfinite(gn)
    normal = jnp.where(
        good.reshape((-1,) + (1,) * (x.ndim - 1)),
        g / jnp.where(good, gn, 1).reshape((-1,) + (1,) * (x.ndim - 1)),
        0,
    )
    converged = state.converged & good
    z = jnp.where(converged.reshape((-1,) + (1,) * (x.ndim - 1)), z, x_adv)
    return BoundaryPoints(z, y, k, normal, jnp.where(good, gn, 0), converged)
