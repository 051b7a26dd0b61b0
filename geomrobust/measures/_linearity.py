"""Local linearity of the loss in input space (Qin et al., NeurIPS 2019).

Qin, Martens, Gowal, Krishnan, Dvijotham, Fawzi, De, Stanforth, Kohli, "Adversarial
robustness through local linearization", NeurIPS 2019: the deviation of the cross-entropy
from its first-order Taylor expansion,

    g(δ; x) = ℓ(x + δ) - ℓ(x) - δᵀ ∇ℓ(x),        γ(ε, x) = max_{||δ|| <= ε} |g(δ; x)|,

is maximized over the ε-ball by a few projected (sign-)gradient steps, as in the paper (the
maximizer is then used by the LLR regularizer, :func:`geomrobust.train.llr_loss`).
``γ`` is a lower bound of the true maximum (a local search); the maximizing ``δ`` is
returned so that the reported value can be re-evaluated.
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

from .._validation import check_batch, check_classifier, check_labels
from ..models import as_classifier
from ..ops._norms import as_norm, project_ball

__all__ = [
    "LocalLinearity",
    "linearity_gap",
    "linearity_search",
    "local_linearity",
    "per_example_loss",
]


class LocalLinearity(NamedTuple):
    """gamma ``(N,)``: ``|g(δ*; x)|``; grad_term ``(N,)``: ``|δ*ᵀ ∇ℓ(x)|``;
    perturbation ``(N, *s)``: the maximizer ``δ*`` found (inside the ball and the box);
    loss ``(N,)``: the clean cross-entropy ``ℓ(x)``."""

    gamma: Array
    grad_term: Array
    perturbation: Array
    loss: Array


def per_example_loss(logits_fn: Callable[[Array], Array], y: Array) -> Callable:
    """``x -> (N,)`` per-example cross-entropy ``ℓ_i = -log softmax(f(x_i))_{y_i}``."""

    def loss(x):
        logp = jax.nn.log_softmax(logits_fn(x), axis=-1)
        return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]

    return loss


def _uniform_ball(key, shape, eps, p, dtype):
    """Uniform in the Linf cube or the L2 ball of radius ``eps``, one draw per row."""
    if math.isinf(p):
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * eps
    k1, k2 = jax.random.split(key)
    d = math.prod(shape[1:])
    g = jax.random.normal(k1, (shape[0], d), dtype)
    g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), jnp.finfo(dtype).tiny)
    rad = jax.random.uniform(k2, (shape[0], 1), dtype) ** (1.0 / d)
    return (g * rad * eps).reshape(shape)


def _project(delta, x, eps, p, bounds):
    flat = project_ball(delta.reshape(delta.shape[0], -1), eps, p).reshape(delta.shape)
    if bounds is not None:
        flat = jnp.clip(x + flat, bounds[0], bounds[1]) - x
    return flat


class LinearityGap(NamedTuple):
    """gap ``(N,)`` ``|ℓ(x + δ) - ℓ(x) - δᵀ∇ℓ(x)|``; linear ``(N,)`` ``δᵀ∇ℓ(x)``."""

    gap: Array
    linear: Array


def linearity_gap(
    loss_fn: Callable[[Array], Array], x: Array, delta: Array, loss0: Array, grad0: Array
) -> LinearityGap:
    """``|g(δ; x)| = |ℓ(x + δ) - ℓ(x) - δᵀ∇ℓ(x)|`` and ``δᵀ∇ℓ(x)``, both ``(N,)``.

    ``loss_fn`` maps a batch to per-example losses; ``loss0 = ℓ(x)`` and ``grad0 = ∇ℓ(x)``.
    Shared by :func:`local_linearity` and the LLR training loss.
    """
    lin = jnp.sum(delta * grad0, axis=tuple(range(1, x.ndim)))
    return LinearityGap(jnp.abs(loss_fn(x + delta) - loss0 - lin), lin)


def linearity_search(
    loss_fn: Callable[[Array], Array],
    x: Array,
    loss0: Array,
    grad0: Array,
    *,
    eps,
    key: Array,
    steps: int = 10,
    step_size=None,
    norm=jnp.inf,
    bounds: tuple | None = None,
) -> Array:
    """The building block: ``δ*`` maximizing ``|g(δ; x)|`` by projected ascent.

    ``loss_fn`` maps a batch to per-example losses ``(N,)``; ``loss0 = ℓ(x)`` ``(N,)`` and
    ``grad0 = ∇ℓ(x)`` ``(N, *s)`` are given (the caller usually has them already).
    ``δ_0`` uniform in the ball (``key``), then ``steps`` steps
    ``δ <- Π(δ + α u)``, ``u = sign(∇_δ |g|)`` (Linf) or ``∇_δ|g| / ||∇_δ|g|||`` (L2),
    ``α = step_size`` (default ``2.5 ε / steps``), ``Π`` the projection on the ball and on the
    box ``bounds`` (on ``x + δ``). Pure and transformable (``lax.fori_loop``); the result
    carries no gradient (``stop_gradient``).
    """
    p = as_norm(norm)
    dtype = x.dtype
    loss0 = jax.lax.stop_gradient(loss0)
    grad0 = jax.lax.stop_gradient(grad0)
    eps = jnp.asarray(eps, dtype)
    alpha = 2.5 * eps / max(int(steps), 1) if step_size is None else jnp.asarray(step_size, dtype)
    axes = tuple(range(1, x.ndim))

    def gap(delta):
        return jnp.abs(loss_fn(x + delta) - loss0 - jnp.sum(delta * grad0, axis=axes))

    def body(_, delta):
        g = jax.grad(lambda d: jnp.sum(gap(d)))(delta)
        if math.isinf(p):
            u = jnp.sign(g)
        else:
            n = jnp.sqrt(jnp.sum(g * g, axis=axes, keepdims=True))
            u = g / jnp.where(n > 0, n, 1)
        return _project(delta + alpha * u, x, eps, p, bounds)

    delta = _project(_uniform_ball(key, x.shape, eps, p, dtype), x, eps, p, bounds)
    delta = jax.lax.fori_loop(0, int(steps), body, delta)
    return jax.lax.stop_gradient(delta)


def local_linearity(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    eps,
    key: Array,
    steps: int = 10,
    step_size=None,
    norm=jnp.inf,
    bounds: tuple | None = None,
) -> LocalLinearity:
    """Local linearity ``γ(ε, x) = max_{||δ||_p <= ε} |ℓ(x+δ) - ℓ(x) - δᵀ∇ℓ(x)|``.

    Qin et al. 2019, eq. (5)-(6); ``ℓ`` the cross-entropy of label ``y``. The maximum is
    searched with :func:`linearity_search` (``steps`` projected steps from a random start).
    Note that ``γ = 0`` only for a loss that is affine in ``x``; cross-entropy is not affine
    even for an affine classifier (for two classes ``ℓ = softplus(F)`` with ``F`` affine, and
    ``γ`` is the gap of a convex function to its tangent, largest at a vertex of the ball).

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)`` (any form :func:`geomrobust.as_classifier`
        accepts).
    x : ``(N, *s)`` floating; y : ``(N,)`` integer labels.
    eps : radius of the ball; norm : 2 or inf.
    key : PRNG key of the random start.
    steps, step_size : the ascent (default ``α = 2.5 ε / steps``).
    bounds : optional box ``(lo, hi)`` for ``x + δ``.

    Returns
    -------
    LocalLinearity(gamma, grad_term, perturbation, loss), dtype of ``x``.
    """
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    y = jnp.asarray(y)
    k = check_classifier(clf, x)
    check_labels(y, k, x.shape[0], "y")
    p = as_norm(norm)
    if not (math.isinf(p) or p == 2.0):
        raise ValueError(f"norm must be 2 or inf, got {norm!r}")
    if not (np.ndim(eps) == 0 and float(eps) >= 0):
        raise ValueError(f"eps must be a scalar >= 0, got {eps!r}")
    if not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    x = jnp.asarray(x)
    dtype = x.dtype
    lo, hi = (
        (jnp.zeros((), dtype),) * 2 if bounds is None else (jnp.asarray(b, dtype) for b in bounds)
    )
    step = None if step_size is None else jnp.asarray(step_size, dtype)
    return _local_linearity_program(
        clf, x, y, key, jnp.asarray(eps, dtype), step, lo, hi, p=p, steps=int(steps),
        has_bounds=bounds is not None,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("p", "steps", "has_bounds"))
def _local_linearity_program(clf, x, y, key, eps, step_size, lo, hi, *, p, steps, has_bounds):
    """:func:`local_linearity` on a batch, compiled once per architecture and settings."""
    loss_fn = per_example_loss(clf, y)
    loss0, vjp = jax.vjp(loss_fn, x)
    (grad0,) = vjp(jnp.ones_like(loss0))
    delta = linearity_search(
        loss_fn,
        x,
        loss0,
        grad0,
        eps=eps,
        key=key,
        steps=steps,
        step_size=step_size,
        norm=p,
        bounds=(lo, hi) if has_bounds else None,
    )
    gamma, lin = linearity_gap(loss_fn, x, delta, loss0, grad0)
    return LocalLinearity(gamma, jnp.abs(lin), delta, loss0)
