"""Differential operators on classifiers and scalar functions of one input.

Everything here is written for ONE example and is transformable (jit, vmap, grad).
A classifier follows the batch convention ``logits_fn(x) -> logits`` with ``x`` of shape
``(N, *input_shape)`` and logits ``(N, K)``; :func:`single_example` turns it into a function
of one example.

References
----------
Forward-over-reverse Hessian-vector products: Pearlmutter, "Fast exact multiplication by the
Hessian", Neural Computation 6(1), 1994; the JAX autodiff cookbook.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from geomrobust._deprecation import deprecated_alias

__all__ = [
    "hvp",
    "hvp_operator",
    "input_grad",
    "input_hessian",
    "logit_difference",
    "logit_jacobian",
    "single_example",
]


def single_example(logits_fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Turn a batched classifier ``(N, *s) -> (N, K)`` into ``(*s,) -> (K,)``."""

    def fn(xi: Array) -> Array:
        return logits_fn(xi[None])[0]

    return fn


def input_grad(fn: Callable[[Array], Array], x: Array) -> Array:
    """Gradient ``∇fn(x)`` of a scalar function of one input, same shape as ``x``."""
    return jax.grad(fn)(x)


def hvp(fn: Callable[[Array], Array], x: Array, v: Array | None = None) -> Array:
    """Hessian-vector product ``∇²fn(x) v`` of a scalar ``fn``, forward-over-reverse.

    ``jvp`` of ``grad``: one forward-mode pass through the reverse-mode gradient, so the cost is
    a small constant times one gradient and the Hessian is never formed.

    Parameters
    ----------
    fn : callable ``x -> scalar``
    x : array, the point (any shape).
    v : array of the shape of ``x``. (``v=None``, the operator, is deprecated: use
        :func:`hvp_operator`.)

    Returns
    -------
    ``H v``, shape of ``x``.
    """
    if v is None:
        deprecated_alias("hvp(fn, x) without v", "hvp_operator(fn, x)")
        return hvp_operator(fn, x)
    return jax.jvp(jax.grad(fn), (x,), (v,))[1]


def hvp_operator(fn: Callable[[Array], Array], x: Array) -> Callable[[Array], Array]:
    """The Hessian of a scalar ``fn`` at ``x`` as a linear operator ``v -> ∇²fn(x) v``.

    The operator linearizes the gradient once (``jax.linearize``), so applying it repeatedly
    (Lanczos, LOBPCG, Hutchinson) does not recompute the forward pass of the gradient; each
    product equals :func:`hvp` ``(fn, x, v)``.
    """
    _, lin = jax.linearize(jax.grad(fn), x)
    return lin


def logit_jacobian(logits_fn: Callable[[Array], Array], x: Array) -> Array:
    """Jacobian of the logits of ONE example ``x`` (shape ``input_shape``): ``(K, *input_shape)``.

    One forward pass and one vmapped VJP over one-hot cotangents (``jax.jacrev``).
    """
    return jax.jacrev(single_example(logits_fn))(x)


def logit_difference(logits_fn: Callable[[Array], Array], y, k) -> Callable[[Array], Array]:
    """``F_k(x) = f_k(x) - f_y(x)`` for one example: positive on the adversarial side.

    ``y`` and ``k`` may be traced integers, so this composes with ``vmap`` over labels.
    """
    f = single_example(logits_fn)

    def F(xi: Array) -> Array:
        logits = f(xi)
        return logits[k] - logits[y]

    return F


def input_hessian(fn: Callable[[Array], Array], x: Array) -> Array:
    """Dense Hessian of a scalar ``fn`` at one input, as a ``(D, D)`` matrix, ``D = x.size``.

    For small problems and tests only: memory and time grow as ``D²``.
    """
    shape = x.shape

    def flat_fn(z: Array) -> Array:
        return fn(z.reshape(shape))

    return jax.hessian(flat_fn)(jnp.ravel(x))
