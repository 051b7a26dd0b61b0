"""DeepFool: minimal Lp perturbations by iterated linearization, for a batch of examples.

Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016; the subspace-constrained variant of Ortiz-Jimenez, Modas,
Moosavi-Dezfooli, Frossard, "Hold me tight! Influence of discriminative features on deep
network boundaries", NeurIPS 2020.

BlackJAX-style building blocks: :func:`deepfool_init` evaluates the classifier at the clean
points, :func:`deepfool_step` takes one DeepFool step for every example that is still running
(a per-example ``done`` mask), and :func:`deepfool_result` turns a state into a
:class:`MarginResult`; :func:`_deepfool_loop` runs them under one ``lax.while_loop`` (the
transformable form). The public entry points :func:`geomrobust.search.deepfool` and
:func:`geomrobust.search.deepfool_dataset` (the continuous-batching driver) live in the
driver module above, :mod:`geomrobust.search._driver`.

Each iteration costs ONE forward pass and ONE batched VJP: the pullback of the batch is
applied (vmapped) to the ``C`` cotangents ``e_k - e_y``, which gives ``w_k = ∇F_k`` of every
candidate class of every example directly. The state caches the logits and these gradients at
the current iterate, so the next step computes nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._status import STATUS_DTYPE, status_codes
from .._validation import (
    check_bounds,
    check_labels,
    check_orthonormal,
    check_positive,
    search_inputs,
)
from ..ops._norms import as_norm, dual_exponent, dual_step, lp_norm, mul_pow2, pow2_exponent

__all__ = [
    "DeepFoolInfo",
    "DeepFoolState",
    "MarginResult",
    "deepfool_init",
    "deepfool_result",
    "deepfool_step",
]


class MarginResult(NamedTuple):
    """Minimal perturbations of a batch.

    perturbation : ``(N, *s)``, ``x_adv - x`` (overshoot included, clipped to the box).
        Where ``converged`` is False it holds the last iterate (for diagnosis only).
    margin : ``(N,)``, ``||perturbation||_p`` where converged, ``+inf`` otherwise (the
        unconverged sentinel: never a finite number passed off as a margin; never NaN).
    converged : ``(N,)`` bool, the label changed (or was already wrong, or tied on the
        boundary at ``x``: margin 0).
    adv_label : ``(N,)`` int32, the label at ``x + perturbation``; ``-1`` where not converged.
    iterations : ``(N,)`` int32, DeepFool steps taken (0 for misclassified examples).
    status : ``(N,)`` int8 :class:`geomrobust.Status` (``converged == (status ==
        Status.SUCCESS)``): ``NONFINITE`` a non-finite logit or gradient row at the last
        iterate, ``MAX_STEPS`` the step budget ran out, ``NOT_FOUND`` the search ended without
        a label change (zero gradients: no boundary within reach; in a box, no crossing with
        room to spare; FMN: no adversarial point reachable).
    """

    perturbation: Array
    margin: Array
    converged: Array
    adv_label: Array
    iterations: Array
    status: Array


class DeepFoolState(NamedTuple):
    """Per-example DeepFool state (all arrays have a leading batch axis ``N``).

    x : clean points ``(N, *s)``; y : reference labels ``(N,)``;
    classes : candidate classes ``k != y``, ``(N, C)``;
    r : accumulated step before overshoot, ``(N, *s)``;
    point : current iterate ``clip(x + (1 + η) r)``, ``(N, *s)``;
    logits : ``f(point)``, ``(N, K)``; grads : ``∇F_k(point)`` for ``k`` in ``classes``,
    ``(N, C, *s)``; done, converged : ``(N,)`` bool; iterations : ``(N,)`` int32.
    """

    x: Array
    y: Array
    classes: Array
    r: Array
    point: Array
    logits: Array
    grads: Array
    done: Array
    converged: Array
    iterations: Array


class DeepFoolInfo(NamedTuple):
    """What one step did: the linearized distance to the chosen boundary ``(N,)`` (``inf``
    where no boundary was reachable) and the chosen class ``(N,)``."""

    distance: Array
    target: Array


def _others(y: Array, k: int) -> Array:
    """All classes except ``y``, in increasing order: ``(N, K - 1)``."""
    j = jnp.arange(k - 1, dtype=jnp.int32)[None, :]
    return j + (j >= y[:, None]).astype(jnp.int32)


def _select_classes(logits: Array, y: Array, candidates: int | None) -> Array:
    """Candidate classes ``(N, C)``: all ``k != y``, or the ``C`` largest clean logits other
    than ``y`` (the reference code's top-``C`` choice, with ``y`` itself not counted)."""
    k = logits.shape[-1]
    if candidates is None or candidates >= k - 1:
        return _others(y, k)
    masked = jnp.where(jax.nn.one_hot(y, k, dtype=bool), -jnp.inf, logits)
    masked = jnp.where(jnp.isnan(masked), -jnp.inf, masked)
    return jax.lax.top_k(masked, candidates)[1].astype(jnp.int32)


def _evaluate(
    logits_fn: Callable[[Array], Array],
    point: Array,
    select: Callable[[Array], tuple[Array, Array]],
) -> tuple[Array, Array, Array, Array]:
    """Logits, labels, classes and ``∇F_k = ∇f_k - ∇f_y`` at ``point``.

    One forward pass, then ``select(logits) -> (y, classes)`` (so labels and top-``C``
    candidates can come from this very forward pass), then ONE batched VJP over the ``C``
    cotangents ``e_k - e_y``. Returns ``logits (N, K), y (N,), classes (N, C),
    grads (N, C, *s)``.
    """
    logits, pullback = jax.vjp(logits_fn, point)
    out_dtype = logits.dtype
    logits = logits.astype(point.dtype)  # a model's bf16 / float64 logits, in the search dtype
    y, classes = select(logits)
    k = logits.shape[-1]
    cot = (
        jax.nn.one_hot(classes, k, dtype=out_dtype)
        - jax.nn.one_hot(y, k, dtype=out_dtype)[:, None, :]
    )
    grads = jax.vmap(lambda c: pullback(c)[0], in_axes=1, out_axes=1)(cot)
    return logits, y, classes, grads.astype(point.dtype)


def _finite_rows(*arrays: Array) -> Array:
    ok = None
    for a in arrays:
        f = jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1)
        ok = f if ok is None else ok & f
    return ok


