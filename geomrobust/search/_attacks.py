"""Gradient attacks in an Lp ball: FGSM / FGM and PGD, and robust accuracy over epsilons.

FGSM: Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.
PGD: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards deep learning models resistant to
adversarial attacks", ICLR 2018. Foolbox vocabulary: ``epsilons``, ``success``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._status import status_codes
from .._validation import (
    check_bounds,
    check_key,
    check_labels,
    check_positive,
    is_concrete,
    search_inputs,
    to_classifier_device,
)
from ..models import as_classifier
from ..ops._norms import as_norm, lp_norm, project_ball
from ._fmn import finite_rows
from ._loop import Method, drive, loop_form

__all__ = [
    "AttackResult",
    "PGDInfo",
    "PGDState",
    "fgsm",
    "pgd",
    "pgd_init",
    "pgd_result",
    "pgd_step",
]


class AttackResult(NamedTuple):
    """perturbation ``(N, *s)`` (``adversarial - x``, inside the ball and the box);
    adversarial ``(N, *s)``; success ``(N,)`` bool (label != y, or == target when targeted);
    adv_label ``(N,)`` int32, the label at ``adversarial``; status ``(N,)`` int8
    :class:`geomrobust.Status` (``success == (status == Status.SUCCESS)``): ``NONFINITE`` a
    non-finite logit row at ``adversarial``, ``NOT_FOUND`` no adversarial point found inside
    the radius (the attack ran its whole budget: a fixed-radius attack has no other way to
    end)."""

    perturbation: Array
    adversarial: Array
    success: Array
    adv_label: Array
    status: Array


def attack_status(success: Array, finite: Array) -> Array:
    """The status of a fixed-radius attack: ``SUCCESS``, ``NONFINITE`` (a non-finite logit
    row at the returned point) or ``NOT_FOUND``."""
    return status_codes(success, ~finite)


def _loss_grad(logits_fn, x, y, target):
    """``∇_x`` of the per-example cross-entropy, ascending on ``y`` (untargeted) or descending
    on ``target`` (targeted); rows are independent, so the gradient of the sum is per-row."""

    def loss(z):
        logp = jax.nn.log_softmax(logits_fn(z), axis=-1)
        idx = jnp.arange(z.shape[0])
        if target is None:
            return -jnp.sum(logp[idx, y])
        return jnp.sum(logp[idx, target])

    return jax.grad(loss)(x)


def _ascent(g: Array, p: float) -> Array:
    """The steepest unit-Lp ascent direction: ``sign(g)`` (inf) or ``g / ||g||_2`` (2); zero
    gradients give a zero step, never NaN."""
    flat = g.reshape(g.shape[0], -1)
    if math.isinf(p):
        return jnp.sign(g)
    n = lp_norm(flat, 2)[:, None]
    return (flat / jnp.where(n > 0, n, 1)).reshape(g.shape)


def _project(delta: Array, eps, p: float) -> Array:
    flat = delta.reshape(delta.shape[0], -1)
    return project_ball(flat, eps, p).reshape(delta.shape)


def _finish(logits_fn, x, adv, y, target) -> AttackResult:
    """The result at ``adv``: one forward pass; a non-finite logit row is never a success
    (the argmax of a NaN row is 0, a label like any other)."""
    logits = logits_fn(adv)
    label = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    success = label != y if target is None else label == target
    finite = finite_rows(logits)
    success = success & finite
    return AttackResult(adv - x, adv, success, label, attack_status(success, finite))


def _clip(v, bounds):
    return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])


def _check(logits_fn, x, y, eps, norm, target, bounds=None):
    """The attacks' input checks; ``-> (p, x, K)`` with ``x`` in the search dtype and on the
    classifier's device (:func:`geomrobust._validation.search_inputs`: float16 / bfloat16
    -> float32, the wider of ``x``'s and the logits' dtype, and ``x`` outside ``bounds``
    beyond the tolerance is a ``ValueError``: the ball around it would be clipped away)."""
    p = as_norm(norm)
    if not (math.isinf(p) or p == 2.0):
        raise ValueError(f"FGSM/PGD support norm 2 or inf, got {norm!r}")
    check_bounds(bounds, "bounds")
    x, k, _ = search_inputs(logits_fn, x, "x", bounds=bounds)
    check_labels(y, k, x.shape[0], "y")
    if target is not None:
        check_labels(target, k, x.shape[0], "target")
    if is_concrete(eps) and not np.all(np.asarray(eps) >= 0):
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    return p, x, k


def fgsm(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    eps,
    norm=jnp.inf,
    target: Array | None = None,
    bounds: tuple | None = None,
) -> AttackResult:
    """One gradient step of length ``eps``: ``x + eps sign(∇ℓ)`` (Linf, FGSM) or
    ``x + eps ∇ℓ / ||∇ℓ||`` (L2, FGM), then clipped to ``bounds``.

    ``ℓ`` is the cross-entropy of ``y`` (ascended), or of ``target`` (descended) in targeted
    mode. ``x`` ``(N, *s)``, ``y`` / ``target`` ``(N,)``. Input checks (docs/conventions.md
    "Input checks"): with ``bounds``, ``x`` must lie in the box (``ValueError`` naming how
    many examples do not); float16 / bfloat16 ``x`` is computed and returned in float32,
    otherwise in the wider of ``x``'s and the logits' dtype; ``x``, ``y``, ``target``
    committed to another device than the classifier's weights are moved to theirs.
    """
    clf = as_classifier(logits_fn)
    y = jnp.asarray(y)
    p, x, _ = _check(clf, jnp.asarray(x), y, eps, norm, target, bounds)
    x, y, target = to_classifier_device(clf, x, y, target)  # a direct program: the weights'
    lo, hi = _bounds_arrays(bounds, x.dtype)
    return _fgsm_program(clf, x, y, jnp.asarray(eps, x.dtype), target, lo, hi, p=p,
                         has_bounds=bounds is not None)  # fmt: skip


def _bounds_arrays(bounds, dtype):
    if bounds is None:
        return jnp.zeros((), dtype), jnp.zeros((), dtype)
    return jnp.asarray(bounds[0], dtype), jnp.asarray(bounds[1], dtype)


@partial(jax.jit, static_argnames=("p", "has_bounds"))
def _fgsm_program(clf, x, y, eps, target, lo, hi, *, p, has_bounds):
    """FGSM / FGM on a batch: one compilation per architecture, shapes and norm."""
    bounds = (lo, hi) if has_bounds else None
    g = _loss_grad(clf, x, y, target)
    adv = _clip(x + eps * _ascent(g, p), bounds)
    return _finish(clf, x, adv, y, target)


def check_unroll(unroll) -> None:
    """``unroll`` of ``lax.fori_loop``: True, False or a positive integer."""
    if not isinstance(unroll, bool | int | np.integer) or (
        not isinstance(unroll, bool) and unroll < 1
    ):
        raise ValueError(f"unroll must be True, False or a positive integer, got {unroll!r}")


def pgd(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    key: Array,
    eps,
    norm=jnp.inf,
    steps: int = 10,
    step_size=None,
    random_start: bool = True,
    target: Array | None = None,
    bounds: tuple | None = None,
    unroll: int | bool = 1,
    loop: str = "auto",
) -> AttackResult:
    """Projected gradient ascent on the cross-entropy inside the Lp ball of radius ``eps``.

    ``δ_0`` uniform in the ball (``random_start``, explicit ``key``: Linf uniform in the cube,
    L2 uniform in the ball) or 0; ``δ_{t+1} = Π_ball(δ_t + α u_t)`` with ``u_t = sign(∇ℓ)``
    (Linf) or ``∇ℓ/||∇ℓ||`` (L2), and ``x + δ`` clipped to ``bounds`` after every step. A
    fixed number of ``steps`` under ``lax.fori_loop`` (no early stopping, as in Madry et al.);
    ``α = step_size`` defaults to ``2.5 eps / steps``. ``eps`` may be traced (vmap over it).
    ``unroll`` is passed to ``fori_loop`` (``True``: straight-line code). Same results; on
    the CPU, XLA runs loop bodies slower than straight-line code: unrolling the 7 steps of
    PGD-AT training raised its throughput 1.34x on a LeNet (``benchmarks/bench_training.py``)
    at the price of a compilation that grows with ``steps``. For the same reason, on
    concrete inputs ``loop="auto"`` (the CPU backend) or ``"host"`` runs the kernels
    :func:`pgd_init` / :func:`pgd_step` / :func:`pgd_result` as a host loop of jitted steps
    (:mod:`geomrobust.search._loop`); ``"device"`` and any traced input run the
    ``fori_loop`` form. A non-finite logit row at the returned point is never a success
    (``status`` ``NONFINITE``; ``NOT_FOUND`` where no adversarial point was found).

    Input checks as :func:`fgsm`: with ``bounds``, an ``x`` outside the box (beyond
    ``max(1e-6 (hi - lo), 8 eps max(|lo|, |hi|))``) raises ``ValueError`` (clipping it would
    move ``x + δ`` farther than ``eps`` from ``x``); float16 / bfloat16 run in float32.
    """
    clf = as_classifier(logits_fn)
    y = jnp.asarray(y)
    p, x, _ = _check(clf, jnp.asarray(x), y, eps, norm, target, bounds)
    x, y, target = to_classifier_device(clf, x, y, target)  # a direct program: the weights'
    if not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if step_size is not None and is_concrete(step_size):
        check_positive(step_size, "step_size")
    if random_start:
        check_key(key, "key")
    check_unroll(unroll)
    dtype = x.dtype
    eps = jnp.asarray(eps, dtype)
    alpha = 2.5 * eps / max(steps, 1) if step_size is None else jnp.asarray(step_size, dtype)
    lo, hi = _bounds_arrays(bounds, dtype)
    # canonical unroll (True and 1 hash alike as static arguments: True means all steps)
    unroll = max(int(steps), 1) if unroll is True else 1 if unroll is False else int(unroll)
    static = _PGDStatic(p, int(steps), bool(random_start), target is not None,
                        bounds is not None, unroll)  # fmt: skip
    settings = (key if random_start else None, eps, alpha, lo, hi)
    batch = (x, y) if target is None else (x, y, target)
    if loop_form(loop, clf, x, y, eps, alpha, key, target) == "device":
        return _pgd_program(clf, settings, batch, static=static)
    return AttackResult(*drive(PGD, clf, settings, batch, static, loop="host",
                               chunk_size=None))  # fmt: skip


class PGDState(NamedTuple):
    """The PGD state: clean points ``x``, labels ``y`` ``(N,)``, the ``target`` labels
    (``y`` when untargeted), the radius ``eps`` (a scalar or ``(N, 1, ..)``-broadcastable),
    the current point ``adv`` ``(N, *s)`` and the step count ``k`` (scalar: every row takes
    the same ``steps`` steps, as in Madry et al.)."""

    x: Array
    y: Array
    target: Array
    eps: Array
    adv: Array
    k: Array


class PGDInfo(NamedTuple):
    """Per-step diagnostics of :func:`pgd_step` (none: a step evaluates no logits)."""


def pgd_init(logits_fn, x, y, *, eps, key=None, norm=jnp.inf, target=None, bounds=None):
    """The start ``x + δ_0`` (``key``: ``δ_0`` uniform in the ball, Linf uniform in the cube,
    L2 uniform in the ball; ``key=None``: ``δ_0 = 0``), clipped to ``bounds``; no model
    call. ``logits_fn`` is unused (the kernel signature of docs/api.md)."""
    del logits_fn
    p = float(norm)
    dtype = x.dtype
    eps = jnp.asarray(eps, dtype)
    if key is not None:
        if math.isinf(p):
            delta = jax.random.uniform(key, x.shape, dtype, -1.0, 1.0) * eps
        else:
            k1, k2 = jax.random.split(key)
            d = math.prod(x.shape[1:])
            g = jax.random.normal(k1, (x.shape[0], d), dtype)
            g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-30)
            rad = jax.random.uniform(k2, (x.shape[0], 1), dtype) ** (1.0 / d)
            delta = (g * rad * eps).reshape(x.shape)
    else:
        delta = jnp.zeros_like(x)
    y = jnp.asarray(y, jnp.int32)
    tgt = y if target is None else jnp.asarray(target, jnp.int32)
    return PGDState(x, y, tgt, eps, _clip(x + delta, bounds), jnp.zeros((), jnp.int32))


def pgd_step(logits_fn, state: PGDState, *, step_size, norm=jnp.inf, targeted=False,
             bounds=None) -> tuple[PGDState, PGDInfo]:  # fmt: skip
    """``δ ← Π_ball(δ + α u)`` with ``u = sign(∇ℓ)`` (Linf) or ``∇ℓ / ||∇ℓ||_2`` (L2) of
    the cross-entropy (ascending on ``y``; descending on ``target`` when ``targeted``), then
    ``x + δ`` clipped to ``bounds``: one forward + VJP."""
    p = float(norm)
    x = state.x
    g = _loss_grad(logits_fn, state.adv, state.y, state.target if targeted else None)
    delta = _project(state.adv + step_size * _ascent(g, p) - x, state.eps, p)
    return state._replace(adv=_clip(x + delta, bounds), k=state.k + 1), PGDInfo()


def pgd_result(logits_fn, state: PGDState, *, targeted=False) -> AttackResult:
    """The :class:`AttackResult` at the current point: one forward pass for its label (the
    step evaluates the gradient before moving, so the label at the last point is not in the
    state). A non-finite logit row there is never a success."""
    return _finish(logits_fn, state.x, state.adv, state.y,
                   state.target if targeted else None)  # fmt: skip


class _PGDStatic(NamedTuple):
    p: float
    steps: int
    random_start: bool
    targeted: bool
    has_bounds: bool
    unroll: int


def _p_init(clf, settings, batch, st: _PGDStatic):
    key, eps, _, lo, hi = settings
    x, y = batch[0], batch[1]
    return pgd_init(clf, x, y, eps=eps, key=key if st.random_start else None, norm=st.p,
                    target=batch[2] if st.targeted else None,
                    bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _p_step(clf, settings, state, st: _PGDStatic):
    _, _, alpha, lo, hi = settings
    return pgd_step(clf, state, step_size=alpha, norm=st.p, targeted=st.targeted,
                    bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _p_done(state, st: _PGDStatic):
    return jnp.broadcast_to(state.k >= st.steps, state.y.shape)


def _p_result(clf, settings, state, st: _PGDStatic):
    return pgd_result(clf, state, targeted=st.targeted)


PGD = Method("pgd", _p_init, _p_step, _p_done, _p_result)
"""PGD as a method of the search driver (every row takes ``steps`` steps)."""


@partial(jax.jit, static_argnames=("static",))
def _pgd_program(clf, settings, batch, *, static: _PGDStatic):
    """PGD on a batch under ``lax.fori_loop`` (``unroll``): the transformable form, one
    compilation per architecture, shapes and structural settings."""
    state = _p_init(clf, settings, batch, static)

    def body(_, s):
        return _p_step(clf, settings, s, static)[0]

    state = jax.lax.fori_loop(0, static.steps, body, state, unroll=static.unroll)
    return _p_result(clf, settings, state, static)


def pgd_run(clf, x, y, key, eps, alpha, lo, hi, *, p, steps, has_bounds):
    """Untargeted PGD with a random start in its transformable form (``lax.fori_loop``), for
    programs that run it on traced data (:func:`geomrobust.search.masking_checks`)."""
    static = _PGDStatic(p, steps, True, False, has_bounds, 1)
    return _pgd_program(clf, (key, eps, alpha, lo, hi), (x, y), static=static)
