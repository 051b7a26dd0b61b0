"""Carlini & Wagner L2: minimal L2 perturbations by penalized optimization with a binary
search over the constant, for a batch of examples.

Carlini, Wagner, "Towards evaluating the robustness of neural networks", IEEE S&P 2017.

:func:`cw_init` / :func:`cw_step` / :func:`cw_result` as for DeepFool and FMN; :func:`cw_l2`
runs up to ``binary_steps × steps`` steps per example through the search driver
(:func:`geomrobust.search._loop.drive`: a host loop of jitted steps on the CPU, one
``lax.while_loop`` per chunk elsewhere and under ``jit``). Each step costs one forward pass
and one VJP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_positive
from ..engine import CHUNK_SIZE
from ..models import as_classifier
from ._deepfool import MarginResult
from ._fmn import (
    best_found_result,
    best_other,
    bounds_pair,
    check_common,
    check_steps,
    crosses,
    finite_rows,
    flat_norm,
    labels_or_predicted,
    rows,
)
from ._loop import Method, drive

__all__ = ["CWInfo", "CWState", "cw_init", "cw_l2", "cw_result", "cw_step"]

_TANH_SHRINK = 0.999999  # keeps arctanh finite on the faces of the box


class CWState(NamedTuple):
    """Per-example C&W state (leading batch axis ``N``).

    x : clean points; y : labels; w : the optimization variable ``(N, *s)`` (tanh space with a
    box, ``δ`` without); w0 : its starting value; m, v : Adam's moments; const : the current
    constant ``c`` ``(N,)``; c_lo, c_hi : the binary search's bracket ``(N,)``; inner : Adam
    steps taken with the current ``c`` ``(N,)`` int32; rounds : constants finished ``(N,)``
    int32; check_loss : the objective at the last early-abort check ``(N,)``; found : an
    adversarial point was met with the current ``c`` ``(N,)`` bool; best, best_norm,
    best_label : the smallest adversarial perturbation so far; done, converged : ``(N,)``
    bool; iterations : ``(N,)`` int32 (all steps, every constant); finite : the last
    evaluation's logits and gradient were finite ``(N,)`` (False ends the row: its status is
    ``NONFINITE``).
    """

    x: Array
    y: Array
    w: Array
    w0: Array
    m: Array
    v: Array
    const: Array
    c_lo: Array
    c_hi: Array
    inner: Array
    rounds: Array
    check_loss: Array
    found: Array
    best: Array
    best_norm: Array
    best_label: Array
    done: Array
    converged: Array
    iterations: Array
    finite: Array


class CWInfo(NamedTuple):
    """Per-step diagnostics of :func:`cw_step`: the per-example objective ``(N,)`` at the
    point evaluated and whether it was adversarial with the confidence and recorded ``(N,)``
    (False at the step an early abort ends a round on)."""

    loss: Array
    adversarial: Array


def _to_input(w, bounds):
    if bounds is None:
        return w
    lo, hi = bounds
    return lo + (hi - lo) * (jnp.tanh(w) + 1) / 2


def _to_attack(x, bounds):
    if bounds is None:
        return jnp.zeros_like(x)  # w = δ
    lo, hi = bounds
    span = jnp.where(hi > lo, hi - lo, 1)
    u = jnp.clip((x - lo) / span * 2 - 1, -1, 1) * _TANH_SHRINK
    return jnp.arctanh(u)


def _point(x, w, bounds):
    return x + w if bounds is None else _to_input(w, bounds)


def cw_init(
    logits_fn: Callable[[Array], Array], x: Array, y: Array | None = None, *,
    initial_const=1e-3, bounds=None,
) -> CWState:  # fmt: skip
    """The starting state: ``w`` at ``x`` (``δ = 0``), ``c = initial_const``; one forward pass
    marks misclassified examples done (margin 0) and non-finite ones done, not converged."""
    dtype = x.dtype
    bounds = None if bounds is None else bounds_pair(bounds, dtype)
    logits = logits_fn(x)
    yy = labels_or_predicted(logits_fn, x, y) if y is None else jnp.asarray(y, jnp.int32)
    finite = finite_rows(logits)
    label = jnp.argmax(logits, -1).astype(jnp.int32)
    adv = (label != yy) & finite
    w0 = _to_attack(x, bounds)
    n = x.shape[0]
    return CWState(
        x=x,
        y=yy,
        w=w0,
        w0=w0,
        m=jnp.zeros_like(x),
        v=jnp.zeros_like(x),
        const=jnp.full((n,), initial_const, dtype),
        c_lo=jnp.zeros((n,), dtype),
        c_hi=jnp.full((n,), jnp.inf, dtype),
        inner=jnp.zeros((n,), jnp.int32),
        rounds=jnp.zeros((n,), jnp.int32),
        check_loss=jnp.full((n,), jnp.inf, dtype),
        found=jnp.zeros((n,), bool),
        best=jnp.zeros_like(x),
        best_norm=jnp.where(adv, 0, jnp.inf).astype(dtype),
        best_label=jnp.where(adv, label, -1).astype(jnp.int32),
        done=adv | ~finite,
        converged=adv,
        iterations=jnp.zeros((n,), jnp.int32),
        finite=finite,
    )


def cw_step(
    logits_fn: Callable[[Array], Array],
    state: CWState,
    *,
    steps: int = 100,
    binary_steps: int = 9,
    stepsize=0.01,
    confidence=0.0,
    abort_early: bool = False,
    bounds=None,
) -> tuple[CWState, CWInfo]:
    """One Adam step on the C&W objective for every example not done.

    At ``z = x + δ(w)`` (``z = lo + (hi - lo)(tanh w + 1) / 2`` with a box), ONE forward pass
    and VJP of

        L(w) = ||z - x||_2^2 + c · max(f_y(z) - max_{j != y} f_j(z) + κ, 0)

    (``κ = confidence``; the objective of Carlini & Wagner's reference code and Foolbox, by
    value too, which the early-abort test compares). ``z`` counts as adversarial when
    ``max_{j != y} f_j(z) > f_y(z) + κ`` (their ``compare``); where it is, with room (its
    label would not flip back in another batch: :func:`geomrobust.search._fmn.crosses`), and
    closer than the best so far, it becomes the best; then ``w`` takes an Adam step
    (``β = 0.9, 0.999``, ``stepsize``). After ``steps`` steps with one constant the binary
    search moves it: ``c_hi ← c`` if an adversarial point was met, else ``c_lo ← c``;
    ``c ← (c_lo + c_hi) / 2``, or ``10 c`` while no success bounds it; with
    ``binary_steps >= 10`` the last constant is ``min(c_hi, 1e10)`` (the reference code's
    repeat of the smallest successful constant); ``w`` and Adam restart from ``x``. An
    example is done after ``binary_steps`` constants.

    ``abort_early``: at every ``ceil(steps / 10)``-th step of a round (the first included),
    an example whose objective did not fall below ``0.9999`` times its value at the previous
    check ends its round there, and the point of that step is not recorded (neither best
    nor success). This is the rule of Carlini & Wagner's reference code at its default batch
    of one example (which checks every ``floor(steps / 10)`` steps; ``ceil`` also serves
    ``steps < 10``); Foolbox 3.3.4 applies it to the sum of the objective over the batch,
    which makes an example's result depend on the others; here it is per example.
    """
    dtype = state.x.dtype
    bounds = None if bounds is None else bounds_pair(bounds, dtype)
    x, y = state.x, state.y
    active = ~state.done
    kappa = jnp.asarray(confidence, dtype)

    def objective(w):
        z = _point(x, w, bounds)
        logits = logits_fn(z)
        j = best_other(logits, y)
        idx = jnp.arange(x.shape[0])
        gap = logits[idx, y] - logits[idx, j]
        d2 = jnp.sum(((z - x) ** 2).reshape(x.shape[0], -1), axis=1)
        per = d2 + state.const * jnp.maximum(gap + kappa, 0)
        return jnp.sum(per), (logits, z, per, gap)

    (_, (logits, z, per, gap)), g = jax.value_and_grad(objective, has_aux=True)(state.w)
    finite = finite_rows(logits, g)
    label = jnp.argmax(logits, -1).astype(jnp.int32)
    # adversarial with the confidence: max_{j != y} f_j > f_y + κ (Carlini's ``compare``)
    adv = (label != y) & finite & (-gap > kappa)
    # early abort (Carlini & Wagner's reference code, Foolbox): at a check, an objective that
    # did not fall below 0.9999 times its value at the previous check ends the round before
    # this evaluation is recorded
    at_check = state.inner % max(1, -(-steps // 10)) == 0
    stall = at_check & ~(per <= 0.9999 * state.check_loss)
    record = ~stall if abort_early else jnp.ones_like(stall)
    adv = adv & record
    delta = z - x
    n = flat_norm(delta, 2.0)
    better = crosses(logits, y) & adv & (n < state.best_norm)
    best = jnp.where(rows(better, x.ndim), delta, state.best)
    best_norm = jnp.where(better, n, state.best_norm)
    best_label = jnp.where(better, label, state.best_label)
    found = state.found | adv
    # Adam (per coordinate: rows never interact)
    t = (state.inner + 1).astype(dtype)
    g = jnp.where(rows(finite, g.ndim), g, 0)
    m = 0.9 * state.m + 0.1 * g
    v = 0.999 * state.v + 0.001 * g * g
    mh = m / rows(1 - 0.9**t, x.ndim)
    vh = v / rows(1 - 0.999**t, x.ndim)
    w = state.w - stepsize * mh / (jnp.sqrt(vh) + 1e-8)
    inner = state.inner + 1
    check_loss = jnp.where(at_check, per, state.check_loss)
    # binary search over the constant at the end of a round
    end = inner >= steps
    if abort_early:
        end = end | stall
    c_hi = jnp.where(end & found, jnp.minimum(state.c_hi, state.const), state.c_hi)
    c_lo = jnp.where(end & ~found, jnp.maximum(state.c_lo, state.const), state.c_lo)
    c_next = jnp.where(jnp.isfinite(c_hi), (c_lo + c_hi) / 2, state.const * 10)
    if binary_steps >= 10:  # the last constant repeats the smallest successful one (Carlini)
        last = state.rounds + 2 == binary_steps
        c_next = jnp.where(last, jnp.minimum(c_hi, 1e10), c_next)
    r = rows(end, x.ndim)
    new = state._replace(
        w=jnp.where(r, state.w0, w),
        m=jnp.where(r, 0, m),
        v=jnp.where(r, 0, v),
        const=jnp.where(end, c_next, state.const).astype(dtype),
        c_lo=c_lo,
        c_hi=c_hi,
        inner=jnp.where(end, 0, inner),
        rounds=state.rounds + end.astype(jnp.int32),
        check_loss=jnp.where(end, jnp.inf, check_loss).astype(dtype),
        found=jnp.where(end, False, found),
        best=best,
        best_norm=best_norm,
        best_label=best_label,
        done=~finite | (end & (state.rounds + 1 >= binary_steps)),
        converged=jnp.isfinite(best_norm),
        iterations=state.iterations + 1,
        finite=finite,
    )
    out = jax.tree.map(lambda a, b: jnp.where(rows(active, a.ndim), a, b), new, state)
    return out, CWInfo(loss=per, adversarial=adv)


def cw_result(state: CWState) -> MarginResult:
    """The :class:`MarginResult` of a C&W state (the smallest adversarial point met)."""
    # every constant tried (or the search interrupted) without an adversarial point: the
    # budget ran out (MAX_STEPS); a non-finite evaluation ended the row: NONFINITE
    return best_found_result(state, 0, True)


class _Static(NamedTuple):
    steps: int
    binary_steps: int
    abort_early: bool
    has_y: bool
    has_bounds: bool


def _m_init(clf, settings, batch, st: _Static):
    c0, _, _, lo, hi = settings
    y = batch[1] if st.has_y else None
    return cw_init(clf, batch[0], y, initial_const=c0,
                   bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _m_step(clf, settings, state, st: _Static):
    _, stepsize, confidence, lo, hi = settings
    return cw_step(clf, state, steps=st.steps, binary_steps=st.binary_steps,
                   stepsize=stepsize, confidence=confidence, abort_early=st.abort_early,
                   bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _m_done(state, st: _Static):
    return state.done


def _m_result(clf, settings, state, st: _Static):
    return cw_result(state)


CW = Method("cw_l2", _m_init, _m_step, _m_done, _m_result)
"""C&W L2 as a method of the search driver (:func:`geomrobust.search._loop.drive`)."""


def cw_l2(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    steps: int = 100,
    binary_steps: int = 9,
    stepsize: float = 0.01,
    initial_const: float = 1e-3,
    confidence: float = 0.0,
    abort_early: bool = False,
    bounds: tuple | None = None,
    loop: str = "auto",
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MarginResult:
    """Minimal L2 adversarial perturbations by Carlini & Wagner's L2 attack (S&P 2017).

    For each constant ``c`` of a binary search (``binary_steps`` values from
    ``initial_const``), ``steps`` Adam steps minimize ``||z - x||² + c · max(f_y(z) -
    max_{j != y} f_j(z) + κ, 0)`` over ``z`` in the box (the tanh change of variables; without
    a box ``z = x + δ`` directly; ``stepsize`` acts in tanh space, where a step moves ``z`` by
    up to ``(hi - lo) / 2`` times it). The smallest adversarial ``z - x`` met over all steps and
    constants is returned, an adversarial point being one with ``max_{j != y} f_j(z) > f_y(z) +
    κ`` (step rule: :func:`cw_step`). Every example runs all
    ``binary_steps × steps`` steps unless ``abort_early`` (the paper's ``steps`` is 10,000
    and Foolbox's default too: use ``steps`` and ``binary_steps`` to trade accuracy for
    time).

    Parameters
    ----------
    logits_fn : the classifier (a function, :class:`geomrobust.Classifier`, NNX or Equinox).
    x : ``(N, *s)`` floating; y : ``(N,)`` labels or None (predicted).
    steps, binary_steps : Adam steps per constant, constants tried.
    stepsize : Adam's learning rate (in tanh space with a box, in input units without).
    initial_const : the first ``c``; confidence : ``κ >= 0``.
    abort_early : end an example's round when its objective stalls (Carlini & Wagner's
    rule, per example: :func:`cw_step`); off by default: every example then runs every
    step.
    bounds : ``(lo, hi)`` (scalars) box, or None.
    loop : ``"host"``, ``"device"`` or ``"auto"``, as for :func:`geomrobust.search.fmn`.
    chunk_size, devices, progress : the executor's options (concrete inputs only).

    Returns
    -------
    MarginResult
        ``margin = ||z - x||_2`` (``inf`` where no adversarial point was met), misclassified
        examples margin 0, ``iterations`` the steps taken; ``status`` ``SUCCESS`` (``==
        converged``), ``NONFINITE`` or ``MAX_STEPS`` (every constant tried without an
        adversarial point).
    """
    clf = as_classifier(logits_fn)
    _, x = check_common(clf, x, y, 2, bounds, norms=(2.0,))
    steps = check_steps(steps, "steps")
    binary_steps = check_steps(binary_steps, "binary_steps")
    check_positive(stepsize, "stepsize")
    check_positive(initial_const, "initial_const")
    check_positive(confidence, "confidence", allow_zero=True)
    if bounds is not None and (np.ndim(bounds[0]) or np.ndim(bounds[1])):
        raise ValueError("cw_l2 takes scalar bounds (lo, hi); got per-pixel bounds")
    x = jnp.asarray(x)
    dtype = x.dtype
    lo, hi = bounds_pair(bounds, dtype)
    settings = tuple(jnp.asarray(v, dtype) for v in (initial_const, stepsize, confidence))
    static = _Static(steps, binary_steps, bool(abort_early), y is not None, bounds is not None)
    batched = (x,) if y is None else (x, jnp.asarray(y).astype(jnp.int32))
    out = drive(CW, clf, (*settings, lo, hi), batched, static, loop=loop,
                chunk_size=chunk_size, devices=devices, progress=progress)  # fmt: skip
    return MarginResult(*out)
