"""RobustBench's PreActResNet (He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual
Networks", ECCV 2016), ``robustbench/model_zoo/architectures/resnet.py``.

Keys: ``conv1``, ``layer{1..4}.<i>.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn`` (optional),
``linear``. PreActResNet-18 has 11.2M parameters with 10 classes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

from flax import nnx

from ._layers import ImageOptions, Layout, PreActBlock, ResidualNetwork, _int_tuple, _positive_int

__all__ = ["PreActResNet", "PreActResNet18"]

_LAYOUT = Layout(
    model="PreActResNet",
    stem="conv1",
    stages=("layer1", "layer2", "layer3", "layer4"),
    norm="bn",  # only with bn_before_fc
    pool=4,
    classifier="linear",
)
_BLOCK = dict(names=("bn1", "conv1", "bn2", "conv2", "shortcut"), shortcut_in_list=True)


class PreActResNet(ResidualNetwork):
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
    rngs, **image : as :class:`~geomrobust.models.torch.WideResNet` (``in_channels``,
        ``mean``, ``std``, ``input_shape``, ``param_dtype``, ``precision``).
    """

    layout = _LAYOUT

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        bn_before_fc: bool = False,
        out_shortcut: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
        rngs: nnx.Rngs,
        **image: Unpack[ImageOptions],
    ):
        num_blocks = _int_tuple(num_blocks, "num_blocks", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        image = self.check_input(image)
        source = "act" if out_shortcut else "input"
        block = functools.partial(PreActBlock, **_BLOCK, shortcut_from=source)
        plan = self.plan(widths[0], widths, num_blocks, (1, 2, 2, 2))
        config = dict(
            name="preact_resnet",
            num_blocks=num_blocks,
            num_classes=num_classes,
            bn_before_fc=bool(bn_before_fc),
            out_shortcut=bool(out_shortcut),
            widths=widths,
        )
        self.build(image, block, plan, num_classes, config=config, norm=bn_before_fc, rngs=rngs)


def PreActResNet18(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> PreActResNet:
    """RobustBench's ``PreActResNet18()``: :class:`PreActResNet` with ``(2, 2, 2, 2)`` blocks."""
    if "num_blocks" in config:
        raise TypeError("PreActResNet18 has num_blocks (2, 2, 2, 2); use PreActResNet for others")
    return PreActResNet((2, 2, 2, 2), num_classes, rngs=rngs, **config)