def _as_bounds(bounds, dtype):
    if bounds is None:
        return None
    lo, hi = bounds
    return jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)


def _clip(v: Array, bounds) -> Array:
    return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])


def _init_decide(logits, y, classes, grads, x, has_y: bool):
    """The decision at the clean point: misclassified (given ``y``), or ON the boundary (a
    tie ``max_{k != y} f_k = f_y``: the true margin is 0) -> done, converged, margin 0;
    non-finite logits or gradients -> done, not converged."""
    finite = _finite_rows(logits, grads)
    del has_y  # given or predicted, y is misclassified or tied exactly when the gap is >= 0
    wrong = _top_gap(logits, y) >= 0
    done = wrong | ~finite
    converged = wrong & finite
    return DeepFoolState(
        x=x,
        y=y,
        classes=classes,
        r=jnp.zeros_like(x),
        point=x,
        logits=logits,
        grads=grads,
        done=done,
        converged=converged,
        iterations=jnp.zeros(y.shape, jnp.int32),
    )


def deepfool_init(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    candidates: int | None = None,
) -> DeepFoolState:
    """Evaluate logits and candidate gradients at the clean batch ``x`` ``(N, *s)``.

    ``y=None`` takes the predicted labels. Examples already misclassified (``argmax f(x) !=
    y``) or tied on the boundary (``max_{k != y} f_k(x) = f_y(x)``) start done and converged
    (margin 0); non-finite ones start done, not converged.
    """
    has_y = y is not None

    def select(logits):
        yy = jnp.asarray(y, jnp.int32) if has_y else jnp.argmax(logits, -1).astype(jnp.int32)
        return yy, _select_classes(logits, yy, candidates)

    logits, yy, classes, grads = _evaluate(logits_fn, x, select)
    return _init_decide(logits, yy, classes, grads, x, has_y)


