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

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from .._layers import get_activation
from ._layers import (
    BatchNorm2d,
    Conv2d,
    Linear,
    PreActBlock,
    _config,
    _int_tuple,
    _positive_int,
    pooled_logits,
    run_stage,
    stage,
)
from .dm_wide_resnet import dm_activation, dm_input

__all__ = ["DMPreActResNet"]

_NAMES = ("batchnorm_0", "conv_2d_1", "batchnorm_1", "conv_2d_2", "shortcut")
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActResNet(nnx.Module):
    """DeepMind's PreActResNet-``depth`` (18 or 34; RobustBench's ``DMPreActResNet``).

    ``conv_2d`` (3x3), ``layer_0..layer_3`` of pre-activation blocks (strides 1, 2, 2, 2),
    ``act(batchnorm(.))``, a 4x4 average pooling and ``logits``.

    Parameters
    ----------
    depth : 18 (blocks ``(2, 2, 2, 2)``) or 34 (``(3, 4, 6, 3)``).
    num_classes, activation, mean, std, padding : as
        :class:`~geomrobust.models.torch.DMWideResNet`.
    widths : channels of the four stages (DeepMind: 64, 128, 256, 512, fixed; the stem has
        ``widths[0]``). Smaller widths exist for tests; only the default matches the
        published checkpoints.
    in_channels, input_shape, param_dtype, precision, rngs : as
        :class:`~geomrobust.models.torch.WideResNet`.
    """

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        *,
        activation: str = "relu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 0,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        if depth not in _DEPTHS:
            raise ValueError(
                f"DMPreActResNet depth must be one of {sorted(_DEPTHS)}, got {depth!r}"
            )
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        act = dm_activation(activation)
        self.input = dm_input(in_channels, mean, std, input_shape, param_dtype, precision, padding)
        kw = self.input.layer_kwargs(rngs)

        def block(a, b, s, _):
            return PreActBlock(
                a,
                b,
                s,
                names=_NAMES,
                shortcut_from="input",
                shortcut_kernel=3,
                padding="dm",
                activation=act,
                **kw,
            )

        self.conv_2d = Conv2d(self.input.in_channels, widths[0], 3, stride=1, padding=1, **kw)
        c_in, stages = widths[0], []
        for i, (planes, n) in enumerate(zip(widths, _DEPTHS[depth], strict=True)):
            stages.append(stage(block, n, c_in, planes, 1 if i == 0 else 2))
            c_in = planes
        self.layer_0, self.layer_1, self.layer_2, self.layer_3 = stages
        self.batchnorm = BatchNorm2d(c_in, param_dtype=self.input.param_dtype)
        self.logits = Linear(c_in, num_classes, **kw)
        self.activation = act
        self.config = _config(
            name="dm_preact_resnet",
            depth=int(depth),
            num_classes=num_classes,
            activation=act,
            widths=widths,
            **self.input._asdict(),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.input(x, "DMPreActResNet")
        hw = x.shape[1:3]
        x = self.conv_2d(x)
        for layer in (self.layer_0, self.layer_1, self.layer_2, self.layer_3):
            x = run_stage(layer, x)
        x = get_activation(self.activation)(self.batchnorm(x))
        return pooled_logits(x, 4, "DMPreActResNet", hw, self.logits)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> DMPreActResNet:
    """``DMPreActResNet(num_classes=..., **config)`` (``depth``, ``activation``, ...)."""
    return DMPreActResNet(num_classes=num_classes, rngs=rngs, **config)
