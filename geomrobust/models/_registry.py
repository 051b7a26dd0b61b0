"""Model registry: build a model from a name and a JSON-serializable configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
from flax import nnx

from ._layers import thaw_config
from ._lenet import LeNet
from ._mlp import MLP
from ._resnet import ResNet
from .torch import ARCHITECTURES, CONFIG_NAMES, build

__all__ = ["MODELS", "create_model", "model_config", "model_from_config", "register_model"]


def _torch_architecture(name: str):
    """The registry's constructor for a PyTorch-layout architecture (the weights usually come
    from :func:`geomrobust.models.from_torch`)."""

    def make(input_shape, num_classes, *, rngs, **config):
        shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        return build(name, num_classes, rngs=rngs, input_shape=shape, **config)

    make.__name__ = name
    return make


def _torch_config(cls):
    """The registry's constructor for the configuration a PyTorch-layout model records (its
    ``config["name"]``, which a checkpoint stores): ``cls(num_classes=..., **config)``."""

    def make(input_shape, num_classes, *, rngs, **config):
        shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        return cls(num_classes=num_classes, rngs=rngs, input_shape=shape, **config)

    make.__name__ = cls.__name__
    return make


MODELS: dict[str, type] = {
    "mlp": MLP,
    "lenet": LeNet,
    "resnet": ResNet,
    # PyTorch layouts (RobustBench, torchvision) for imported weights
    **{name: _torch_architecture(name) for name in ARCHITECTURES},
    # ... and the names their configurations record (what a checkpoint rebuilds)
    **{name: _torch_config(cls) for name, cls in CONFIG_NAMES.items()},
}


def register_model(name: str, cls: type) -> type:
    """Make ``cls`` available to :func:`create_model` (and checkpoints) under ``name``.

    ``cls(input_shape, num_classes, *, rngs, **config)`` must build the model and record its
    JSON-serializable configuration (``name``, ``input_shape``, ``num_classes`` and keyword
    arguments) in ``self.config``, frozen with :func:`geomrobust.models.freeze_config` (a
    hashable tuple of pairs: the configuration is part of the NNX graph definition, which
    is the compilation cache key of every program; a dict there makes every call compile).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    MODELS[name.lower()] = cls
    return cls


def _as_key(key) -> jax.Array:
    if isinstance(key, int):
        raise TypeError(
            f"key must be a JAX PRNG key (e.g. jax.random.key({key})), got the int {key}"
        )
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key, got {type(key).__name__}")
    return key


def create_model(
    name: str, input_shape: Sequence[int], num_classes: int, *, key: jax.Array, **config
) -> nnx.Module:
    """Build the registered model ``name`` with weights initialized from ``key``.

    Parameters
    ----------
    name : ``"mlp"``, ``"lenet"``, ``"resnet"`` or a name added with :func:`register_model`.
    input_shape : per-example input shape, e.g. ``(8, 8, 1)``.
    num_classes : number of logits.
    key : JAX PRNG key for the initialization (same key, same weights).
    **config : architecture options of the model class (widths, activation, ...), all
        JSON-serializable; the full configuration is kept in ``model.config`` (as hashable
        pairs; :func:`model_config` gives the dict).

    Returns
    -------
    An ``nnx.Module`` mapping ``(N, *input_shape)`` to ``(N, num_classes)`` logits.
    """
    if not isinstance(name, str) or name.lower() not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
    key = _as_key(key)
    cls = MODELS[name.lower()]
    try:
        return cls(input_shape, num_classes, rngs=nnx.Rngs(params=key), **config)
    except TypeError as e:
        raise TypeError(f"bad configuration for model {name!r}: {e}") from None


def model_config(model: nnx.Module) -> dict:
    """The JSON-serializable configuration that rebuilds ``model`` (a copy)."""
    config = getattr(model, "config", None)
    if isinstance(config, tuple):
        try:
            config = thaw_config(config)
        except (TypeError, ValueError):
            config = None
    if not isinstance(config, Mapping) or "name" not in config:
        raise TypeError(
            f"model of type {type(model).__name__} does not record a configuration "
            "(self.config with 'name', 'input_shape', 'num_classes'); build it with "
            "geomrobust.models.create_model or register its class with register_model"
        )
    return thaw_config(config)


def model_from_config(config: Mapping, *, key: jax.Array | None = None) -> nnx.Module:
    """Rebuild a model from :func:`model_config` output.

    With ``key=None`` the model is built abstractly (``nnx.eval_shape``: shapes and dtypes,
    no weights computed), ready for ``nnx.update`` with restored parameters.
    """
    config = dict(config)
    try:
        name = config.pop("name")
        input_shape = config.pop("input_shape")
        num_classes = config.pop("num_classes")
    except KeyError as e:
        raise ValueError(f"model configuration lacks the field {e.args[0]!r}: {config}") from None
    if key is None:
        return nnx.eval_shape(
            lambda: create_model(name, input_shape, num_classes, key=jax.random.key(0), **config)
        )
    return create_model(name, input_shape, num_classes, key=key, **config)
