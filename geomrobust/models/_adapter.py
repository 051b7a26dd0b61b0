"""Adapters from models to the package's classifier convention ``logits_fn(x) -> logits``.

Everything downstream of the model layer (operators, searches, measurements) takes a plain
JAX callable ``(N, *input_shape) -> (N, K)``. These adapters turn a Flax NNX module, a
Linen-style ``apply(params, x)`` or a plain function into one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

__all__ = ["as_logits_fn", "pure_apply"]


def pure_apply(model: nnx.Module) -> tuple[Callable, Any]:
    """Split an NNX module into a pure function and its parameters.

    Returns ``(apply, params)`` with ``apply(params, x) -> logits``: pure, jittable,
    differentiable with respect to both ``params`` (an ``nnx.State`` pytree of the module's
    ``nnx.Param`` variables) and ``x``. Non-parameter state (if any) is captured as a
    constant. The module is put in evaluation mode (``model.eval()``: deterministic dropout,
    running statistics); the package's own models have no such layers, so the same ``apply``
    serves training. The module itself is not modified.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)
    copy.eval()
    graphdef, params, rest = nnx.split(copy, nnx.Param, ...)
    # New containers: later in-place updates of ``model`` do not reach this snapshot.
    params = jax.tree.map(lambda a: a, params)

    def apply(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    return apply, params


def as_logits_fn(obj, params=None) -> Callable[[jax.Array], jax.Array]:
    """A pure ``logits_fn(x) -> logits`` from a model in any of three forms.

    * an NNX module (``params`` must be None): closes over a snapshot of its parameters, in
      evaluation mode (see :func:`pure_apply`);
    * a Linen-style function ``apply(params, x)`` (e.g. ``linen_module.apply``) or a Linen
      module, together with its ``params`` (the variables dict);
    * a plain function ``x -> logits`` (``params`` None): returned unchanged.
    """
    if isinstance(obj, nnx.Module):
        if params is not None:
            raise TypeError("params must be None for an NNX module (it holds its parameters)")
        apply, p = pure_apply(obj)
        return lambda x: apply(p, x)
    if params is not None:
        apply = getattr(obj, "apply", obj)  # a Linen module or an apply function
        if not callable(apply):
            raise TypeError(f"obj must be callable as apply(params, x), got {type(obj).__name__}")
        return lambda x: apply(params, x)
    if not callable(obj):
        raise TypeError(
            f"obj must be an NNX module, an apply function (with params) or a function "
            f"x -> logits, got {type(obj).__name__}"
        )
    return obj
