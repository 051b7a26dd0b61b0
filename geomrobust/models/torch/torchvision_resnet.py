"""torchvision's ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016), ``torchvision/models/resnet.py``: "ResNet v1.5" (the stride of a bottleneck sits on
its 3x3 convolution), the ImageNet stem (7x7 convolution, 3x3 max pooling), global average
pooling. Keys: ``conv1``, ``bn1``, ``layer{1..4}.<i>.{conv,bn}{1,2,3}``,
``layer<k>.0.downsample.{0,1}``, ``fc``. torchvision's ImageNet weights expect
``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

from flax import nnx

from ._layers import ImageOptions, Layout, PostActBlock, ResidualNetwork, _int_tuple, _positive_int

__all__ = ["TorchvisionResNet", "resnet18", "resnet50"]

_LAYOUT = Layout(
    model="ResNet",
    stem="conv1",
    stem_conv=(7, 2, 3),  # kernel, stride, padding
    stem_norm="bn1",  # then ReLU and a 3x3 max pooling of stride 2
    stages=("layer1", "layer2", "layer3", "layer4"),
    classifier="fc",  # after global average pooling
)
_EXPANSION = {"basic": 1, "bottleneck": 4}


def _block(kind: str, groups: int, base_width: int):
    """``make_block(c_in, c_out, stride, **layer_options)``: torchvision's ``BasicBlock``
    (two 3x3 convolutions, the first strided) or ``Bottleneck`` (1x1 to ``width``, 3x3
    strided and grouped, 1x1 to ``c_out = 4 * planes``, with ``width = int(planes *
    base_width / 64) * groups``) as a :class:`PostActBlock`."""
    if kind == "basic":
        if groups != 1 or base_width != 64:
            raise ValueError("torchvision's BasicBlock only supports groups=1 and base_width=64")

        def basic(c_in, c_out, stride, **kw):
            return PostActBlock((c_in, c_out, c_out), (3, 3), stride, stride_at=0, **kw)

        return basic

    def bottleneck(c_in, c_out, stride, **kw):
        planes = c_out // _EXPANSION["bottleneck"]
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ValueError(f"bottleneck width int({planes} * {base_width} / 64) is 0")
        channels = (c_in, width, width, c_out)
        return PostActBlock(channels, (1, 3, 1), stride, stride_at=1, groups=groups, **kw)

    return bottleneck


class TorchvisionResNet(ResidualNetwork):
    """ResNet (He et al., CVPR 2016) exactly as torchvision's ``ResNet`` (ImageNet stem).

    ``conv1`` (7x7, stride 2, padding 3), ``bn1``, ReLU, 3x3 max pooling (stride 2, padding
    1), ``layer1..layer4`` (strides 1, 2, 2, 2; the first block of a stage gets
    ``downsample`` when its stride or channel count changes), global average pooling
    (``AdaptiveAvgPool2d((1, 1))``, any image size) and ``fc``.

    Parameters
    ----------
    block : ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101/152).
    layers : blocks per stage (``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50).
    num_classes : number of logits (torchvision: 1000).
    groups, width_per_group : torchvision's bottleneck grouping and width (ResNeXt-50 32x4d is
        ``groups=32, width_per_group=4``; Wide ResNet-50-2 is ``width_per_group=128``).
    widths : planes of the four stages (torchvision: 64, 128, 256, 512; the stem has
        ``widths[0]`` channels). Smaller widths exist for tests (torchvision's
        ``width_per_group`` does not shrink the block outputs); only the default matches
        torchvision's checkpoints.
    rngs, **image : as :class:`~geomrobust.models.torch.WideResNet` (``in_channels``,
        ``mean``, ``std``, ``input_shape``, ``param_dtype``, ``precision``).

    ``replace_stride_with_dilation`` (dilated convolutions) is not supported.
    """

    layout = _LAYOUT

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        rngs: nnx.Rngs,
        **image: Unpack[ImageOptions],
    ):
        if block not in _EXPANSION:
            raise ValueError(f"block must be one of {sorted(_EXPANSION)}, got {block!r}")
        layers = _int_tuple(layers, "layers", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        groups = _positive_int(groups, "groups")
        width_per_group = _positive_int(width_per_group, "width_per_group")
        image = self.check_input(image)
        make_block = _block(block, groups, width_per_group)
        outputs = [w * _EXPANSION[block] for w in widths]
        plan = self.plan(widths[0], outputs, layers, (1, 2, 2, 2))
        config = dict(
            name="torchvision_resnet",
            block=block,
            layers=layers,
            num_classes=num_classes,
            groups=groups,
            width_per_group=width_per_group,
            widths=widths,
        )
        self.build(image, make_block, plan, num_classes, config=config, rngs=rngs)


def resnet18(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet18``: basic blocks ``(2, 2, 2, 2)`` (11.7M parameters at 1000
    classes)."""
    return TorchvisionResNet("basic", (2, 2, 2, 2), num_classes, rngs=rngs, **config)


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet50``: bottlenecks ``(3, 4, 6, 3)`` (25.6M parameters at 1000
    classes)."""
    return TorchvisionResNet("bottleneck", (3, 4, 6, 3), num_classes, rngs=rngs, **config)
