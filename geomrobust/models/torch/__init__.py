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

The tables are :mod:`._families`; reading and checking the weights is :mod:`._import`. Any
other live ``torch.nn.Module`` goes through torchax instead: :func:`from_torch_module`
(:mod:`._module`, the ``geomrobust[torch]`` extra).
"""

from __future__ import annotations

from ._families import ARCHITECTURES, CONFIG_NAMES, build
from ._import import from_torch, read_state_dict, torch_state_dict_keys
from ._layers import BatchNorm2d, Conv2d, Linear, PreActBlock
from ._module import CustomAutogradWarning, from_torch_module
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
    "CustomAutogradWarning",
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
    "from_torch_module",
    "read_state_dict",
    "resnet18",
    "resnet50",
    "torch_state_dict_keys",
]
