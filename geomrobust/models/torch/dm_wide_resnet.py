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

import functools
from typing import Any, Unpack

import numpy as np
from flax import nnx

from ._layers import ImageInput, ImageOptions, Layout, PreActBlock, ResidualNetwork, _positive_int
from .wide_resnet import wrn_channels

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DMWideResNet", "dm_activation", "dm_input"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the defaults of DeepMind's constructors
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
_LAYOUT = Layout(
    model="DMWideResNet",
    stem="init_conv",
    stages="layer",  # one list of the three stages
    group="block",  # DeepMind's _BlockGroup.block
    norm="batchnorm",
    pool=8,
    classifier="logits",
)
_BLOCK = dict(names=("batchnorm_0", "conv_0", "batchnorm_1", "conv_1", "shortcut"), padding="dm")
_ACTIVATIONS = {"relu": "relu", "swish": "swish", "silu": "swish"}


def dm_activation(activation: str) -> str:
    """``"relu"`` or ``"swish"`` (``"silu"``: the same function, PyTorch's name)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def dm_input(network: ResidualNetwork, options: dict, padding: int) -> ImageInput:
    """The input options of DeepMind's models: CIFAR-10's ``mean``/``std`` unless given (both
    or neither, as the PyTorch constructor's defaults), and ``padding`` pixels of zeros added
    around the image before the normalisation; ``options`` as
    :meth:`ResidualNetwork.check_input`.

    The PyTorch model holds ``mean``/``std`` in float32 buffers (``torch.tensor(mean)``), which
    ``.double()`` converts after the rounding; so do these: the values are rounded to float32
    (a float64 model then matches PyTorch's float64 model to rounding)."""
    mean, std = options.get("mean"), options.get("std")
    if mean is None and std is None:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    if mean is not None and std is not None:
        with np.errstate(over="ignore", under="ignore"):
            mean, std = (np.asarray(v, np.float64).astype(np.float32) for v in (mean, std))
    return network.check_input({**options, "mean": mean, "std": std}, padding=padding)


class DMWideResNet(ResidualNetwork):
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
    padding : zero pixels added on each side of the image first (DeepMind's ``padding``).
    rngs, **image : as :class:`~geomrobust.models.torch.WideResNet` (``in_channels``,
        ``mean``, ``std``, ``input_shape``, ``param_dtype``, ``precision``), except that
        ``mean``, ``std`` (the per-channel normalisation the model applies) default to
        CIFAR-10's, as the PyTorch constructor (RobustBench builds its CIFAR-100 models with
        CIFAR-100's).
    """

    layout = _LAYOUT

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        *,
        activation: str = "relu",
        padding: int = 0,
        rngs: nnx.Rngs,
        **image: Unpack[ImageOptions],
    ):
        n, ch = wrn_channels(depth, width, "DMWideResNet")
        num_classes = _positive_int(num_classes, "num_classes")
        act = dm_activation(activation)
        image = dm_input(self, image, padding)
        block = functools.partial(PreActBlock, **_BLOCK, activation=act)
        plan = self.plan(ch[0], ch[1:], (n, n, n), (1, 2, 2))
        config = dict(
            name="dm_wide_resnet",
            depth=int(depth),
            width=int(width),
            num_classes=num_classes,
            activation=act,
        )
        self.build(image, block, plan, num_classes, config=config, activation=act, rngs=rngs)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> DMWideResNet:
    """``DMWideResNet(num_classes=..., **config)`` (``depth``, ``width``, ``activation``, ...)."""
    return DMWideResNet(num_classes=num_classes, rngs=rngs, **config)