def _propose(
    state: DeepFoolState, *, q: float, overshoot, subspace, bounds
) -> tuple[Array, Array, DeepFoolInfo]:
    """The next accumulated step ``r`` and iterate, from the cached logits and gradients."""
    n = state.x.shape[0]
    idx = jnp.arange(n)[:, None]
    F = state.logits[idx, state.classes] - state.logits[idx, state.y[:, None]]  # (N, C)
    w = state.grads.reshape(n, state.grads.shape[1], -1)  # (N, C, D)
    F, w = _normalize(F, w)
    if subspace is not None:
        w = (w @ subspace) @ subspace.T  # P_S w = S Sᵀ w
    if bounds is not None:  # active set: freeze coordinates the step would push out of the box
        pt = state.point.reshape(n, 1, -1)
        lo = jnp.broadcast_to(bounds[0], state.x.shape).reshape(n, 1, -1)
        hi = jnp.broadcast_to(bounds[1], state.x.shape).reshape(n, 1, -1)
        w = jnp.where(((pt >= hi) & (w > 0)) | ((pt <= lo) & (w < 0)), 0, w)
    wn = lp_norm(w, q)  # (N, C) dual norms
    ok = (wn > 0) & jnp.isfinite(wn) & jnp.isfinite(F)
    dist = jnp.where(ok, jnp.abs(F) / jnp.where(ok, wn, 1), jnp.inf)
    target = jnp.argmin(dist, axis=-1)
    rows = jnp.arange(n)
    step = dual_step(F[rows, target], w[rows, target], q)
    reachable = jnp.isfinite(dist[rows, target])
    step = jnp.where(reachable[:, None], step, 0).reshape(state.x.shape)
    r = state.r + step
    point = _clip(state.x + (1 + overshoot) * r, bounds)
    if bounds is not None:  # keep r consistent with the (clipped) iterate
        r = (point - state.x) / (1 + overshoot)
    info = DeepFoolInfo(dist[rows, target], state.classes[rows, target])
    return r, point, info


def _normalize(F: Array, w: Array) -> tuple[Array, Array]:
    """``(F, w) / 2^e`` per candidate, ``2^e ~ max_j |w_j|``: the step and the distance are
    invariant (both are ratios of ``F`` to ``w``), and norms of ``w`` neither overflow nor
    underflow for logits scaled by ``1e±20`` in float32. A power of two scales exactly, so
    unscaled classifiers give bit-identical steps; rows with zero or non-finite ``w`` are
    left as they are (the caller flags them)."""
    e = pow2_exponent(jnp.max(jnp.abs(w), axis=-1))  # (N, C)
    return jnp.ldexp(F, -e), mul_pow2(w, -e[..., None])


def _step_decide(state: DeepFoolState, r, point, logits, grads, info: DeepFoolInfo, active):
    """Update the running examples after evaluating the new iterate."""
    finite = _finite_rows(logits, grads)
    flipped = (jnp.argmax(logits, axis=-1) != state.y) & finite
    stuck = ~jnp.isfinite(info.distance)  # zero gradients: no boundary within reach
    done = flipped | ~finite | stuck

    def upd(new, old):
        m = active.reshape(active.shape + (1,) * (new.ndim - 1))
        return jnp.where(m, new, old)

    return state._replace(
        r=upd(r, state.r),
        point=upd(point, state.point),
        logits=upd(logits, state.logits),
        grads=upd(grads, state.grads),
        done=upd(done, state.done),
        converged=upd(flipped, state.converged),
        iterations=state.iterations + active.astype(jnp.int32),
    )


