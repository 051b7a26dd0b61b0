"""The architecture tables: :data:`ARCHITECTURES` (the names :func:`from_torch` and
``geomrobust import-torch --arch`` take), :data:`CONFIG_NAMES` (the ``config["name"]`` each
model records, which the model registry rebuilds checkpoints from) and :func:`build`."""

from __future__ import annotations

from typing import Any

from flax import nnx

from . import dm_preact_resnet, dm_wide_resnet, wide_resnet
from .dm_preact_resnet import DMPreActResNet
from .dm_wide_resnet import DMWideResNet
from .preact_resnet import PreActResNet, PreActResNet18
from .torchvision_resnet import TorchvisionResNet, resnet18, resnet50
from .wide_resnet import WideResNet

__all__ = ["ARCHITECTURES", "CONFIG_NAMES", "build"]

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
