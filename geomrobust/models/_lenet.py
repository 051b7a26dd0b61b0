"""LeNet-style convolutional network, adapted to small inputs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from ._layers import (
    as_image_shape,
    as_shape,
    check_num_classes,
    conv2d_im2col,
    freeze_config,
    get_activation,
    init_kwargs,
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
    -> dense(h2) -> σ -> dense(K)`` (LeCun et al., 1998). By default convolutions use SAME
    padding and pooling is 2×2 / stride 2 with SAME padding, so the network runs on any image
    size (8×8 -> 4×4 -> 2×2, 28×28 -> 7×7, 32×32 -> 8×8) rather than only 32×32.
    ``padding="VALID", init="pytorch"`` is the classic LeNet-5 of the PyTorch code of the NADs
    paper (32×32 -> 28 -> 14 -> 10 -> 5, a 400-wide flatten, PyTorch's initialisation).

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
    padding : convolution padding, ``"SAME"`` (default) or ``"VALID"``.
    init : ``"flax"`` (default: LeCun-normal kernels, zero biases) or ``"pytorch"`` (uniform
        on ``±1/sqrt(fan_in)``, kernels and biases; :func:`~geomrobust.models.init_kwargs`).
    param_dtype : ``"float32"`` or ``"float64"``.
    conv : how the convolutions are computed, the same function either way: ``"xla"``
        (default, ``lax.conv``), ``"im2col"`` (one matrix product over shifted views,
        :func:`~geomrobust.models.conv2d_im2col`) or ``"auto"`` (``"im2col"`` when the default
        backend is the CPU). On the CPU im2col trains a 32×32 LeNet 5-11× faster
        (``python -m benchmarks.bench_conv``) but makes larger programs that take longer to
        compile: the default report runs slower with it, so it is an opt-in for long training
        loops (the Fourier accuracy map script uses it). Not part of the configuration: a
        checkpoint does not depend on it.
    rngs : ``nnx.Rngs``.

    ``padding`` and ``init`` enter ``self.config`` only when they differ from the defaults,
    so the configurations (and checkpoints) of earlier versions are unchanged.
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
        padding: str = "SAME",
        init: str = "flax",
        param_dtype: str = "float32",
        conv: str = "xla",
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
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        if conv not in ("auto", "xla", "im2col"):
            raise ValueError(f"conv must be 'auto', 'xla' or 'im2col', got {conv!r}")
        (kernel_size,) = int_tuple(kernel_size, "kernel_size")
        self.act = get_activation(activation)
        self.pool = pool
        self.padding = padding
        self.conv_impl = conv
        self.input_hwc = (h, w, c)
        pdt = resolve_dtype(param_dtype)
        k = (kernel_size, kernel_size)
        shrink = 0 if padding == "SAME" else kernel_size - 1
        sides = []
        for n in (h, w):
            n2 = _pooled(n - shrink) - shrink
            if n - shrink < 1 or n2 < 1:
                raise ValueError(
                    f"LeNet with padding='VALID' and kernel_size={kernel_size} needs images of "
                    f"at least {3 * kernel_size - 2}×{3 * kernel_size - 2}, got {h}×{w}; use "
                    "padding='SAME' or a smaller kernel_size"
                )
            sides.append(_pooled(n2))
        flat = sides[0] * sides[1] * channels[1]
        fans = (kernel_size**2 * c, kernel_size**2 * channels[0])  # inputs of one output unit
        self.conv1 = nnx.Conv(c, channels[0], k, padding=padding, param_dtype=pdt, rngs=rngs,
                              **init_kwargs(init, fans[0]))  # fmt: skip
        self.conv2 = nnx.Conv(channels[0], channels[1], k, padding=padding, param_dtype=pdt,
                              rngs=rngs, **init_kwargs(init, fans[1]))  # fmt: skip
        self.fc1 = nnx.Linear(flat, hidden[0], param_dtype=pdt, rngs=rngs,
                              **init_kwargs(init, flat))  # fmt: skip
        self.fc2 = nnx.Linear(hidden[0], hidden[1], param_dtype=pdt, rngs=rngs,
                              **init_kwargs(init, hidden[0]))  # fmt: skip
        self.out = nnx.Linear(hidden[1], num_classes, param_dtype=pdt, rngs=rngs,
                              **init_kwargs(init, hidden[1]))  # fmt: skip
        extra = {}
        if padding != "SAME":
            extra["padding"] = padding
        if init != "flax":
            extra["init"] = init
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
                **extra,
                "param_dtype": param_dtype,
            }
        )

    def _conv(self, layer: nnx.Conv, x: jax.Array) -> jax.Array:
        impl = self.conv_impl
        if impl == "auto":
            impl = "im2col" if jax.default_backend() == "cpu" else "xla"
        if impl == "xla":
            return layer(x)
        bias = None if layer.bias is None else layer.bias[...]
        return conv2d_im2col(x, layer.kernel[...], bias, self.padding)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], *self.input_hwc)
        x = pool2d(self.act(self._conv(self.conv1, x)), self.pool)
        x = pool2d(self.act(self._conv(self.conv2, x)), self.pool)
        x = x.reshape(x.shape[0], -1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.out(x)