@renamed(max_iter="steps")
def deepfool_step(
    logits_fn: Callable[[Array], Array],
    state: DeepFoolState,
    *,
    norm=2,
    overshoot=0.02,
    steps: int = 50,
    subspace: Array | None = None,
    bounds=None,
) -> tuple[DeepFoolState, DeepFoolInfo]:
    """One DeepFool step for every example not yet done (and under ``steps`` steps).

    From the cached ``f`` and ``w_k = ∇F_k`` at ``x_i``: ``l = argmin_k |F_k| / ||w_k||_q``,
    ``r ← r + |F_l| / ||w_l||_q^q |w_l|^(q-1) sign(w_l)``, ``x_{i+1} = clip(x + (1+η) r)``;
    then ONE forward + batched VJP at ``x_{i+1}``. Finished examples are left unchanged.
    """
    q = dual_exponent(as_norm(norm))
    dtype = state.x.dtype
    bounds = _as_bounds(bounds, dtype)
    subspace = None if subspace is None else jnp.asarray(subspace, dtype)
    active = ~state.done & (state.iterations < steps)
    r, point, info = _propose(state, q=q, overshoot=overshoot, subspace=subspace, bounds=bounds)

    def select(_):
        return state.y, state.classes

    logits, _, _, grads = _evaluate(logits_fn, point, select)
    return _step_decide(state, r, point, logits, grads, info, active), info


def deepfool_result(state: DeepFoolState, norm=2) -> MarginResult:
    """The :class:`MarginResult` of a (finished or interrupted) state."""
    p = as_norm(norm)
    conv = state.converged
    pert = state.point - state.x
    pert = jnp.where(jnp.isfinite(pert), pert, 0)
    flat = pert.reshape(pert.shape[0], -1)
    margin = jnp.where(conv, lp_norm(flat, p), jnp.asarray(jnp.inf, pert.dtype))
    adv = jnp.where(conv, _adv_label(state.logits, state.y), -1).astype(jnp.int32)
    # the state keeps the logits and gradients that ended a row (a non-finite evaluation
    # stops it), and a row still running was cut by the step budget
    status = status_codes(conv, ~_finite_rows(state.logits, state.grads), ~state.done)
    return MarginResult(pert, margin, conv, adv, state.iterations, status)


def _adv_label(logits: Array, y: Array) -> Array:
    """``argmax f`` where it differs from ``y``, else (a tie on the boundary) the best class
    ``k != y``."""
    lab = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    masked = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jnp.where(lab != y, lab, jnp.argmax(masked, axis=-1).astype(jnp.int32))


def _top_gap(logits: Array, y: Array) -> Array:
    """``max_{k != y} f_k - f_y`` per row (> 0: adversarial)."""
    masked = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    idx = jnp.arange(logits.shape[0])
    return jnp.max(masked, axis=-1) - logits[idx, y]


def _box_finalize(logits_fn, x, y, res: MarginResult, overshoot, bounds, p) -> MarginResult:
    """Make every converged point of a box-constrained run cross with room to spare.

    Inside the box the overshoot acts on the last step only (the iterate is clipped and
    ``r`` reset), so a point can sit within rounding of the boundary and flip back when
    evaluated in another batch or precision. Each converged point is re-evaluated (one
    forward pass, in a batch composition of its own); where its adversarial logit gap
    ``max_{k != y} f_k - f_y`` is below ``64 eps (u + max |f|)`` (float32: 7.6e-6 of the logit
    scale; batch-composition rounding is ~1e-7; ``u = min(1, max |f(x)|)``, so the test is
    invariant to the logits' scale below 1) the total perturbation is extended,
    ``r' = clip(x + (1 + η) r) - x``, and re-tested: ``r'`` is returned where it crosses
    with room, and the example is reported not converged where no such crossing was found.
    Points that already cross with room, and examples misclassified at the start (margin 0),
    are returned unchanged. ``y`` None: the labels predicted at ``x``.
    """
    eta = jnp.asarray(overshoot, x.dtype)
    ext = _clip(x + (1 + eta) * res.perturbation, bounds) - x
    clean = logits_fn(x).astype(x.dtype)
    if y is None:
        y = jnp.argmax(clean, -1).astype(jnp.int32)
    y = y.astype(jnp.int32)
    lo = logits_fn(x + res.perturbation).astype(x.dtype)
    le = logits_fn(x + ext).astype(x.dtype)
    room = 64 * jnp.finfo(x.dtype).eps  # far above rounding noise, far below an overshoot
    # the unit of the floor: 1, or the clean logits' scale where that is smaller (logits
    # scaled by 1e-20 must not need a gap of 1e-6 to count as crossing)
    unit = jnp.minimum(1, jnp.max(jnp.abs(clean), axis=-1))
    thr_o = room * (unit + jnp.max(jnp.abs(lo), axis=-1))
    thr_e = room * (unit + jnp.max(jnp.abs(le), axis=-1))
    moved = res.converged & (res.margin > 0)
    ok_o = moved & (_top_gap(lo, y) > thr_o)
    ok_e = moved & ~ok_o & (_top_gap(le, y) > thr_e)
    rows = ok_e.reshape(ok_e.shape + (1,) * (x.ndim - 1))
    pert = jnp.where(rows, ext, res.perturbation)
    conv = jnp.where(moved, ok_o | ok_e, res.converged)
    flat = pert.reshape(pert.shape[0], -1)
    margin = jnp.where(ok_e, lp_norm(flat, p), res.margin)
    margin = jnp.where(conv, margin, jnp.inf)
    lab_o = jnp.argmax(lo, -1).astype(jnp.int32)
    lab_e = jnp.argmax(le, -1).astype(jnp.int32)
    adv = jnp.where(ok_e, lab_e, jnp.where(ok_o, lab_o, jnp.where(moved, -1, res.adv_label)))
    # a point that crosses with room neither as found nor extended: NOT_FOUND (NONFINITE
    # where either re-evaluation is not finite)
    failed = status_codes(False, ~(_finite_rows(lo) & _finite_rows(le)))
    status = jnp.where(moved & ~conv, failed, res.status).astype(STATUS_DTYPE)
    return MarginResult(pert, margin.astype(x.dtype), conv, adv.astype(jnp.int32), res.iterations,
                        status)  # fmt: skip


