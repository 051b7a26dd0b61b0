"""Adapters from NNX modules to pure functions: ``pure_apply`` (training) and ``as_logits_fn``.

Measurements take any classifier (see :mod:`geomrobust.models._classifier`); training takes
``apply(params, x)`` and its ``params``, which :func:`pure_apply` splits from an NNX module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx

from geomrobust._deprecation import deprecated_alias

from ._classifier import Classifier, _Identity, _Key, as_classifier

__all__ = ["as_logits_fn", "pure_apply"]


class PureApply(NamedTuple):
    """apply: ``apply(params, x) -> logits``, pure; params: the module's ``nnx.Param`` state."""

    apply: Callable
    params: Any


def pure_apply(model: nnx.Module) -> PureApply:
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
    return PureApply(_ParamsApply(graphdef, jax.tree.map(lambda a: a, rest)), params)


class _ParamsApply:
    """``apply(params, x) = nnx.merge(graphdef, params, rest)(x)``, hashable: equal for modules
    of the same architecture (and the same non-parameter state object), so a jitted program
    with ``apply`` static compiles once per architecture."""

    __slots__ = ("__weakref__", "graphdef", "key", "rest")

    def __init__(self, graphdef, rest):
        self.graphdef, self.rest = graphdef, rest
        self.key = (_Key(graphdef), _Identity(rest) if jax.tree.leaves(rest) else None)

    def __call__(self, params, x):
        return nnx.merge(self.graphdef, params, self.rest)(x)

    def __eq__(self, other):
        return type(other) is _ParamsApply and self.key == other.key

    def __hash__(self):
        return hash(("params-apply", self.key))


def as_logits_fn(obj, params=None) -> Classifier:
    """The classifier of ``obj`` as a callable ``x -> logits``: :func:`as_classifier`.

    Deprecated (docs/api.md): use :func:`as_classifier`, which returns the same pytree.
    """
    deprecated_alias("geomrobust.models.as_logits_fn", "geomrobust.as_classifier")
    return as_classifier(obj, params)
