"""ResNet with basic blocks (ResNet-18 layout), GroupNorm instead of BatchNorm."""

from __future__ import annotations

import math
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
    resolve_dtype,
)

__all__ = ["ResNet"]

_NORMS = ("group", "layer", "none")


def _norm(kind: str, channels: int, groups: int, pdt, rngs: nnx.Rngs):
    if kind == "group":
        # gcd(C, groups) always divides C, so any width works.
        g = math.gcd(channels, groups)
        return nnx.GroupNorm(channels, num_groups=g, param_dtype=pdt, rngs=rngs)
    if kind == "layer":
        return nnx.LayerNorm(channels, param_dtype=pdt, rngs=rngs)
    return None


class BasicBlock(nnx.Module):
    """``σ(norm(conv(σ(norm(conv(x))))) + shortcut(x))`` with 3×3 convolutions."""

    def __init__(self, c_in, c_out, stride, act, norm, groups, pdt, rngs):
        conv = dict(use_bias=norm == "none", param_dtype=pdt, rngs=rngs)
        self.act = act
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding="SAME", **conv)
        self.norm1 = _norm(norm, c_out, groups, pdt, rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding="SAME", **conv)
        self.norm2 = _norm(norm, c_out, groups, pdt, rngs)
        if stride != 1 or c_in != c_out:
            self.proj = nnx.Conv(c_in, c_out, (1, 1), strides=stride, padding="SAME", **conv)
            self.proj_norm = _norm(norm, c_out, groups, pdt, rngs)
        else:
            self.proj = None
            self.proj_norm = None

    def __call__(self, x):
        h = self.conv1(x)
        h = self.act(h if self.norm1 is None else self.norm1(h))
        h = self.conv2(h)
        h = h if self.norm2 is None else self.norm2(h)
        s = x
        if self.proj is not None:
            s = self.proj(x)
            s = s if self.proj_norm is None else self.proj_norm(s)
        return self.act(h + s)


class ResNet(nnx.Module):
    """Residual network of basic blocks (He et al., CVPR 2016), CIFAR-style stem.

    ``conv3×3(w) -> norm -> σ``, then stages ``i = 0..S-1`` of ``blocks[i]`` basic blocks with
    ``w·2^i`` channels (the first block of stages ``i >= 1`` has stride 2), global average
    pooling and a dense layer. ``blocks=(2, 2, 2, 2)``, ``width=64`` is ResNet-18.

    **Normalization.** Geometry operators differentiate one example at a time and need a
    classifier in which examples do not interact. BatchNorm couples the examples of a batch in
    training mode and carries mutable statistics, so this model uses GroupNorm (default,
    ``gcd(C, norm_groups)`` groups), LayerNorm or no normalization: each is a per-example
    function of the input, identical in training and evaluation.

    Parameters
    ----------
    input_shape : ``(H, W, C)`` (``(H, W)`` means one channel); any size (8×8 works: the
        spatial size halves at each strided stage, with SAME padding, down to 1×1).
    num_classes : number of logits ``K``.
    width : channels of the first stage.
    blocks : number of basic blocks per stage.
    activation : nonlinearity name (``relu`` by default).
    norm : ``"group"``, ``"layer"`` or ``"none"``.
    norm_groups : maximum number of GroupNorm groups.
    param_dtype : ``"float32"`` or ``"float64"``.
    rngs : ``nnx.Rngs``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        activation: str = "relu",
        norm: str = "group",
        norm_groups: int = 8,
        param_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        h, w, c = as_image_shape(input_shape, "ResNet")
        num_classes = check_num_classes(num_classes)
        (width,) = int_tuple(width, "width")
        blocks = int_tuple(blocks, "blocks")
        (norm_groups,) = int_tuple(norm_groups, "norm_groups")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        act = get_activation(activation)
        pdt = resolve_dtype(param_dtype)
        self.act = act
        self.input_hwc = (h, w, c)
        self.stem = nnx.Conv(
            c, width, (3, 3), padding="SAME", use_bias=norm == "none", param_dtype=pdt, rngs=rngs
        )
        self.stem_norm = _norm(norm, width, norm_groups, pdt, rngs)
        layers = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, c_out, stride, act, norm, norm_groups, pdt, rngs))
                c_in = c_out
        self.blocks = nnx.List(layers)
        self.head = nnx.Linear(c_in, num_classes, param_dtype=pdt, rngs=rngs)
        self.config = freeze_config(
            {
                "name": "resnet",
                "input_shape": list(as_shape(input_shape)),
                "num_classes": num_classes,
                "width": width,
                "blocks": list(blocks),
                "activation": activation,
                "norm": norm,
                "norm_groups": norm_groups,
                "param_dtype": param_dtype,
            }
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], *self.input_hwc)
        x = self.stem(x)
        x = self.act(x if self.stem_norm is None else self.stem_norm(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))
