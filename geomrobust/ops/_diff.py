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

__all__ = [
    "hvp",
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


def hvp(fn: Callable[[Array], Array], x: Array, v: Array | None = None):
    """Hessian-vector product ``∇²fn(x) v`` of a scalar ``fn``, forward-over-reverse.

    ``jvp`` of ``grad``: one forward-mode pass through the reverse-mode gradient, so the cost is
    a small constant times one gradient and the Hessian is never formed.

    Parameters
    ----------
    fn : callable ``x -> scalar``
    x : array, the point (any shape).
    v : array of the shape of ``x``, or None.

    Returns
    -------
    ``H v`` (shape of ``x``) if ``v`` is given; otherwise the linear operator ``v -> H v`` as a
    callable. The operator linearizes the gradient once, so applying it repeatedly (Lanczos,
    LOBPCG) does not recompute the forward pass of the gradient.
    """
    if v is not None:
        return jax.jvp(jax.grad(fn), (x,), (v,))[1]
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
