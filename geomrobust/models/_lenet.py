"""LeNet-style convolutional network, adapted to small inputs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from ._layers import (
    as_image_shape,
    as_shape,
    check_num_classes,
    freeze_config,
    get_activation,
    int_tuple,
    pool2d,
    resolve_dtype,
)

__all__ = ["LeNet"]


def _pooled(n: int) -> int:
    return -(-n // 2)  # SAME-padded 2x2 pooling with stride 2: ceil(n / 2)


class LeNet(nnx.Module):
    """LeNet-5 layout: conv-pool-conv-pool-dense-dense-dense on NHWC images.

    ``conv(k×k, c1) -> σ -> pool -> conv(k×k, c2) -> σ -> pool -> flatten -> dense(h1) -> σ
    -> dense(h2) -> σ -> dense(K)`` (LeCun et al., 1998). Convolutions use SAME padding and
    pooling is 2×2 / stride 2 with SAME padding, so the network runs on any image size
    (8×8 -> 4×4 -> 2×2, 28×28 -> 7×7, 32×32 -> 8×8) rather than only 32×32.

    Parameters
    ----------
    input_shape : ``(H, W, C)`` (``(H, W)`` means one channel).
    num_classes : number of logits ``K``.
    channels : the two convolution widths ``(c1, c2)``.
    hidden : the two dense widths ``(h1, h2)``.
    kernel_size : convolution window ``k``.
    activation : nonlinearity name; ``relu`` by default (piecewise linear).
    pool : ``"max"`` (default) or ``"avg"``; max pooling is not differentiable everywhere,
        use ``pool="avg"`` with a smooth activation for a C² network (curvature work).
    param_dtype : ``"float32"`` or ``"float64"``.
    rngs : ``nnx.Rngs``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        kernel_size: int = 5,
        activation: str = "relu",
        pool: str = "max",
        param_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        h, w, c = as_image_shape(input_shape, "LeNet")
        num_classes = check_num_classes(num_classes)
        channels = int_tuple(channels, "channels")
        hidden = int_tuple(hidden, "hidden")
        if len(channels) != 2 or len(hidden) != 2:
            raise ValueError(
                f"LeNet needs two conv widths and two dense widths, got channels={channels}, "
                f"hidden={hidden}"
            )
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        (kernel_size,) = int_tuple(kernel_size, "kernel_size")
        self.act = get_activation(activation)
        self.pool = pool
        self.input_hwc = (h, w, c)
        pdt = resolve_dtype(param_dtype)
        k = (kernel_size, kernel_size)
        self.conv1 = nnx.Conv(c, channels[0], k, padding="SAME", param_dtype=pdt, rngs=rngs)
        self.conv2 = nnx.Conv(
            channels[0], channels[1], k, padding="SAME", param_dtype=pdt, rngs=rngs
        )
        flat = _pooled(_pooled(h)) * _pooled(_pooled(w)) * channels[1]
        self.fc1 = nnx.Linear(flat, hidden[0], param_dtype=pdt, rngs=rngs)
        self.fc2 = nnx.Linear(hidden[0], hidden[1], param_dtype=pdt, rngs=rngs)
        self.out = nnx.Linear(hidden[1], num_classes, param_dtype=pdt, rngs=rngs)
        self.config = freeze_config(
            {
                "name": "lenet",
                "input_shape": list(as_shape(input_shape)),
                "num_classes": num_classes,
                "channels": list(channels),
                "hidden": list(hidden),
                "kernel_size": kernel_size,
                "activation": activation,
                "pool": pool,
                "param_dtype": param_dtype,
            }
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], *self.input_hwc)
        x = pool2d(self.act(self.conv1(x)), self.pool)
        x = pool2d(self.act(self.conv2(x)), self.pool)
        x = x.reshape(x.shape[0], -1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.out(x)
