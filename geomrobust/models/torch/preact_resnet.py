"""RobustBench's PreActResNet (He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual
Networks", ECCV 2016), ``robustbench/model_zoo/architectures/resnet.py``.

Keys: ``conv1``, ``layer{1..4}.<i>.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn`` (optional),
``linear``. PreActResNet-18 has 11.2M parameters with 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from ._layers import (
    BatchNorm2d,
    Conv2d,
    ImageInput,
    Linear,
    PreActBlock,
    _config,
    _int_tuple,
    _positive_int,
    pooled_logits,
    run_stage,
    stage,
)

__all__ = ["PreActResNet", "PreActResNet18"]

_NAMES = ("bn1", "conv1", "bn2", "conv2", "shortcut")


class PreActResNet(nnx.Module):
    """Pre-activation ResNet (He et al., ECCV 2016), RobustBench's ``PreActResNet`` layout.

    ``conv1`` (3x3), ``layer1..layer4`` of pre-activation blocks (strides 1, 2, 2, 2; a 1x1
    projection ``shortcut.0`` of the block input where the shape changes), an optional
    ``relu(bn(.))`` (``bn_before_fc``), a 4x4 average pooling (global on 32x32 images) and
    ``linear``. ``num_blocks=(2, 2, 2, 2)`` with the default widths is PreActResNet-18.

    Parameters
    ----------
    num_blocks : blocks per stage.
    num_classes : number of logits.
    bn_before_fc : the final ``bn`` + ReLU before pooling. RobustBench's default is False;
        checkpoints such as Rice et al. 2020 and Kireev et al. 2021 need True (their state dict
        has ``bn.*`` keys).
    out_shortcut : projection shortcuts take the pre-activation (RobustBench's
        ``out_shortcut``, the ``PreActBlockV2`` behaviour) instead of the block input.
    widths : channels of the four stages (RobustBench: 64, 128, 256, 512; the stem has
        ``widths[0]``). Smaller widths exist for tests; only the default matches RobustBench's
        checkpoints.
    in_channels, mean, std, input_shape, param_dtype, precision, rngs : as
        :class:`~geomrobust.models.torch.WideResNet`.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        bn_before_fc: bool = False,
        out_shortcut: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        num_blocks = _int_tuple(num_blocks, "num_blocks", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        self.input = ImageInput.check(in_channels, mean, std, input_shape, param_dtype, precision)
        kw = self.input.layer_kwargs(rngs)
        source = "act" if out_shortcut else "input"

        def block(a, b, s, _):
            return PreActBlock(
                a, b, s, names=_NAMES, shortcut_from=source, shortcut_in_list=True, **kw
            )

        self.conv1 = Conv2d(self.input.in_channels, widths[0], 3, stride=1, padding=1, **kw)
        c_in = widths[0]
        stages = []
        for i, (planes, n) in enumerate(zip(widths, num_blocks, strict=True)):
            stages.append(stage(block, n, c_in, planes, 1 if i == 0 else 2))
            c_in = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = BatchNorm2d(c_in, param_dtype=self.input.param_dtype) if bn_before_fc else None
        self.linear = Linear(c_in, num_classes, **kw)
        self.config = _config(
            name="preact_resnet",
            num_blocks=num_blocks,
            num_classes=num_classes,
            bn_before_fc=bool(bn_before_fc),
            out_shortcut=bool(out_shortcut),
            widths=widths,
            **self.input.config(),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.input(x, "PreActResNet")
        hw = x.shape[1:3]
        x = self.conv1(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = run_stage(layer, x)
        if self.bn is not None:
            x = jax.nn.relu(self.bn(x))
        return pooled_logits(x, 4, "PreActResNet", hw, self.linear)


def PreActResNet18(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> PreActResNet:
    """RobustBench's ``PreActResNet18()``: :class:`PreActResNet` with ``(2, 2, 2, 2)`` blocks."""
    if "num_blocks" in config:
        raise TypeError("PreActResNet18 has num_blocks (2, 2, 2, 2); use PreActResNet for others")
    return PreActResNet((2, 2, 2, 2), num_classes, rngs=rngs, **config)
