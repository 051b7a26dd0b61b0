"""RobustBench's WideResNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The TRADES / RobustBench definition (``robustbench/model_zoo/architectures/wide_resnet.py``)
that most robust CIFAR checkpoints use: WRN-28-10 (36.5M parameters), WRN-34-10 (46.2M),
WRN-70-16 (266.8M). Keys: ``conv1``, ``block{1,2,3}.layer.<i>.{bn1,conv1,bn2,conv2,
convShortcut}``, ``bn1``, ``fc`` (and the unused ``sub_block1`` of some checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from ._layers import (
    BatchNorm2d,
    Conv2d,
    Group,
    ImageInput,
    Linear,
    PreActBlock,
    _config,
    _positive_int,
    pooled_logits,
    stage,
)

__all__ = ["WideResNet", "wrn_channels"]

_NAMES = ("bn1", "conv1", "bn2", "conv2", "convShortcut")


def wrn_channels(depth: int, widen_factor: int, model: str) -> tuple[int, tuple[int, ...]]:
    """Blocks per stage ``n = (depth - 4) / 6`` and the channels ``(16, 16k, 32k, 64k)`` of a
    WRN-``depth``-``k`` (shared with DeepMind's layout)."""
    depth = _positive_int(depth, "depth")
    widen_factor = _positive_int(widen_factor, "widen_factor")
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"{model} depth must be 6n + 4 with n >= 1, got {depth}")
    k = widen_factor
    return (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)


class WideResNet(nnx.Module):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, BMVC 2016), RobustBench layout.

    ``conv1`` (3x3, 16 channels), ``block1..block3`` of ``n = (depth - 4) / 6`` pre-activation
    blocks with ``16k, 32k, 64k`` channels (``k = widen_factor``; strides 1, 2, 2; a 1x1
    ``convShortcut`` of the activation where the width changes), then ``relu(bn1(.))``, an
    8x8 average pooling (global on 32x32 images) and ``fc``.

    Parameters
    ----------
    depth : ``6n + 4`` (10, 16, 28, 34, 70, ...).
    widen_factor : channel multiplier ``k``.
    num_classes : number of logits.
    sub_block1 : create RobustBench's unused ``sub_block1`` (some checkpoints, e.g. Carmon et al.
        2019, hold its weights); it does not take part in the forward pass.
    bias_last : ``fc`` has a bias (RobustBench's ``bias_last``).
    in_channels : image channels (3).
    mean, std : optional per-channel input normalisation applied first.
    input_shape : optional ``(H, W, C)`` to accept flattened inputs.
    param_dtype : ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``.
    precision : matmul/convolution precision (None: JAX's default; ``"highest"`` for full
        float32 accuracy on accelerators).
    rngs : ``nnx.Rngs`` for the initialisation.

    Dropout (``dropRate``) is not modelled: evaluation mode ignores it.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        *,
        sub_block1: bool = False,
        bias_last: bool = True,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        n, ch = wrn_channels(depth, widen_factor, "WideResNet")
        num_classes = _positive_int(num_classes, "num_classes")
        self.input = ImageInput.check(in_channels, mean, std, input_shape, param_dtype, precision)
        kw = self.input.layer_kwargs(rngs)
        dt = self.input.param_dtype

        def group(c_in, c_out, stride):
            def block(a, b, s, _):
                return PreActBlock(a, b, s, names=_NAMES, **kw)

            return Group(list(stage(block, n, c_in, c_out, stride)), field="layer")

        self.conv1 = Conv2d(self.input.in_channels, ch[0], 3, stride=1, padding=1, **kw)
        self.block1 = group(ch[0], ch[1], 1)
        self.sub_block1 = group(ch[0], ch[1], 1) if sub_block1 else None
        self.block2 = group(ch[1], ch[2], 2)
        self.block3 = group(ch[2], ch[3], 2)
        self.bn1 = BatchNorm2d(ch[3], param_dtype=dt)
        self.fc = Linear(ch[3], num_classes, bias=bias_last, zero_bias=True, **kw)
        self.config = _config(
            name="wide_resnet",
            depth=int(depth),
            widen_factor=int(widen_factor),
            num_classes=num_classes,
            sub_block1=bool(sub_block1),
            bias_last=bool(bias_last),
            **self.input.config(),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.input(x, "WideResNet")
        hw = x.shape[1:3]
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = jax.nn.relu(self.bn1(x))
        return pooled_logits(x, 8, "WideResNet", hw, self.fc)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> WideResNet:
    """``WideResNet(num_classes=..., **config)`` (``depth``, ``widen_factor``, ...)."""
    return WideResNet(num_classes=num_classes, rngs=rngs, **config)
