"""Robust-training objectives as loss builders for :func:`geomrobust.train.make_train_step`.

Every builder returns a loss function with the signature of
:func:`~geomrobust.train.cross_entropy_loss`, ``loss_fn(apply, params, x, y, key) ->
(loss, aux)``; ``key`` is the step's PRNG key (random starts, noise), so a train step built
from any of them is jitted once and is deterministic given its key. Adversarial inputs are
computed inside the loss with the parameters treated as constants (``stop_gradient`` on the
attack, as in every reference implementation); regularizers that involve input gradients
(GradAlign, CURE, LLR) are differentiated through those gradients (double backprop).

``aux`` holds ``loss`` (the full objective), ``accuracy`` (on the inputs the cross-entropy is
evaluated at: adversarial inputs for the adversarial methods, clean ones for CURE / LLR) and
method-specific terms (``reg``, ``cos``, ...).

Input box. Digits (and every image set of :mod:`geomrobust.data`) lie in ``[0, 1]``; pass
``bounds=(0.0, 1.0)`` to clip the *adversarial input* ``x + δ`` to it (the default ``None``,
as everywhere in the package, is no box: docs/api.md). N-FGSM never projects its
perturbation onto the ε-ball (de Jorge et al. 2022: that clipping is what it removes), only
the input onto the box.

References: Madry et al. ICLR 2018 (PGD-AT); Wong, Rice, Kolter ICLR 2020 (FGSM-RS);
de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez, Dokania NeurIPS 2022 (N-FGSM); Andriushchenko &
Flammarion NeurIPS 2020 (GradAlign); Moosavi-Dezfooli, Fawzi, Uesato, Frossard CVPR 2019
(CURE); Qin et al. NeurIPS 2019 (LLR).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ..measures._linearity import linearity_gap, linearity_search, per_example_loss
from ..ops._norms import as_norm
from ..search import fgsm, pgd
from ..search._attacks import check_unroll
from ._losses import LossFn, cross_entropy_loss, per_example_metrics

__all__ = [
    "METHODS",
    "cure_loss",
    "cure_regularizer",
    "fgsm_loss",
    "fgsm_rs_loss",
    "gradalign_loss",
    "gradient_cosine",
    "input_loss_grad",
    "llr_loss",
    "make_loss",
    "nfgsm_loss",
    "pgd_at_loss",
    "standard_loss",
]

Bounds = tuple[float, float] | None


# --------------------------------------------------------------------------- helpers


def input_loss_grad(logits_fn: Callable[[Array], Array], x: Array, y: Array):
    """Per-example cross-entropy ``ℓ_i`` ``(N,)`` and its input gradients ``∇_x ℓ_i``
    ``(N, *s)`` from one forward and one backward pass (rows are independent, so the
    gradient of ``Σ_i ℓ_i`` is the per-example gradient). Differentiable (double backprop)."""
    loss0, vjp = jax.vjp(per_example_loss(logits_fn, y), x)
    (grad,) = vjp(jnp.ones_like(loss0))
    return loss0, grad


def _rows(a: Array) -> Array:
    return a.reshape(a.shape[0], -1)


def _clip(v: Array, bounds: Bounds) -> Array:
    return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])


def _check_bounds(bounds) -> Bounds:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"bounds must be None or a pair (lo, hi), got {bounds!r}") from None
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return (lo, hi)


def _check_nonneg(value, name: str, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        kind = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {kind}, got {value!r}")
    return v


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def _ce_on(apply, params, x_in, y, **extra):
    """Mean cross-entropy of ``apply(params, x_in)`` plus the aux dict."""
    loss, correct = per_example_metrics(apply(params, x_in), y)
    loss = loss.mean()
    aux = {"accuracy": correct.mean(dtype=loss.dtype)}
    aux.update(extra)
    return loss, aux


class GradientCosine(NamedTuple):
    """cosine ``(N,)`` (1 where undefined); valid ``(N,)`` both gradients non-zero."""

    cosine: Array
    valid: Array


def gradient_cosine(g1: Array, g2: Array) -> GradientCosine:
    """Per-example cosine ``<g1, g2> / (||g1|| ||g2||)`` ``(N,)`` and a mask ``(N,)`` of the
    rows where both gradients are non-zero (elsewhere the cosine is undefined; it is
    reported as 1 there and should be excluded with the mask)."""
    a, b = _rows(g1), _rows(g2)
    na = jnp.sqrt(jnp.sum(a * a, axis=1))
    nb = jnp.sqrt(jnp.sum(b * b, axis=1))
    ok = (na > 0) & (nb > 0)
    cos = jnp.sum(a * b, axis=1) / jnp.where(ok, na * nb, 1)
    return GradientCosine(jnp.where(ok, cos, 1), ok)


# --------------------------------------------------------------------------- builders


def standard_loss() -> LossFn:
    """Standard training: :func:`~geomrobust.train.cross_entropy_loss` (clean mean CE)."""
    return cross_entropy_loss


def pgd_at_loss(
    eps: float,
    *,
    norm=jnp.inf,
    steps: int = 7,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: Bounds = None,
    unroll: int | bool = 1,
) -> LossFn:
    """PGD adversarial training (Madry et al. 2018): ``min_θ E ℓ(f_θ(x + δ*), y)`` with
    ``δ* = PGD(x)`` in the Lp ball of radius ``eps`` (``norm`` 2 or inf).

    The attack is :func:`geomrobust.search.pgd` (``steps`` steps of size ``step_size``,
    default ``2.5 eps / steps``; uniform random start from the step key when
    ``random_start``), run with the parameters as constants; ``x + δ`` is clipped to
    ``bounds`` after every step. ``unroll=True`` unrolls the attack loop (same results; on the
    CPU 1.34x the training throughput of the rolled loop for 7 steps on a LeNet, with a longer
    compilation; see :func:`geomrobust.search.pgd`).
    """
    eps = _check_nonneg(eps, "eps")
    p = as_norm(norm)
    steps = _check_steps(steps)
    bounds = _check_bounds(bounds)
    if step_size is not None:
        step_size = _check_nonneg(step_size, "step_size", positive=True)
    check_unroll(unroll)

    def loss_fn(apply, params, x, y, key):
        frozen = jax.lax.stop_gradient(params)
        adv = pgd(
            lambda z: apply(frozen, z),
            x,
            y,
            key=key,
            eps=eps,
            norm=p,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            bounds=bounds,
            unroll=unroll,
        ).adversarial
        loss, aux = _ce_on(apply, params, jax.lax.stop_gradient(adv), y)
        return loss, {"loss": loss, **aux}

    return loss_fn


def fgsm_loss(eps: float, *, alpha: float | None = None, bounds: Bounds = None) -> LossFn:
    """Single-step FGSM training without random start (Goodfellow et al. 2015):
    ``x' = clip_box(x + α sign(∇ℓ(x)))`` with ``α = eps`` by default. Prone to catastrophic
    overfitting at large ``eps`` (Wong et al. 2020); see :func:`fgsm_rs_loss`.
    """
    eps = _check_nonneg(eps, "eps")
    alpha = eps if alpha is None else _check_nonneg(alpha, "alpha")
    bounds = _check_bounds(bounds)

    def loss_fn(apply, params, x, y, key):
        del key
        frozen = jax.lax.stop_gradient(params)
        adv = fgsm(lambda z: apply(frozen, z), x, y, eps=alpha, bounds=bounds).adversarial
        loss, aux = _ce_on(apply, params, jax.lax.stop_gradient(adv), y)
        return loss, {"loss": loss, **aux}

    return loss_fn


def fgsm_rs_loss(eps: float, *, alpha: float | None = None, bounds: Bounds = None) -> LossFn:
    """FGSM with random start (Wong, Rice, Kolter, "Fast is better than free", ICLR 2020).

    ``δ_0 ~ U[-ε, ε]^D`` (clipped so that ``x + δ_0`` is in the box), one FGSM step of size
    ``α`` (default ``1.25 ε``) from ``x + δ_0`` (:func:`geomrobust.search.fgsm`), then
    ``δ = clip(δ, -ε, ε)`` and ``x' = clip_box(x + δ)``. Linf only (as in the paper).
    """
    eps = _check_nonneg(eps, "eps")
    alpha = 1.25 * eps if alpha is None else _check_nonneg(alpha, "alpha")
    bounds = _check_bounds(bounds)

    def loss_fn(apply, params, x, y, key):
        frozen = jax.lax.stop_gradient(params)
        delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * jnp.asarray(eps, x.dtype)
        start = _clip(x + delta, bounds)
        step = fgsm(lambda z: apply(frozen, z), start, y, eps=alpha).adversarial
        adv = _clip(x + jnp.clip(step - x, -eps, eps), bounds)
        loss, aux = _ce_on(apply, params, jax.lax.stop_gradient(adv), y)
        return loss, {"loss": loss, **aux}

    return loss_fn


def nfgsm_loss(
    eps: float,
    *,
    noise: float | None = None,
    step: float | None = None,
    bounds: Bounds = None,
) -> LossFn:
    """N-FGSM (de Jorge et al., "Make some noise", NeurIPS 2022).

    ``η ~ U[-k, k]^D`` with ``k = noise`` (default ``2 ε``), one FGSM step of size ``step``
    (default ``ε``) from ``x + η``: ``x' = clip_box(x + η + α sign(∇ℓ(x + η)))``. The
    perturbation ``η + α sign(·)`` is **not** projected onto the ε-ball (its Linf norm can
    reach ``3 ε``); only the input is clipped to the data box ``bounds``. Linf only.
    """
    eps = _check_nonneg(eps, "eps")
    noise = 2.0 * eps if noise is None else _check_nonneg(noise, "noise")
    step = eps if step is None else _check_nonneg(step, "step")
    bounds = _check_bounds(bounds)

    def loss_fn(apply, params, x, y, key):
        frozen = jax.lax.stop_gradient(params)
        eta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * jnp.asarray(noise, x.dtype)
        adv = fgsm(lambda z: apply(frozen, z), x + eta, y, eps=step, bounds=bounds).adversarial
        loss, aux = _ce_on(apply, params, jax.lax.stop_gradient(adv), y)
        return loss, {"loss": loss, **aux}

    return loss_fn


def gradalign_loss(
    eps: float,
    lam: float,
    *,
    alpha: float | None = None,
    bounds: Bounds = None,
) -> LossFn:
    """FGSM training + GradAlign (Andriushchenko & Flammarion, NeurIPS 2020).

    ``L = ℓ(x_fgsm) + λ (1 - mean_i cos(∇ℓ(x_i), ∇ℓ(x_i + η_i)))``, ``η ~ U[-ε, ε]^D``
    (uniform in the Linf ε-ball, not clipped to the box, as in the authors' code),
    ``x_fgsm = clip_box(x + α sign(∇ℓ(x)))`` with ``α = ε`` by default (no random start).
    As in the reference implementation, ``∇ℓ(x)`` is treated as a constant and only
    ``∇ℓ(x + η)`` is differentiated w.r.t. the parameters; rows where either gradient is 0
    are left out of the mean. ``aux["cos"]`` is the mean cosine.
    """
    eps = _check_nonneg(eps, "eps")
    lam = _check_nonneg(lam, "lam")
    alpha = eps if alpha is None else _check_nonneg(alpha, "alpha")
    bounds = _check_bounds(bounds)

    def loss_fn(apply, params, x, y, key):
        fn = lambda z: apply(params, z)  # noqa: E731
        _, g1 = input_loss_grad(fn, x, y)
        g1 = jax.lax.stop_gradient(g1)
        adv = jax.lax.stop_gradient(_clip(x + alpha * jnp.sign(g1), bounds))
        eta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * jnp.asarray(eps, x.dtype)
        _, g2 = input_loss_grad(fn, x + eta, y)
        cos, ok = gradient_cosine(g1, g2)
        mean_cos = jnp.sum(jnp.where(ok, cos, 0)) / jnp.maximum(jnp.sum(ok), 1).astype(x.dtype)
        reg = 1 - mean_cos
        ce, aux = _ce_on(apply, params, adv, y)
        loss = ce + lam * reg
        return loss, {"loss": loss, "ce": ce, "reg": reg, "cos": mean_cos, **aux}

    return loss_fn


def cure_regularizer(logits_fn: Callable[[Array], Array], x: Array, y: Array, h) -> Array:
    """CURE's curvature penalty per example, ``||∇ℓ(x + h z) - ∇ℓ(x)||²`` ``(N,)``.

    ``z = sign(∇ℓ(x)) / ||sign(∇ℓ(x))||_2`` (unit L2 norm; ``z = 0`` where the gradient is
    0), treated as a constant (``stop_gradient``), as in Moosavi-Dezfooli et al. (CVPR 2019,
    section 4: "z is fixed"; the authors' code detaches it). It is the finite difference
    ``h² ||H z||²`` (``H = ∇²_x ℓ``) up to ``O(h³)``.
    """
    _, g = input_loss_grad(logits_fn, x, y)
    s = _rows(jnp.sign(g))
    n = jnp.sqrt(jnp.sum(s * s, axis=1, keepdims=True))
    z = jax.lax.stop_gradient((s / jnp.where(n > 0, n, 1)).reshape(x.shape))
    _, gh = input_loss_grad(logits_fn, x + jnp.asarray(h, x.dtype) * z, y)
    d = _rows(gh - g)
    return jnp.sum(d * d, axis=1)


def cure_loss(h: float, lam: float) -> LossFn:
    """CURE (Moosavi-Dezfooli, Fawzi, Uesato, Frossard, "Robustness via curvature
    regularization, and vice versa", CVPR 2019): clean cross-entropy plus
    ``λ · mean_i ||∇ℓ(x_i + h z_i) - ∇ℓ(x_i)||²`` (:func:`cure_regularizer`).

    The paper uses the squared norm (docs/methods.md); the authors' code uses the unsquared
    norm. ``x + h z`` is not clipped to the box (as in the paper). ``aux["reg"]`` is the mean
    penalty (without ``λ``).
    """
    h = _check_nonneg(h, "h", positive=True)
    lam = _check_nonneg(lam, "lam")

    def loss_fn(apply, params, x, y, key):
        del key
        fn = lambda z: apply(params, z)  # noqa: E731
        reg = cure_regularizer(fn, x, y, h).mean()
        ce, aux = _ce_on(apply, params, x, y)
        loss = ce + lam * reg
        return loss, {"loss": loss, "ce": ce, "reg": reg, **aux}

    return loss_fn


def llr_loss(
    eps: float,
    *,
    lam: float = 4.0,
    mu: float = 3.0,
    steps: int = 5,
    step_size: float | None = None,
    norm=jnp.inf,
    bounds: Bounds = None,
) -> LossFn:
    """Local linearity regularization (Qin et al., NeurIPS 2019, eq. (8)):

    ``L = ℓ(x) + λ γ(ε, x) + μ |δ*ᵀ ∇ℓ(x)|``, ``γ = |ℓ(x + δ*) - ℓ(x) - δ*ᵀ∇ℓ(x)|``,

    with ``δ*`` the maximizer of ``|g(δ; x)|`` over the ε-ball found by ``steps`` projected
    steps (:func:`geomrobust.measures.linearity_search`, random start from the step key) and
    held constant; ``ℓ(x)``, ``∇ℓ(x)`` and ``ℓ(x + δ*)`` are differentiated (double
    backprop). Defaults ``λ = 4``, ``μ = 3`` are the paper's CIFAR-10 values.
    """
    eps = _check_nonneg(eps, "eps")
    lam = _check_nonneg(lam, "lam")
    mu = _check_nonneg(mu, "mu")
    steps = _check_steps(steps)
    p = as_norm(norm)
    bounds = _check_bounds(bounds)

    def loss_fn(apply, params, x, y, key):
        fn = lambda z: apply(params, z)  # noqa: E731
        loss_i = per_example_loss(fn, y)
        l0, g0 = input_loss_grad(fn, x, y)
        delta = linearity_search(
            per_example_loss(lambda z: apply(jax.lax.stop_gradient(params), z), y),
            x,
            l0,
            g0,
            eps=eps,
            key=key,
            steps=steps,
            step_size=step_size,
            norm=p,
            bounds=bounds,
        )
        gap, lin = linearity_gap(loss_i, x, delta, l0, g0)
        gamma = gap.mean()
        grad_term = jnp.abs(lin).mean()
        ce, aux = _ce_on(apply, params, x, y)
        loss = ce + lam * gamma + mu * grad_term
        return loss, {"loss": loss, "ce": ce, "gamma": gamma, "grad_term": grad_term, **aux}

    return loss_fn


# --------------------------------------------------------------------------- registry

METHODS: dict[str, Callable[..., LossFn]] = {
    "standard": standard_loss,
    "pgd": pgd_at_loss,
    "fgsm": fgsm_loss,
    "fgsm_rs": fgsm_rs_loss,
    "nfgsm": nfgsm_loss,
    "gradalign": gradalign_loss,
    "cure": cure_loss,
    "llr": llr_loss,
}


def make_loss(method: str, **settings: Any) -> LossFn:
    """The loss of a training ``method`` by name, built with ``settings``.

    ``method`` is one of ``standard, pgd, fgsm, fgsm_rs, nfgsm, gradalign, cure, llr``;
    ``settings`` are the keyword arguments of the matching builder (``pgd`` ->
    :func:`pgd_at_loss`, ...). Settings that are ``None`` are dropped (builder default).
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        return METHODS[method](**settings)
    except TypeError as e:
        raise TypeError(f"bad settings {settings} for method {method!r}: {e}") from None
