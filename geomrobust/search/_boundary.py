"""Refinement of adversarial points onto the decision boundary, by bisection on a segment.

DeepFool (or any attack) returns ``x_adv`` just past the boundary. For curvature work the point
must lie ON the boundary ``{F_k = 0}``, ``F_k = f_k - f_y``, with ``k`` the label at ``x_adv``
(docs/methods.md). Bisection on ``t`` in ``[0, 1]`` along ``x + t (x_adv - x)`` keeps the
bracket ``F_k(lower) < 0 < F_k(upper)``; the state follows Optimistix's ``Bisection``
(``init`` / ``step`` / ``terminate``, a status instead of an exception under ``jit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._status import status_codes
from .._validation import check_batch, check_labels, search_inputs
from ..engine import CHUNK_SIZE
from ..models import as_classifier
from ..ops import batch_logit_difference_grads
from ..ops._norms import lp_norm
from ._loop import Method, drive

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
    status : ``(N,)`` int8 :class:`geomrobust.Status` (``converged == (status ==
        Status.SUCCESS)``): ``NONFINITE`` a non-finite logit gap at ``x``, ``x_adv`` or a
        midpoint, or a non-finite gradient at ``z``; ``MAX_STEPS`` the bisection budget ran
        out; ``NOT_FOUND`` no valid bracket (``x_adv`` not of another class than ``y``, or
        ``F_k(x) >= 0``), or a zero gradient at ``z`` (no normal).
    """

    z: Array
    y: Array
    k: Array
    normal: Array
    grad_norm: Array
    converged: Array
    status: Array


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


@renamed(max_iter="steps")
def refine_boundary(
    logits_fn: Callable[[Array], Array],
    x: Array,
    x_adv: Array,
    y: Array,
    *,
    tol: float = 1e-6,
    steps: int = 60,
    loop: str = "auto",
    chunk_size: int | None = CHUNK_SIZE,
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
    steps : bisection steps at most (60 halvings reach float64 resolution; formerly
        ``max_iter``).
    loop : ``"host"`` (a host loop of jitted bisection steps), ``"device"`` (one
        ``lax.while_loop``) or ``"auto"`` (host on the CPU backend): the kernels
        :func:`bisection_init` / :func:`bisection_step` through the search driver
        (:mod:`geomrobust.search._loop`).
    chunk_size, devices, progress : the executor's options (one compilation per
        architecture and chunk shape).

    Returns
    -------
    BoundaryPoints
        ``z``, ``y``, ``k``, unit ``normal`` ``∇F_k(z)/||∇F_k(z)||``, ``grad_norm``,
        ``converged`` (False: no valid bracket (``k == y``, ``F_k(x) >= 0``), non-finite
        values, ``steps`` reached, or a zero gradient at ``z``), and ``status`` saying which:
        ``NOT_FOUND`` (no bracket, zero gradient), ``NONFINITE``, ``MAX_STEPS``; ``SUCCESS``
        where converged.
    """
    check_batch(x_adv, "x_adv")
    if tuple(x_adv.shape) != tuple(x.shape):
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {x_adv.shape}")
    if not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    clf = as_classifier(logits_fn)
    x, k_classes, _ = search_inputs(clf, jnp.asarray(x), "x")
    x_adv = jnp.asarray(x_adv, x.dtype)
    y = jnp.asarray(y)
    check_labels(y, k_classes, x.shape[0], "y")
    y = y.astype(jnp.int32)
    out = drive(REFINE, clf, (jnp.asarray(tol, x.dtype),), (x, x_adv, y), int(steps),
                loop=loop, chunk_size=chunk_size, devices=devices, progress=progress)  # fmt: skip
    return BoundaryPoints(*out)


class _RefineState(NamedTuple):
    """:func:`refine_boundary`'s state: the segment ``x`` -> ``x_adv``, labels ``y``, the
    class ``k`` at ``x_adv`` and the bisection state."""

    x: Array
    x_adv: Array
    y: Array
    k: Array
    bisection: BisectionState


def _F_at(clf, st: _RefineState):
    d = st.x_adv - st.x

    def F_at(t):
        return _gap(clf(_along(st.x, d, t)).astype(st.x.dtype), st.y, st.k)

    return F_at


def _r_init(clf, settings, batch, max_steps):
    x, x_adv, y = batch
    logits_adv = clf(x_adv).astype(x.dtype)
    k = jnp.argmax(logits_adv, axis=-1).astype(jnp.int32)
    F_lo = _gap(clf(x).astype(x.dtype), y, k)
    F_hi = _gap(logits_adv, y, k)
    valid = (k != y) & jnp.isfinite(F_lo) & jnp.isfinite(F_hi)
    return _RefineState(x, x_adv, y, k, bisection_init(F_lo, F_hi, valid))


def _r_step(clf, settings, st: _RefineState, max_steps):
    (tol,) = settings
    new, info = bisection_step(_F_at(clf, st), st.bisection, tol=tol)
    run = st.bisection.steps < max_steps  # rows out of budget stay as they are
    bis = jax.tree.map(lambda a, b: jnp.where(run, a, b), new, st.bisection)
    return st._replace(bisection=bis), info


def _r_done(st: _RefineState, max_steps):
    return st.bisection.done | (st.bisection.steps >= max_steps)


def _r_result(clf, settings, st: _RefineState, max_steps):
    """The boundary point, its unit normal (one forward + batched VJP) and convergence."""
    x, y, k, x_adv = st.x, st.y, st.k, st.x_adv
    z = _along(x, x_adv - x, st.bisection.t)
    _, g = batch_logit_difference_grads(clf, z, y, k)
    gn = lp_norm(g.reshape(g.shape[0], -1), 2)  # scaled: no overflow for huge logits
    good = (gn > 0) & jnp.isfinite(gn)
    shape = (-1,) + (1,) * (x.ndim - 1)
    normal = jnp.where(good.reshape(shape), g / jnp.where(good, gn, 1).reshape(shape), 0)
    converged = st.bisection.converged & good
    z = jnp.where(converged.reshape(shape), z, x_adv)
    bis = st.bisection
    # the last F evaluated ends a row when it is not finite; a non-finite F at x makes the
    # bracket's scale max(|F(x)|, |F(x_adv)|) non-finite (that row never starts)
    nonfinite = ~jnp.isfinite(bis.F) | ~jnp.isfinite(bis.scale) | ~jnp.isfinite(gn)
    status = status_codes(converged, nonfinite, ~bis.done)
    return BoundaryPoints(z, y, k, normal, jnp.where(good, gn, 0), converged, status)


REFINE = Method("refine_boundary", _r_init, _r_step, _r_done, _r_result)
"""Bisection onto the boundary as a method of the search driver (``static``: the step
budget)."""
