"""Gradient attacks in an Lp ball: FGSM / FGM and PGD, and robust accuracy over epsilons.

FGSM: Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.
PGD: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards deep learning models resistant to
adversarial attacks", ICLR 2018. Foolbox vocabulary: ``epsilons``, ``success``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import (
    check_bounds,
    check_key,
    check_labels,
    check_positive,
    is_concrete,
    search_inputs,
    to_classifier_device,
)
from ..engine import run_program
from ..models import as_classifier
from ..ops._norms import as_norm, lp_norm, project_ball

__all__ = ["AttackResult", "RobustAccuracy", "fgsm", "pgd", "robust_accuracy"]


class AttackResult(NamedTuple):
    """perturbation ``(N, *s)`` (``adversarial - x``, inside the ball and the box);
    adversarial ``(N, *s)``; success ``(N,)`` bool (label != y, or == target when targeted);
    adv_label ``(N,)`` int32, the label at ``adversarial``."""

    perturbation: Array
    adversarial: Array
    success: Array
    adv_label: Array


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
    label = jnp.argmax(logits_fn(adv), axis=-1).astype(jnp.int32)
    success = label != y if target is None else label == target
    return AttackResult(adv - x, adv, success, label)


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
    at the price of a compilation that grows with ``steps``.

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
    return _pgd_program(
        clf, x, y, key if random_start else None, eps, alpha, target, lo, hi, p=p,
        steps=int(steps), random_start=bool(random_start), unroll=unroll,
        has_bounds=bounds is not None,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("p", "steps", "random_start", "unroll", "has_bounds"))
def _pgd_program(clf, x, y, key, eps, alpha, target, lo, hi, *, p, steps, random_start,
                 unroll, has_bounds):  # fmt: skip
    """PGD on a batch: one compilation per architecture, shapes and structural settings
    (weights, data, key, radius, step size, target and box are arguments)."""
    bounds = (lo, hi) if has_bounds else None
    dtype = x.dtype
    if random_start:
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
    adv = _clip(x + delta, bounds)

    def body(_, adv):
        g = _loss_grad(clf, adv, y, target)
        delta = _project(adv + alpha * _ascent(g, p) - x, eps, p)
        return _clip(x + delta, bounds)

    adv = jax.lax.fori_loop(0, steps, body, adv, unroll=unroll)
    return _finish(clf, x, adv, y, target)


class RobustAccuracy(NamedTuple):
    """epsilons ``(E,)``; accuracy ``(E,)`` fraction correct under the attack at each
    ``eps``; clean_accuracy; success ``(E, N)`` bool per example; flags: the gradient-masking
    checks failed, as sentences (see :func:`geomrobust.search.masking_checks`)."""

    epsilons: np.ndarray
    accuracy: np.ndarray
    clean_accuracy: float
    success: np.ndarray
    flags: tuple = ()


def robust_accuracy(
    logits_fn: Callable[[Array], Array],
    x,
    y,
    epsilons: Sequence[float],
    *,
    key: Array,
    attack: str = "pgd",
    checks: bool = False,
    chunk_size: int = 256,
    progress=None,
    devices=None,
    **attack_kw,
) -> RobustAccuracy:
    """Accuracy under ``fgsm`` or ``pgd`` for every ``eps`` in ``epsilons``, in one call.

    One jitted function runs the attack for all ``E`` epsilons (``lax.map`` over ``eps``) on
    a chunk of ``chunk_size`` examples; chunks are fed by the executor
    (:func:`geomrobust.engine.map_chunks`; ``devices`` and ``progress`` as there), so it
    compiles once per architecture and attack settings, with the weights, data, ``key``,
    ``epsilons`` and array settings (``step_size``, per-pixel ``bounds``) as arguments:
    calling again with another model of the same architecture, other data, another key or
    other epsilons of the same length does not recompile. An example
    counts as robust at ``eps`` when it is correctly classified and the attack fails. Each
    chunk uses ``fold_in(key, chunk_start)``, so results do not depend on the device or chunk
    order. ``attack_kw`` are passed on to :func:`pgd` / :func:`fgsm` (a ``target`` ``(N,)``
    is split into chunks with ``x``), or to :func:`geomrobust.search.apgd` (``attack=
    "apgd-ce"`` or ``"apgd-dlr"``) / :func:`geomrobust.search.square_attack` (``"square"``).

    ``flags`` reports every gradient-masking check that fails: always whether the accuracy
    rises with ``eps`` (by more than 2 %); with ``checks=True`` also the checks of
    :func:`geomrobust.search.masking_checks` (FGSM stronger than PGD, the square search
    stronger than the gradient attacks, accuracy above 0 in a ball covering the box), run on
    the same data, ``epsilons``, ``norm``, ``bounds`` and ``key`` (its own attacks, at their
    default strengths; its cost is several attacks').
    """
    if attack not in _ATTACK_NAMES:
        raise ValueError(f"attack must be one of {_ATTACK_NAMES}, got {attack!r}")
    clf = as_classifier(logits_fn)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    eps = np.asarray(epsilons, np.float64).reshape(-1)
    if eps.size == 0 or not np.all(eps >= 0):
        raise ValueError(f"epsilons must be a non-empty list of values >= 0, got {epsilons!r}")
    attack_kw = dict(attack_kw)
    target = attack_kw.pop("target", None)
    if target is not None:
        target = jnp.asarray(target)
        if attack not in ("pgd", "fgsm"):
            raise ValueError(f"target is supported by attack='pgd' or 'fgsm', not {attack!r}")
    # checked here: inside the program, traced settings (array bounds, a traced key) are not
    norm = attack_kw.get("norm", jnp.inf)  # x in the search dtype (then eps is cast to it)
    _, x, _ = _check(clf, x, y, 0.0, norm, target, attack_kw.get("bounds"))
    check_key(key, "key")
    step_size = attack_kw.get("step_size")
    if attack == "pgd" and step_size is not None and is_concrete(step_size):
        check_positive(step_size, "step_size")
    static, traced = _split_settings(attack_kw)
    program = partial(_robust_program, attack=attack, static=static)
    n = x.shape[0]
    starts = jnp.arange(n, dtype=jnp.uint32)
    arrays = (x, y, starts) if target is None else (x, y, starts, target)
    clean, success = run_program(
        program, (clf, key, jnp.asarray(eps, x.dtype), traced), arrays,
        chunk_size=min(int(chunk_size), n), devices=devices, progress=progress,
        desc=f"{attack} accuracy",
    )  # fmt: skip
    clean, success = np.asarray(clean), np.asarray(success).T
    robust = clean[None, :] & ~success
    accuracy = robust.mean(axis=1)
    from ._masking import masking_checks, monotone_flags

    flags = monotone_flags(eps, accuracy, attack)
    if checks:
        mc = masking_checks(
            clf, x, y, eps, key=key, norm=attack_kw.get("norm", jnp.inf),
            bounds=attack_kw.get("bounds"), chunk_size=chunk_size, devices=devices,
        )  # fmt: skip
        flags += [f for f in mc.flags if f not in flags]
    return RobustAccuracy(eps, accuracy, float(clean.mean()), success, tuple(flags))


_ATTACK_NAMES = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "square")

# settings of the attacks that shape the program (Python values): never traced
_STRUCTURAL = ("norm", "steps", "random_start", "unroll", "restarts", "queries", "loss")


def _split_settings(attack_kw: dict) -> tuple[tuple, dict]:
    """Split the attack settings into a hashable key ``((name, type, value), ...)`` (sorted
    by name; the type keeps ``unroll=True`` and ``unroll=1`` apart) and the settings holding
    arrays (``step_size``, per-pixel ``bounds``), which the program takes as traced arguments
    so that neither they nor their values are baked into it."""
    static, traced = [], {}
    for name in sorted(attack_kw):
        v = attack_kw[name]
        has_array = any(isinstance(a, jax.Array | np.ndarray) for a in jax.tree.leaves(v))
        if name in _STRUCTURAL and has_array:
            if np.ndim(v) != 0 or not is_concrete(v):
                raise TypeError(
                    f"{name} must be a Python value (it selects the compiled program), "
                    f"got {type(v).__name__} of shape {np.shape(v)}"
                )
            v, has_array = np.asarray(v).item(), False
        if not has_array:
            try:
                hash(v)
            except TypeError:
                has_array = True  # e.g. bounds as a list [lo, hi]: traced like an array
        if has_array:
            traced[name] = v
        else:
            static.append((name, type(v), v))
    return tuple(static), traced


@partial(jax.jit, static_argnames=("attack", "static"))
def _robust_program(clf, key, eps, traced, xc, yc, start, target=None, *, attack, static):
    """The chunk of :func:`robust_accuracy`: ``-> (clean (C,), success (C, E))``; one
    compilation per architecture, shapes and attack settings."""
    kw = {name: v for name, _, v in static}
    k = jax.random.fold_in(key, start[0])
    settings = dict(kw, **traced)
    if target is not None:
        settings["target"] = target

    def one(e):
        if attack == "pgd":
            return pgd(clf, xc, yc, key=k, eps=e, **settings).success
        if attack == "fgsm":
            return fgsm(clf, xc, yc, eps=e, **settings).success
        from ._apgd import apgd, square_attack

        if attack == "square":
            return square_attack(clf, xc, yc, key=k, eps=e, **settings).success
        return apgd(clf, xc, yc, key=k, eps=e, loss=attack[5:], **settings).success

    clean = jnp.argmax(clf(xc), axis=-1) == yc
    return clean, jax.lax.map(one, eps).T  # (C,), (C, E)
