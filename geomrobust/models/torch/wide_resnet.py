"""RobustBench's WideResNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The TRADES / RobustBench definition (``robustbench/model_zoo/architectures/wide_resnet.py``)
that most robust CIFAR checkpoints use: WRN-28-10 (36.5M parameters), WRN-34-10 (46.2M),
WRN-70-16 (266.8M). Keys: ``conv1``, ``block{1,2,3}.layer.<i>.{bn1,conv1,bn2,conv2,
convShortcut}``, ``bn1``, ``fc`` (and the unused ``sub_block1`` of some checkpoints).
"""

from __future__ import annotations

import functools
from typing import Any, Unpack

from flax import nnx

from ._layers import ImageOptions, Layout, PreActBlock, ResidualNetwork, _positive_int

__all__ = ["WideResNet", "wrn_channels"]

_LAYOUT = Layout(
    model="WideResNet",
    stem="conv1",
    stages=("block1", "block2", "block3"),
    group="layer",  # RobustBench's NetworkBlock.layer
    norm="bn1",
    pool=8,
    classifier="fc",
)
_BLOCK = dict(names=("bn1", "conv1", "bn2", "conv2", "convShortcut"))  # a 1x1 projection of act


def wrn_channels(depth: int, widen_factor: int, model: str) -> tuple[int, tuple[int, ...]]:
    """Blocks per stage ``n = (depth - 4) / 6`` and the channels ``(16, 16k, 32k, 64k)`` of a
    WRN-``depth``-``k`` (shared with DeepMind's layout)."""
    depth = _positive_int(depth, "depth")
    widen_factor = _positive_int(widen_factor, "widen_factor")
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"{model} depth must be 6n + 4 with n >= 1, got {depth}")
    k = widen_factor
    return (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)


class WideResNet(ResidualNetwork):
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
    rngs : ``nnx.Rngs`` for the initialisation.
    **image : the input options every family takes (:class:`~._layers.ImageOptions`):
        ``in_channels`` (3); ``mean``, ``std`` (optional per-channel input normalisation
        applied first); ``input_shape`` (optional ``(H, W, C)`` to accept flattened inputs);
        ``param_dtype`` (``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``);
        ``precision`` (matmul/convolution precision; None: JAX's default, ``"highest"`` for
        full float32 accuracy on accelerators).

    Dropout (``dropRate``) is not modelled: evaluation mode ignores it.
    """

    layout = _LAYOUT

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        *,
        sub_block1: bool = False,
        bias_last: bool = True,
        rngs: nnx.Rngs,
        **image: Unpack[ImageOptions],
    ):
        n, ch = wrn_channels(depth, widen_factor, "WideResNet")
        num_classes = _positive_int(num_classes, "num_classes")
        image = self.check_input(image)
        block = functools.partial(PreActBlock, **_BLOCK)
        plan = self.plan(ch[0], ch[1:], (n, n, n), (1, 2, 2))
        if sub_block1:  # unused in the forward pass: a copy of block1's shape
            plan.insert(1, plan[0]._replace(name="sub_block1"))
        else:
            self.sub_block1 = None
        config = dict(
            name="wide_resnet",
            depth=int(depth),
            widen_factor=int(widen_factor),
            num_classes=num_classes,
            sub_block1=bool(sub_block1),
            bias_last=bool(bias_last),
        )
        head = dict(bias=bias_last, zero_bias=True)  # RobustBench's fc: bias_last, zero init
        self.build(image, block, plan, num_classes, config=config, rngs=rngs, **head)


def build(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> WideResNet:
    """``WideResNet(num_classes=..., **config)`` (``depth``, ``widen_factor``, ...)."""
    return WideResNet(num_classes=num_classes, rngs=rngs, **config)
