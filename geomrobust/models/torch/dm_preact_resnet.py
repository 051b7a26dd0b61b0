"""DeepMind's pre-activation ResNet (Rebuffi et al., "Fixing Data Augmentation to Improve
Adversarial Robustness", arXiv:2103.01946; Gowal et al., "Improving Robustness using Generated
Data", NeurIPS 2021), as RobustBench defines it (``DMPreActResNet`` in
``robustbench/model_zoo/architectures/dm_wide_resnet.py``, the ``dm_rn`` models).

Keys: ``conv_2d``, ``layer_{0..3}.<i>.{batchnorm_0,conv_2d_1,batchnorm_1,conv_2d_2,shortcut}``,
``batchnorm``, ``logits``. Unlike RobustBench's :mod:`.preact_resnet`, the projection shortcut
is a 3x3 convolution of the (TensorFlow-style padded) block input, the activation is ReLU or
Swish, and the model normalises its input itself (``mean``/``std`` not in the state dict; see
:mod:`.dm_wide_resnet`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

from flax import nnx

from ._layers import (
    ImageOptions,
    Layout,
    PreActBlock,
    ResidualNetwork,
    _int_tuple,
    _positive_int,
)
from .dm_wide_resnet import dm_activation, dm_input

__all__ = ["DMPreActResNet"]

_LAYOUT = Layout(
    model="DMPreActResNet",
    stem="conv_2d",
    stages=("layer_0", "layer_1", "layer_2", "layer_3"),
    norm="batchnorm",
    pool=4,
    classifier="logits",
)
_BLOCK = dict(
    names=("batchnorm_0", "conv_2d_1", "batchnorm_1", "conv_2d_2", "shortcut"),
    shortcut_from="input",
    shortcut_kernel=3,  # DeepMind's projection is a 3x3 convolution of the block input
    padding="dm",
)
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActResNet(ResidualNetwork):
    """DeepMind's PreActResNet-``depth`` (18 or 34; RobustBench's ``DMPreActResNet``).

    ``conv_2d`` (3x3), ``layer_0..layer_3`` of pre-activation blocks (strides 1, 2, 2, 2),
    ``act(batchnorm(.))``, a 4x4 average pooling and ``logits``.

    Parameters
    ----------
    depth : 18 (blocks ``(2, 2, 2, 2)``) or 34 (``(3, 4, 6, 3)``).
    num_classes, activation, padding : as :class:`~geomrobust.models.torch.DMWideResNet`.
    widths : channels of the four stages (DeepMind: 64, 128, 256, 512, fixed; the stem has
        ``widths[0]``). Smaller widths exist for tests; only the default matches the
        published checkpoints.
    rngs, **image : as :class:`~geomrobust.models.torch.DMWideResNet` (``mean``, ``std``
        default to CIFAR-10's).
    """

    layout = _LAYOUT

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        *,
        activation: str = "relu",
        padding: int = 0,
        widths: Sequence[int] = (64, 128, 256, 512),
        rngs: nnx.Rngs,
        **image: Unpack[ImageOptions],
    ):
        if depth not in _DEPTHS:
            raise ValueError(
                f"DMPreActResNet depth must be one of {sorted(_DEPTHS)}, got {depth!r}"
            )
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        act = dm_activation(activation)
        image = dm_input(self, image, padding)
        block = functools.partial(PreActBlock, **_BLOCK, activation=act)
        plan = self.plan(widths[0], widths, _DEPTHS[depth], (1, 2, 2, 2))
        config = dict(
            name="dm_preact_resnet",
            depth=int(depth),
            num_classes=num_classes,
            activation=act,
            widths=widths,
        )
        self.build(image, block, plan, num_classes, config=config, activation=act, rngs=rngs)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> DMPreActResNet:
    """``DMPreActResNet(num_classes=..., **config)`` (``depth``, ``activation``, ...)."""
    return DMPreActResNet(num_classes=num_classes, rngs=rngs, **config)
