"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from ._layers import (
    as_shape,
    check_num_classes,
    freeze_config,
    get_activation,
    init_kwargs,
    int_tuple,
    resolve_dtype,
)

__all__ = ["MLP"]


class MLP(nnx.Module):
    """Fully connected classifier ``(N, *input_shape) -> (N, num_classes)``.

    ``x`` is flattened to ``(N, D)``, then ``h_{l+1} = σ(h_l W_l + b_l)`` for each hidden
    width, and a final affine layer gives the logits.

    Parameters
    ----------
    input_shape : per-example shape, e.g. ``(8, 8, 1)``.
    num_classes : number of logits ``K``.
    widths : hidden layer widths (``()`` gives a linear classifier).
    activation : name of the nonlinearity (see ``geomrobust.models.ACTIVATIONS``); ``relu``
        is piecewise linear, use a smooth one for curvature measurements.
    param_dtype : ``"float32"`` or ``"float64"``.
    init : ``"flax"`` (default) or ``"pytorch"`` (PyTorch's ``nn.Linear`` initialisation,
        :func:`~geomrobust.models.init_kwargs`); recorded in the configuration only when
        not the default.
    rngs : ``nnx.Rngs`` used to initialize the weights.

    The constructor arguments are recorded in ``self.config`` (JSON-serializable), from
    which :func:`geomrobust.models.create_model` rebuilds the same architecture.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (256, 128),
        activation: str = "relu",
        param_dtype: str = "float32",
        init: str = "flax",
        rngs: nnx.Rngs,
    ):
        shape = as_shape(input_shape)
        num_classes = check_num_classes(num_classes)
        widths = int_tuple(widths, "widths") if len(tuple(widths)) else ()
        self.act = get_activation(activation)
        pdt = resolve_dtype(param_dtype)
        sizes = [int(np.prod(shape)), *widths, num_classes]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, param_dtype=pdt, rngs=rngs, **init_kwargs(init, a))
                for a, b in itertools.pairwise(sizes)
            ]
        )
        self.config = freeze_config(
            {
                "name": "mlp",
                "input_shape": list(shape),
                "num_classes": num_classes,
                "widths": list(widths),
                "activation": activation,
                **({} if init == "flax" else {"init": init}),
                "param_dtype": param_dtype,
            }
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h
