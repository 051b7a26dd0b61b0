"""Per-example operators over a batch, from one forward pass and one batched VJP.

With a classifier whose examples do not interact (no batch statistics at evaluation), the
gradient of ``sum_n c_n · f(x)_n`` with respect to ``x`` holds in row ``n`` the VJP of example
``n`` alone; vmapping the pullback over cotangent sets gives every class gradient of every
example from ONE forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ..engine import CHUNK_SIZE
from ._chunk import chunked_vmap
from ._diff import hvp, logit_difference

__all__ = [
    "batch_class_gradients",
    "batch_hvp",
    "batch_logit_difference_grads",
    "batch_logit_jacobian",
]


class LogitGradients(NamedTuple):
    """logits ``(N, K)``; grads ``(N, C, *s)`` the gradients of the chosen logits."""

    logits: Array
    grads: Array


class LogitDifference(NamedTuple):
    """value ``(N,)`` ``F_k = f_k - f_y``; grad ``(N, *s)`` its input gradient."""

    value: Array
    grad: Array


def batch_class_gradients(
    logits_fn: Callable[[Array], Array], x: Array, classes: Array
) -> LogitGradients:
    """Logits and the gradients of chosen logits, per example.

    Parameters
    ----------
    logits_fn : batched classifier ``(N, *s) -> (N, K)``.
    x : ``(N, *s)``.
    classes : ``(N, C)`` integer classes whose logit gradients are wanted for each example.

    Returns
    -------
    logits : ``(N, K)``
    grads : ``(N, C, *s)`` with ``grads[n, c] = ∇_x f_{classes[n, c]}(x_n)``.
    """
    logits, pullback = jax.vjp(logits_fn, x)
    k = logits.shape[-1]
    cot = jax.nn.one_hot(classes, k, dtype=logits.dtype)  # (N, C, K)
    grads = jax.vmap(lambda c: pullback(c)[0], in_axes=1, out_axes=1)(cot)
    return LogitGradients(logits, grads)


def batch_logit_jacobian(logits_fn: Callable[[Array], Array], x: Array) -> LogitGradients:
    """Logits ``(N, K)`` and Jacobians ``(N, K, *s)`` of a batch, one forward + one batched VJP."""
    n = x.shape[0]
    k = jax.eval_shape(logits_fn, x).shape[-1]
    classes = jnp.broadcast_to(jnp.arange(k), (n, k))
    return batch_class_gradients(logits_fn, x, classes)


def batch_logit_difference_grads(
    logits_fn: Callable[[Array], Array], x: Array, y: Array, k: Array
) -> LogitDifference:
    """``F_k(x_n) = f_k - f_y`` and its gradient for each example: ``(N,)`` and ``(N, *s)``."""
    logits, grads = batch_class_gradients(logits_fn, x, jnp.stack([k, y], axis=1))
    idx = jnp.arange(x.shape[0])
    F = (logits[idx, k] - logits[idx, y]).astype(x.dtype)  # in the dtype of the search
    return LogitDifference(F, grads[:, 0] - grads[:, 1])


def batch_hvp(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    k: Array,
    v: Array,
    *,
    chunk_size: int | None = CHUNK_SIZE,
) -> Array:
    """``∇²F_k(x_n) v_n`` for each example (forward-over-reverse), ``(N, *s)``."""

    def one(xi, yi, ki, vi):
        return hvp(logit_difference(logits_fn, yi, ki), xi, vi)

    return chunked_vmap(one, chunk_size=chunk_size)(x, y, k, v)
