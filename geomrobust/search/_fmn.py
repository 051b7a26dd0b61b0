"""FMN: fast minimum-norm adversarial perturbations (L2 and Linf), for a batch of examples.

Pintor, Roli, Brendel, Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Constraints", NeurIPS 2021.

Like DeepFool (:mod:`geomrobust.search._deepfool`): :func:`fmn_init` evaluates the classifier
at the clean points, :func:`fmn_step` takes one FMN step for every example still running (a
per-example ``done`` mask), :func:`fmn_result` turns a state into a
:class:`~geomrobust.search.MarginResult`; :func:`fmn` runs them through the search driver
(:func:`geomrobust.search._loop.drive`: a host loop of jitted steps on the CPU, one
``lax.while_loop`` per chunk elsewhere and under ``jit``). Each step costs ONE forward
pass and ONE VJP (the gradient of the logit margin). The helpers shared with the other
minimal-norm searches (the margin loss, per-row projections) live here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._status import status_codes
from .._validation import check_bounds, check_labels, check_positive, search_inputs
from ..engine import CHUNK_SIZE
from ..models import as_classifier
from ..ops._norms import as_norm, dual_exponent, lp_norm
from ._deepfool import MarginResult
from ._loop import Method, drive

__all__ = ["FMNInfo", "FMNState", "fmn", "fmn_init", "fmn_result", "fmn_step"]


# ---------------------------------------------------------------- helpers shared by searches
def rows(mask: Array, nd: int) -> Array:
    """``(N,)`` -> ``(N, 1, ..., 1)`` with ``nd`` axes, to broadcast a per-example value."""
    return mask.reshape(mask.shape + (1,) * (nd - 1))


def flat_norm(v: Array, p: float) -> Array:
    """``||v_i||_p`` of each row of ``v`` ``(N, *s)`` -> ``(N,)``."""
    return lp_norm(v.reshape(v.shape[0], -1), p)


def finite_rows(*arrays: Array) -> Array:
    ok = None
    for a in arrays:
        f = jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1)
        ok = f if ok is None else ok & f
    return ok


def best_other(logits: Array, y: Array) -> Array:
    """``argmax_{j != y} f_j`` per row, ``(N,)`` int32 (NaN logits never win)."""
    k = logits.shape[-1]
    masked = jnp.where(jax.nn.one_hot(y, k, dtype=bool), -jnp.inf, logits)
    masked = jnp.where(jnp.isnan(masked), -jnp.inf, masked)
    return jnp.argmax(masked, axis=-1).astype(jnp.int32)


def crosses(logits: Array, y: Array) -> Array:
    """``max_{j != y} f_j - f_y > 64 eps (1 + max |f|)`` per row: adversarial with room to
    spare, so that the label stays changed when the point is evaluated again in another
    batch composition, program or precision (the criterion of DeepFool's box finalization).
    A search that converges onto the boundary (FMN, C&W) would otherwise keep points that sit
    within rounding of it."""
    idx = jnp.arange(logits.shape[0])
    gap = logits[idx, best_other(logits, y)] - logits[idx, y]
    room = 64 * jnp.finfo(logits.dtype).eps * (1 + jnp.max(jnp.abs(logits), axis=-1))
    return (gap > room) & finite_rows(logits)


def margin_and_grad(logits_fn: Callable, point: Array, y: Array):
    """The logit margin ``m(z) = f_y(z) - max_{j != y} f_j(z)`` (> 0: label ``y`` kept, < 0:
    adversarial) and its gradient at ``point``: one forward pass and one VJP.

    Returns ``logits (N, K), m (N,), grad (N, *s)``.
    """
    logits, pullback = jax.vjp(logits_fn, point)
    j = best_other(logits, y)
    k = logits.shape[-1]
    rows_ = jnp.arange(logits.shape[0])
    m = logits[rows_, y] - logits[rows_, j]
    cot = jax.nn.one_hot(y, k, dtype=logits.dtype) - jax.nn.one_hot(j, k, dtype=logits.dtype)
    return logits, m, pullback(cot)[0]


def project_rows(delta: Array, radius: Array, p: float) -> Array:
    """Project each row of ``delta`` ``(N, *s)`` onto its Lp ball of radius ``radius`` ``(N,)``
    (``inf``: no constraint): clipping (Linf), radial scaling (L2)."""
    r = rows(radius, delta.ndim)
    if math.isinf(p):
        return jnp.clip(delta, -r, r)
    n = rows(flat_norm(delta, p), delta.ndim)
    scale = jnp.where(n > r, r / jnp.where(n > 0, n, 1), 1)
    return delta * scale


def unit_l2(g: Array) -> Array:
    """``g / ||g||_2`` per row (zero rows stay zero)."""
    n = rows(flat_norm(g, 2.0), g.ndim)
    return g / jnp.where(n > 0, n, 1)


def bounds_pair(bounds, dtype):
    """``(lo, hi)`` arrays of ``dtype`` (zeros when ``bounds`` is None: unused)."""
    if bounds is None:
        return jnp.zeros((), dtype), jnp.zeros((), dtype)
    return jnp.asarray(bounds[0], dtype), jnp.asarray(bounds[1], dtype)


def check_common(logits_fn, x, y, norm, bounds, norms=(2.0, math.inf)):
    """Eager checks shared by the minimal-norm searches and the attacks of this package's
    second round: the input rule of every search
    (:func:`geomrobust._validation.search_inputs`: finite batch, the dtype rule, inputs
    inside ``bounds``); returns ``(p, x)`` with ``x`` in the search's dtype."""
    p = as_norm(norm)
    if p not in norms:
        names = " or ".join("inf" if math.isinf(n) else str(int(n)) for n in norms)
        raise ValueError(f"norm must be {names} for this search, got {norm!r}")
    check_bounds(bounds, "bounds")
    x, k, _ = search_inputs(logits_fn, x, "x", bounds=bounds)
    if y is not None:
        check_labels(y, k, x.shape[0], "y")
    return p, x


def check_steps(value, name: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def best_found_result(state, fallback, out_of_budget) -> MarginResult:
    """The :class:`MarginResult` of a search that keeps the smallest adversarial perturbation
    it met (``state.best``, ``best_norm``, ``best_label``: FMN, C&W): where none was found,
    the perturbation is ``fallback`` (non-finite entries zeroed), ``margin = inf`` and
    ``adv_label = -1``; ``status`` from :func:`geomrobust._status.status_codes` with
    ``state.finite`` and ``out_of_budget`` (where the search still ran, or every row)."""
    conv = state.converged & jnp.isfinite(state.best_norm)
    pert = jnp.where(rows(conv, state.x.ndim), state.best, fallback)
    pert = jnp.where(jnp.isfinite(pert), pert, 0)
    margin = jnp.where(conv, state.best_norm, jnp.inf).astype(state.x.dtype)
    adv = jnp.where(conv, state.best_label, -1).astype(jnp.int32)
    status = status_codes(conv, ~state.finite, out_of_budget)
    return MarginResult(pert, margin, conv, adv, state.iterations, status)


def labels_or_predicted(logits_fn, x, y):
    if y is None:
        return jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
    return jnp.asarray(y).astype(jnp.int32)


# ------------------------------------------------------------------------------------- FMN
class FMNState(NamedTuple):
    """Per-example FMN state (leading batch axis ``N``).

    x : clean points ``(N, *s)``; y : labels ``(N,)``; delta : current perturbation
    ``(N, *s)``; grad : ``∇m`` at ``x + delta`` ``(N, *s)``; best : smallest adversarial
    perturbation so far ``(N, *s)`` (zeros until one is found); best_norm : its norm ``(N,)``
    (``inf`` until found); best_label : the label at ``x + best`` ``(N,)``; epsilon : the
    adaptive norm constraint ``(N,)``; worst : the largest norm the box allows ``(N,)``;
    found : an adversarial iterate was met ``(N,)`` (it drives ``epsilon``); converged : a
    best perturbation is held (adversarial with room, :func:`crosses`) ``(N,)``; done ``(N,)``;
    iterations : ``(N,)`` int32; finite : the last evaluation's logits and gradient were
    finite ``(N,)`` (False ends the row: its status is ``NONFINITE``).
    """

    x: Array
    y: Array
    delta: Array
    grad: Array
    best: Array
    best_norm: Array
    best_label: Array
    epsilon: Array
    worst: Array
    found: Array
    done: Array
    converged: Array
    iterations: Array
    finite: Array


class FMNInfo(NamedTuple):
    """Per-step diagnostics of :func:`fmn_step`: the logit margin ``(N,)`` at the new
    iterate (``> 0``: label kept) and the new constraint ``epsilon`` ``(N,)``."""

    margin: Array
    epsilon: Array


def _worst_norm(x, bounds, p):
    if bounds is None:
        return jnp.full((x.shape[0],), jnp.inf, x.dtype)
    lo, hi = bounds
    return flat_norm(jnp.maximum(x - lo, hi - x), p).astype(x.dtype)


def _linear_distance(m, g, q):
    gq = flat_norm(g, q)
    ok = (gq > 0) & jnp.isfinite(gq)
    return jnp.where(ok, jnp.abs(m) / jnp.where(ok, gq, 1), jnp.inf)


def fmn_init(
    logits_fn: Callable[[Array], Array], x: Array, y: Array | None = None, *, norm=2,
    bounds=None,
) -> FMNState:  # fmt: skip
    """Evaluate the margin and its gradient at the clean batch ``x`` ``(N, *s)``.

    ``y=None`` takes the predicted labels. Misclassified examples start done with margin 0;
    non-finite ones start done, not converged. ``epsilon`` starts at the linearized distance
    ``|m| / ||∇m||_q`` (capped by the box's largest norm).
    """
    p = as_norm(norm)
    q = dual_exponent(p)
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    yy = labels_or_predicted(logits_fn, x, y) if y is None else jnp.asarray(y, jnp.int32)
    logits, m, g = margin_and_grad(logits_fn, x, yy)
    finite = finite_rows(logits, g)
    adv = (jnp.argmax(logits, -1) != yy) & finite
    worst = _worst_norm(x, bounds, p)
    eps = jnp.minimum(jnp.where(adv, 0, _linear_distance(m, g, q)), worst).astype(x.dtype)
    return FMNState(
        x=x,
        y=yy,
        delta=jnp.zeros_like(x),
        grad=jnp.where(rows(finite, x.ndim), g, 0),
        best=jnp.zeros_like(x),
        best_norm=jnp.where(adv, 0, jnp.inf).astype(x.dtype),
        best_label=jnp.where(adv, jnp.argmax(logits, -1), -1).astype(jnp.int32),
        epsilon=eps,
        worst=worst,
        found=adv,
        done=adv | ~finite,
        converged=adv,
        iterations=jnp.zeros(yy.shape, jnp.int32),
        finite=finite,
    )


def _cosine(k, steps, start, end):
    """Cosine annealing from ``start`` (step 0) to ``end`` (step ``steps``)."""
    c = (1 + jnp.cos(jnp.pi * k / steps)) / 2
    return end + (start - end) * c


def fmn_step(
    logits_fn: Callable[[Array], Array],
    state: FMNState,
    *,
    norm=2,
    steps: int = 100,
    alpha_max=1.0,
    alpha_min=None,
    gamma=0.05,
    gamma_min=0.001,
    bounds=None,
) -> tuple[FMNState, FMNInfo]:
    """One FMN step for every example not done (and under ``steps`` steps).

    At step ``k`` (cosine-annealed step size ``α_k`` from ``alpha_max`` to ``alpha_min``,
    default ``alpha_max / 100``, and ``γ_k`` from ``gamma`` to ``gamma_min``):

        δ' = clip_box(Π_{||·||_p <= ε}(δ - α_k ∇m / ||∇m||_2)),

    then ONE forward + VJP at ``x + δ'``: ``δ'`` replaces the best perturbation where it is
    adversarial and not larger, and the constraint adapts,

        ε ← min(ε (1 - γ_k), ||δ_best||)     if x + δ' is adversarial,
        ε ← ε (1 + γ_k)                      else, if an adversarial point was ever found,
        ε ← (||δ'|| + |m| / ||∇m||_q)(1 + γ_k)   else (the linearized distance to the boundary),

    capped by the largest norm the box allows. Examples that are done are unchanged. The
    factor ``(1 + γ_k)`` of the last case is not in the paper's algorithm: without it, on a
    locally affine boundary the jump lands exactly on the boundary, where the label test is
    decided by rounding, and can stay there for every step (docs/conventions.md).
    """
    p = as_norm(norm)
    q = dual_exponent(p)
    dtype = state.x.dtype
    bounds = None if bounds is None else bounds_pair(bounds, dtype)
    active = ~state.done & (state.iterations < steps)
    k = state.iterations.astype(dtype)
    a_max = jnp.asarray(alpha_max, dtype)
    a_min = a_max / 100 if alpha_min is None else jnp.asarray(alpha_min, dtype)
    alpha = _cosine(k, steps, a_max, a_min)
    gam = _cosine(k, steps, jnp.asarray(gamma, dtype), jnp.asarray(gamma_min, dtype))

    delta = state.delta - rows(alpha, state.x.ndim) * unit_l2(state.grad)
    delta = project_rows(delta, state.epsilon, p)
    if bounds is not None:
        delta = jnp.clip(state.x + delta, bounds[0], bounds[1]) - state.x
    logits, m, g = margin_and_grad(logits_fn, state.x + delta, state.y)
    finite = finite_rows(logits, g)
    label = jnp.argmax(logits, -1).astype(jnp.int32)
    adv = (label != state.y) & finite
    n = flat_norm(delta, p)
    better = crosses(logits, state.y) & finite & (n <= state.best_norm)
    best_norm = jnp.where(better, n, state.best_norm)
    found = state.found | adv
    eps = jnp.where(
        adv,
        jnp.minimum(state.epsilon * (1 - gam), best_norm),
        jnp.where(found, state.epsilon * (1 + gam), (n + _linear_distance(m, g, q)) * (1 + gam)),
    )
    eps = jnp.minimum(eps, state.worst)
    stuck = ~found & ~jnp.isfinite(eps)  # zero gradient, no box: nowhere to go
    new = state._replace(
        delta=delta,
        grad=jnp.where(rows(finite, g.ndim), g, 0),
        best=jnp.where(rows(better, delta.ndim), delta, state.best),
        best_norm=best_norm,
        best_label=jnp.where(better, label, state.best_label),
        epsilon=eps.astype(dtype),
        found=found,
        done=~finite | stuck,
        converged=jnp.isfinite(best_norm),
        finite=finite,
    )

    def upd(a, b):
        return jnp.where(rows(active, a.ndim), a, b)

    out = jax.tree.map(upd, new, state)
    out = out._replace(iterations=state.iterations + active.astype(jnp.int32))
    return out, FMNInfo(margin=m, epsilon=out.epsilon)


def fmn_result(state: FMNState, norm=2) -> MarginResult:
    """The :class:`MarginResult` of an FMN state: the smallest adversarial perturbation found
    (``margin = ||best||_p``; ``inf`` and ``adv_label = -1`` where none was found)."""
    # ended by a non-finite evaluation: NONFINITE; by a zero gradient with no box (nowhere
    # to go): NOT_FOUND; still running: the step budget ran out (MAX_STEPS)
    return best_found_result(state, state.delta, ~state.done)


class _Static(NamedTuple):
    p: float
    steps: int
    has_y: bool
    has_bounds: bool


def _m_init(clf, settings, batch, st: _Static):
    bounds = (settings[4], settings[5]) if st.has_bounds else None
    y = batch[1] if st.has_y else None
    return fmn_init(clf, batch[0], y, norm=st.p, bounds=bounds)


def _m_step(clf, settings, state, st: _Static):
    a_max, a_min, gamma, gamma_min, lo, hi = settings
    return fmn_step(clf, state, norm=st.p, steps=st.steps, alpha_max=a_max, alpha_min=a_min,
                    gamma=gamma, gamma_min=gamma_min,
                    bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _m_done(state, st: _Static):
    return state.done | (state.iterations >= st.steps)


def _m_result(clf, settings, state, st: _Static):
    return fmn_result(state, st.p)


FMN = Method("fmn", _m_init, _m_step, _m_done, _m_result)
"""FMN as a method of the search driver (:func:`geomrobust.search._loop.drive`)."""


def _check_fmn_settings(alpha_max, alpha_min, gamma, gamma_min) -> None:
    """FMN's step sizes ``alpha_max > 0``, ``alpha_min >= 0``, and radius factors
    ``gamma`` in ``(0, 1)``, ``gamma_min`` in ``[0, 1)`` (the radius is scaled by
    ``1 ± gamma``), checked before anything is compiled."""
    if alpha_max is not None:
        check_positive(alpha_max, "alpha_max")
    if alpha_min is not None:
        check_positive(alpha_min, "alpha_min", allow_zero=True)
    for name, g, interval in (("gamma", gamma, "(0, 1)"), ("gamma_min", gamma_min, "[0, 1)")):
        check_positive(g, name, allow_zero=name == "gamma_min")
        if not float(g) < 1:
            raise ValueError(
                f"{name} must lie in {interval} (the radius is scaled by 1 +- {name}), got {g!r}"
            )


def fmn(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    norm=2,
    steps: int = 100,
    alpha_max: float | None = None,
    alpha_min: float | None = None,
    gamma: float = 0.05,
    gamma_min: float = 0.001,
    bounds: tuple | None = None,
    loop: str = "auto",
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MarginResult:
    """Minimal L2 / Linf adversarial perturbations by FMN (Pintor et al., NeurIPS 2021).

    Gradient descent on the logit margin ``m = f_y - max_{j != y} f_j`` with L2-normalized
    steps, inside an Lp ball of adaptive radius ``ε`` around ``x`` (and the box): ``ε`` shrinks
    by ``(1 - γ)`` while the iterate is adversarial, grows by ``(1 + γ)`` while it is not
    (once an adversarial point was found), and before that jumps to ``||δ|| + |m| /
    ||∇m||_q``, the linearized distance to the boundary (the step rule: :func:`fmn_step`).
    Step size and ``γ`` are cosine-annealed over ``steps``. The smallest adversarial
    perturbation met is returned. Unlike DeepFool there is no overshoot: the returned point
    is adversarial (its label was tested) and its norm is an upper bound on the distance to
    the boundary.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)`` (a function, a
        :class:`geomrobust.Classifier`, an NNX or Equinox module).
    x : ``(N, *s)`` floating; y : ``(N,)`` labels or None (the predicted labels).
    norm : 2 or ``inf``.
    steps : FMN steps per example (the authors' default 100); each costs one forward pass
        and one VJP.
    alpha_max, alpha_min : the step size's cosine annealing, in input units (defaults: 1.0,
        the authors' value, for both norms, and ``alpha_min = alpha_max / 100``).
    gamma, gamma_min : the constraint's update factor, annealed from ``gamma`` to
        ``gamma_min`` (the authors' 0.05 and 0.001).
    bounds : ``(lo, hi)`` box of valid inputs, or None.
    loop : ``"host"`` (a host loop of jitted steps), ``"device"`` (one ``lax.while_loop``)
        or ``"auto"`` (host on the CPU backend): the same per-example arithmetic
        (:mod:`geomrobust.search._loop`, docs/performance.md).
    chunk_size, devices, progress : the executor's options (concrete inputs only).

    Returns
    -------
    MarginResult
        ``margin`` ``inf`` where no adversarial point was found; misclassified examples have
        margin 0; non-finite logits give converged False without affecting other examples.
        ``status``: ``SUCCESS`` (``== converged``), ``NONFINITE``, ``MAX_STEPS`` (``steps``
        ran out without an adversarial point) or ``NOT_FOUND`` (zero gradient, no box).
    """
    _check_fmn_settings(alpha_max, alpha_min, gamma, gamma_min)
    clf = as_classifier(logits_fn)
    p, x = check_common(clf, x, y, norm, bounds)
    steps = check_steps(steps, "steps")
    x = jnp.asarray(x)
    dtype = x.dtype
    a_max = 1.0 if alpha_max is None else alpha_max
    lo, hi = bounds_pair(bounds, dtype)
    a_min = a_max / 100 if alpha_min is None else alpha_min
    settings = (*(jnp.asarray(v, dtype) for v in (a_max, a_min, gamma, gamma_min)), lo, hi)
    static = _Static(p, steps, y is not None, bounds is not None)
    batched = (x,) if y is None else (x, jnp.asarray(y).astype(jnp.int32))
    out = drive(FMN, clf, settings, batched, static, loop=loop, chunk_size=chunk_size,
                devices=devices, progress=progress)  # fmt: skip
    return MarginResult(*out)
