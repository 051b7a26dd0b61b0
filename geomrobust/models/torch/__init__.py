"""PyTorch-layout architectures and pretrained PyTorch weights, in Flax NNX.

The modules reproduce, layer for layer, the PyTorch definitions that published checkpoints are
saved from, so that :func:`from_torch` loads those state dicts by name (without pickle and
without PyTorch, from ``.safetensors``) and gives the same logits. One file per family, all
built from the shared layers of :mod:`._layers`:

========================  ======================================  ===========================
``from_torch`` name       PyTorch definition                      module
========================  ======================================  ===========================
``"wide_resnet"``         RobustBench ``WideResNet``              :mod:`.wide_resnet`
``"preact_resnet18"``     RobustBench ``PreActResNet18``          :mod:`.preact_resnet`
``"resnet18"``,           torchvision ``resnet18``/``resnet50``   :mod:`.torchvision_resnet`
``"resnet50"``
``"dm_wide_resnet"``      RobustBench/DeepMind ``DMWideResNet``   :mod:`.dm_wide_resnet`
``"dm_preact_resnet"``    RobustBench/DeepMind ``DMPreActResNet`` :mod:`.dm_preact_resnet`
========================  ======================================  ===========================

Reading and checking the weights is :mod:`._import`. (``_module`` is reserved for the
route that converts a live ``torch.nn.Module``.)
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from . import dm_preact_resnet, dm_wide_resnet, wide_resnet
from ._layers import BatchNorm2d, Conv2d, Linear, PreActBlock
from .dm_preact_resnet import DMPreActResNet
from .dm_wide_resnet import DMWideResNet
from .preact_resnet import PreActResNet, PreActResNet18
from .torchvision_resnet import TorchvisionResNet, resnet18, resnet50
from .wide_resnet import WideResNet

__all__ = [
    "ARCHITECTURES",
    "CONFIG_NAMES",
    "BatchNorm2d",
    "Conv2d",
    "DMPreActResNet",
    "DMWideResNet",
    "Linear",
    "PreActBlock",
    "PreActResNet",
    "PreActResNet18",
    "TorchvisionResNet",
    "WideResNet",
    "build",
    "from_torch",
    "read_state_dict",
    "resnet18",
    "resnet50",
    "torch_state_dict_keys",
]

ARCHITECTURES = {
    "wide_resnet": wide_resnet.build,
    "preact_resnet18": PreActResNet18,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "dm_wide_resnet": dm_wide_resnet.build,
    "dm_preact_resnet": dm_preact_resnet.build,
}
"""Builders ``f(num_classes, *, rngs, **config)`` by the architecture names of
:func:`from_torch` (and ``geomrobust import-torch --arch``)."""

CONFIG_NAMES = {
    "wide_resnet": WideResNet,
    "preact_resnet": PreActResNet,
    "torchvision_resnet": TorchvisionResNet,
    "dm_wide_resnet": DMWideResNet,
    "dm_preact_resnet": DMPreActResNet,
}
"""The class behind each ``config["name"]`` a model of this package records (the names a
checkpoint's ``model_config`` holds: ``geomrobust.models.MODELS`` rebuilds every one)."""


def build(architecture: str, num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> nnx.Module:
    """The architecture ``architecture`` (a key of :data:`ARCHITECTURES`), freshly initialised.

    ``config`` holds the architecture's options: ``depth`` and ``widen_factor`` for
    ``"wide_resnet"``; ``bn_before_fc``, ``widths``, ... for ``"preact_resnet18"``;
    ``groups``, ``width_per_group``, ``widths``, ... for ``"resnet18"``/``"resnet50"``;
    ``depth``, ``width``, ``activation``, ... for ``"dm_wide_resnet"``; ``depth``,
    ``activation``, ... for ``"dm_preact_resnet"``.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}"
        )
    try:
        return ARCHITECTURES[architecture](num_classes, rngs=rngs, **config)
    except TypeError as e:
        raise TypeError(f"bad configuration for architecture {architecture!r}: {e}") from None


from ._import import from_torch, read_state_dict, torch_state_dict_keys  # noqa: E402
