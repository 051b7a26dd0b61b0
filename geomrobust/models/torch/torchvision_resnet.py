"""torchvision's ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016), ``torchvision/models/resnet.py``: "ResNet v1.5" (the stride of a bottleneck sits on
its 3x3 convolution), the ImageNet stem (7x7 convolution, 3x3 max pooling), global average
pooling. Keys: ``conv1``, ``bn1``, ``layer{1..4}.<i>.{conv,bn}{1,2,3}``,
``layer<k>.0.downsample.{0,1}``, ``fc``. torchvision's ImageNet weights expect
``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``.
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
    _config,
    _int_tuple,
    _max_pool,
    _positive_int,
    run_stage,
    stage,
)

__all__ = ["TorchvisionResNet", "resnet18", "resnet50"]


class TorchvisionBasicBlock(nnx.Module):
    """torchvision's ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)``.

    ``identity`` is ``x`` or ``downsample`` (1x1 strided convolution ``downsample.0`` +
    BatchNorm ``downsample.1``) of ``x``. The stride sits on ``conv1``.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: bool,
        *,
        groups: int,
        base_width: int,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        if groups != 1 or base_width != 64:
            raise ValueError("torchvision's BasicBlock only supports groups=1 and base_width=64")
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, **kw)
        self.bn1 = BatchNorm2d(planes, param_dtype=param_dtype)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, **kw)
        self.bn2 = BatchNorm2d(planes, param_dtype=param_dtype)
        self.downsample = _downsample(inplanes, planes, stride, **kw) if downsample else None
        self.config = _config(
            name="torchvision_basic_block",
            inplanes=inplanes,
            planes=planes,
            stride=stride,
            downsample=downsample,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        identity = x if self.downsample is None else _apply_downsample(self.downsample, x)
        return jax.nn.relu(h + identity)


class TorchvisionBottleneck(nnx.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 ``conv2``).

    ``conv1`` 1x1 -> ``width``, ``conv2`` 3x3 (strided, ``groups``), ``conv3`` 1x1 ->
    ``4 * planes``, BatchNorm after each, ReLU, plus ``identity`` as in
    :class:`TorchvisionBasicBlock`; ``width = int(planes * base_width / 64) * groups``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: bool,
        *,
        groups: int,
        base_width: int,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ValueError(f"bottleneck width int({planes} * {base_width} / 64) is 0")
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, width, 1, **kw)
        self.bn1 = BatchNorm2d(width, param_dtype=param_dtype)
        self.conv2 = Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, **kw)
        self.bn2 = BatchNorm2d(width, param_dtype=param_dtype)
        self.conv3 = Conv2d(width, out, 1, **kw)
        self.bn3 = BatchNorm2d(out, param_dtype=param_dtype)
        self.downsample = _downsample(inplanes, out, stride, **kw) if downsample else None
        self.config = _config(
            name="torchvision_bottleneck",
            inplanes=inplanes,
            planes=planes,
            stride=stride,
            downsample=downsample,
            groups=groups,
            base_width=base_width,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = jax.nn.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        identity = x if self.downsample is None else _apply_downsample(self.downsample, x)
        return jax.nn.relu(h + identity)


def _downsample(c_in: int, c_out: int, stride: int, *, param_dtype, precision, rngs) -> nnx.List:
    conv = Conv2d(
        c_in, c_out, 1, stride=stride, param_dtype=param_dtype, precision=precision, rngs=rngs
    )
    return nnx.List([conv, BatchNorm2d(c_out, param_dtype=param_dtype)])


def _apply_downsample(downsample: nnx.List, x: jax.Array) -> jax.Array:
    return downsample[1](downsample[0](x))


_TV_BLOCKS = {"basic": TorchvisionBasicBlock, "bottleneck": TorchvisionBottleneck}


class TorchvisionResNet(nnx.Module):
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
    in_channels, mean, std, input_shape, param_dtype, precision, rngs : as
        :class:`~geomrobust.models.torch.WideResNet`.

    ``replace_stride_with_dilation`` (dilated convolutions) is not supported.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        if block not in _TV_BLOCKS:
            raise ValueError(f"block must be one of {sorted(_TV_BLOCKS)}, got {block!r}")
        layers = _int_tuple(layers, "layers", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        groups = _positive_int(groups, "groups")
        width_per_group = _positive_int(width_per_group, "width_per_group")
        self.input = ImageInput.check(in_channels, mean, std, input_shape, param_dtype, precision)
        cls = _TV_BLOCKS[block]
        kw = self.input.layer_kwargs(rngs)
        inplanes = widths[0]
        self.conv1 = Conv2d(self.input.in_channels, inplanes, 7, stride=2, padding=3, **kw)
        self.bn1 = BatchNorm2d(inplanes, param_dtype=self.input.param_dtype)
        stages = []
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):

            def make(a, b, s, j, planes=planes):
                down = j == 0 and (s != 1 or a != b)
                return cls(a, planes, s, down, groups=groups, base_width=width_per_group, **kw)

            out = planes * cls.expansion
            stages.append(stage(make, n, inplanes, out, 1 if i == 0 else 2))
            inplanes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = Linear(inplanes, num_classes, **kw)
        self.config = _config(
            name="torchvision_resnet",
            block=block,
            layers=layers,
            num_classes=num_classes,
            groups=groups,
            width_per_group=width_per_group,
            widths=widths,
            **self.input.config(),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.input(x, "ResNet")
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = _max_pool(x, 3, 2, 1)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = run_stage(layer, x)
        return self.fc(x.mean(axis=(1, 2)))


def resnet18(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet18``: basic blocks ``(2, 2, 2, 2)`` (11.7M parameters at 1000
    classes)."""
    return TorchvisionResNet("basic", (2, 2, 2, 2), num_classes, rngs=rngs, **config)


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet50``: bottlenecks ``(3, 4, 6, 3)`` (25.6M parameters at 1000
    classes)."""
    return TorchvisionResNet("bottleneck", (3, 4, 6, 3), num_classes, rngs=rngs, **config)