def _validate(logits_fn, x, y, norm, overshoot, steps, candidates, subspace, bounds):
    """Eager argument checks shared by the DeepFool drivers (value checks are no-ops on
    tracers); returns ``x`` in the search dtype, see
    :func:`geomrobust._validation.search_inputs`."""
    p = as_norm(norm)
    check_positive(overshoot, "overshoot", allow_zero=True)
    if not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if bounds is not None:
        if not isinstance(bounds, tuple | list) or len(bounds) != 2:
            raise ValueError(f"bounds must be a pair (lo, hi), got {bounds!r}")
        check_bounds(bounds, "bounds")
    x, k, _ = search_inputs(logits_fn, x, "x", bounds=bounds)
    if y is not None:
        check_labels(y, k, x.shape[0], "y")
    if candidates is not None and (
        not isinstance(candidates, int | np.integer) or not 1 <= candidates
    ):
        raise ValueError(f"candidates must be a positive integer or None, got {candidates!r}")
    if subspace is not None:
        d = math.prod(x.shape[1:])
        check_orthonormal(subspace, "subspace")
        if subspace.shape[0] != d:
            raise ValueError(
                f"subspace must be a (D, s) basis with D={d} (the input size), "
                f"got shape {tuple(subspace.shape)}"
            )
        if p != 2.0:
            raise ValueError(f"subspace DeepFool is defined for norm=2 only, got norm={norm!r}")
    return x


def _deepfool_loop(logits_fn, x, y, norm, overshoot, steps, candidates, subspace, bounds):
    """The transformable driver of :func:`deepfool`: ``init``, then ``step`` under one
    ``lax.while_loop`` until every example is done, then ``result``; no eager checks (for
    callers that checked once up front and pass traced settings, e.g. traced ``bounds``)."""
    state = deepfool_init(logits_fn, x, y, candidates=candidates)

    def cond(s):
        return jnp.any(~s.done & (s.iterations < steps))

    def body(s):
        return deepfool_step(
            logits_fn,
            s,
            norm=norm,
            overshoot=overshoot,
            steps=steps,
            subspace=subspace,
            bounds=bounds,
        )[0]

    state = jax.lax.while_loop(cond, body, state)
    res = deepfool_result(state, norm)
    if bounds is not None:
        b = _as_bounds(bounds, x.dtype)
        res = _box_finalize(logits_fn, x, y, res, overshoot, b, as_norm(norm))
    return res
