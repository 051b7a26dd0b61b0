"""Loss builders: the objective a training step minimizes.

A loss function has the signature ``loss_fn(apply, params, x, y, key) -> (loss, aux)``:
``apply(params, x) -> logits`` is the model, ``x`` a batch ``(B, *input_shape)``, ``y``
integer labels ``(B,)``, ``key`` a PRNG key for this step (explicit, so stochastic
objectives such as PGD adversarial training with a random start plug in unchanged), ``loss``
a scalar to minimize and ``aux`` a dict of scalar metrics averaged per epoch by the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

__all__ = ["LossFn", "cross_entropy_loss", "per_example_metrics"]


class LossFn(Protocol):
    def __call__(
        self, apply: Callable, params: Any, x: jax.Array, y: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...


class ExampleMetrics(NamedTuple):
    """loss ``(N,)`` per-example cross-entropy; correct ``(N,)`` ``argmax f = y``."""

    loss: jax.Array
    correct: jax.Array


def per_example_metrics(logits: jax.Array, y: jax.Array) -> ExampleMetrics:
    """Cross-entropy ``ℓ_i = -log softmax(f(x_i))_{y_i}`` and correctness ``argmax f = y``."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, axis=-1) == y
    return ExampleMetrics(loss, correct)


def cross_entropy_loss(
    apply: Callable, params: Any, x: jax.Array, y: jax.Array, key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Standard training: mean cross-entropy of the clean batch, ``(1/B) Σ_i ℓ(f(x_i), y_i)``.

    ``key`` is unused (the objective is deterministic). ``aux`` holds ``loss`` and
    ``accuracy`` of the batch.
    """
    del key
    loss, correct = per_example_metrics(apply(params, x), y)
    loss = loss.mean()
    return loss, {"loss": loss, "accuracy": correct.mean(dtype=loss.dtype)}
