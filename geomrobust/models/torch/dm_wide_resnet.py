"""DeepMind's WideResNet (Gowal et al., "Uncovering the Limits of Adversarial Training against
Norm-Bounded Adversarial Examples", arXiv:2010.03593; Rebuffi et al., "Fixing Data Augmentation
to Improve Adversarial Robustness", arXiv:2103.01946), as RobustBench defines it
(``robustbench/model_zoo/architectures/dm_wide_resnet.py``, from ``deepmind-research``'s
``adversarial_robustness/pytorch/model_zoo.py``).

Keys: ``init_conv``, ``layer.<g>.block.<i>.{batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}``,
``batchnorm``, ``logits``. It differs from RobustBench's :mod:`.wide_resnet` in its names, in
TensorFlow-style padding (``F.pad(x, (0, 1, 0, 1))`` before a stride-2 convolution, where
PyTorch pads both sides), in the activation (ReLU or Swish, ``x * sigmoid(x)``: the Swish
networks are smooth, so their exact curvature is defined) and in the input normalisation it
applies itself with ``mean``/``std`` that are NOT in the state dict (non-persistent buffers,
CIFAR-10's statistics unless the model was built with others, e.g. CIFAR-100's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from .._layers import get_activation
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
from .wide_resnet import wrn_channels

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DMWideResNet", "dm_activation", "dm_input"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the defaults of DeepMind's constructors
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
_NAMES = ("batchnorm_0", "conv_0", "batchnorm_1", "conv_1", "shortcut")
_ACTIVATIONS = {"relu": "relu", "swish": "swish", "silu": "swish"}


def dm_activation(activation: str) -> str:
    """``"relu"`` or ``"swish"`` (``"silu"``: the same function, PyTorch's name)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def dm_input(in_channels, mean, std, input_shape, param_dtype, precision, padding) -> ImageInput:
    """The input options of DeepMind's models: CIFAR-10's ``mean``/``std`` unless given (both
    or neither, as the PyTorch constructor's defaults), and ``padding`` pixels of zeros added
    around the image before the normalisation.

    The PyTorch model holds ``mean``/``std`` in float32 buffers (``torch.tensor(mean)``), which
    ``.double()`` converts after the rounding; so do these: the values are rounded to float32
    (a float64 model then matches PyTorch's float64 model to rounding)."""
    if mean is None and std is None:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    if mean is not None and std is not None:
        with np.errstate(over="ignore", under="ignore"):
            mean, std = (np.asarray(v, np.float64).astype(np.float32) for v in (mean, std))
    return ImageInput.check(in_channels, mean, std, input_shape, param_dtype, precision, padding)


class DMWideResNet(nnx.Module):
    """DeepMind's WRN-``depth``-``width`` (RobustBench's ``DMWideResNet``).

    ``init_conv`` (3x3, 16 channels), ``layer`` = three groups of ``n = (depth - 4) / 6``
    pre-activation blocks with ``16k, 32k, 64k`` channels (strides 1, 2, 2; a 1x1
    ``shortcut`` of the activation where the width changes), then ``act(batchnorm(.))``, an
    8x8 average pooling and ``logits``.

    Parameters
    ----------
    depth, width : ``6n + 4`` and the channel multiplier (DeepMind's ``width``; WRN-28-10,
        WRN-70-16, ...).
    num_classes : number of logits.
    activation : ``"relu"`` (``nn.ReLU``) or ``"swish"`` (DeepMind's ``Swish``, PyTorch's
        ``nn.SiLU``).
    mean, std : the per-channel normalisation the model applies (default CIFAR-10's, as the
        PyTorch constructor; RobustBench builds its CIFAR-100 models with CIFAR-100's).
    padding : zero pixels added on each side of the image first (DeepMind's ``padding``).
    in_channels, input_shape, param_dtype, precision, rngs : as
        :class:`~geomrobust.models.torch.WideResNet`.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        *,
        activation: str = "relu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 0,
        in_channels: int = 3,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        n, ch = wrn_channels(depth, width, "DMWideResNet")
        num_classes = _positive_int(num_classes, "num_classes")
        act = dm_activation(activation)
        self.input = dm_input(in_channels, mean, std, input_shape, param_dtype, precision, padding)
        kw = self.input.layer_kwargs(rngs)
        dt = self.input.param_dtype

        def block(a, b, s, _):
            return PreActBlock(a, b, s, names=_NAMES, padding="dm", activation=act, **kw)

        self.init_conv = Conv2d(self.input.in_channels, ch[0], 3, stride=1, padding=1, **kw)
        self.layer = nnx.List(
            [
                Group(list(stage(block, n, c_in, c_out, s)), field="block")
                for c_in, c_out, s in ((ch[0], ch[1], 1), (ch[1], ch[2], 2), (ch[2], ch[3], 2))
            ]
        )
        self.batchnorm = BatchNorm2d(ch[3], param_dtype=dt)
        self.logits = Linear(ch[3], num_classes, **kw)
        self.activation = act
        self.config = _config(
            name="dm_wide_resnet",
            depth=int(depth),
            width=int(width),
            num_classes=num_classes,
            activation=act,
            **self.input._asdict(),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.input(x, "DMWideResNet")
        hw = x.shape[1:3]
        x = self.init_conv(x)
        for group in self.layer:
            x = group(x)
        x = get_activation(self.activation)(self.batchnorm(x))
        return pooled_logits(x, 8, "DMWideResNet", hw, self.logits)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> DMWideResNet:
    """``DMWideResNet(num_classes=..., **config)`` (``depth``, ``width``, ``activation``, ...)."""
    return DMWideResNet(num_classes=num_classes, rngs=rngs, **config)
