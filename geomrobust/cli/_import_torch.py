"""``geomrobust import-torch``: a PyTorch checkpoint as a geomrobust checkpoint.

The weights are read without pickle (``.safetensors``) or with ``torch.load(weights_only=True)``
(``.pt``/``.pth``, if PyTorch is installed), into the package's NNX version of the
architecture (:func:`geomrobust.models.from_torch`); the input normalization (``--mean``,
``--std``, or RobustBench's ``mu``/``sigma`` buffers) becomes part of the model, so every
other command measures in pixel units. The checkpoint records the source file and its
SHA-256.
"""

from __future__ import annotations

import argparse
import math

from ._args import positive_int
from ._dispatch import Implementation

__all__ = ["add_parser"]

ARCHS = (
    "wide_resnet",
    "preact_resnet18",
    "resnet18",
    "resnet50",
    "dm_wide_resnet",
    "dm_preact_resnet",
)
# families whose published weights expect normalised inputs, and the usual statistics
_NORMALISED = {
    "resnet18": "torchvision's ImageNet weights expect --mean '0.485 0.456 0.406' --std "
    "'0.229 0.224 0.225'",
    "resnet50": "torchvision's ImageNet weights expect --mean '0.485 0.456 0.406' --std "
    "'0.229 0.224 0.225'",
    "dm_wide_resnet": "DeepMind's models normalise inside with statistics that are not in the "
    "state dict; CIFAR-10's (their constructor's default) are used: give --mean/--std for "
    "other data (CIFAR-100: --mean '0.5071 0.4865 0.4409' --std '0.2673 0.2564 0.2762')",
}
_NORMALISED["dm_preact_resnet"] = _NORMALISED["dm_wide_resnet"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "import-torch",
        help="import PyTorch weights (RobustBench / torchvision layouts) as a checkpoint",
        description=(
            "Read a PyTorch state dict (.safetensors without torch, or .pt/.pth with "
            "torch.load(weights_only=True)) into geomrobust's NNX version of the architecture "
            "(NHWC input, BatchNorm in evaluation mode), with the input normalization inside "
            "the model, and write a checkpoint that every other command reads "
            "(--checkpoint OUT)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("weights", metavar="WEIGHTS", help="the .safetensors / .pt / .pth file")
    p.add_argument("--arch", required=True, choices=ARCHS, help="architecture (key layout)")
    p.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="WideResNet depth (6n+4; default 28); DeepMind PreActResNet: 18 or 34",
    )
    p.add_argument(
        "--widen-factor",
        type=positive_int,
        default=None,
        help="WideResNet width factor (default 10; DeepMind's 'width')",
    )
    p.add_argument(
        "--activation",
        choices=("relu", "swish"),
        default=None,
        help="DeepMind models: ReLU or Swish (SiLU) (default relu)",
    )
    p.add_argument("--num-classes", type=positive_int, default=10, help="number of logits")
    p.add_argument(
        "--input-shape", type=positive_int, nargs=3, default=(32, 32, 3), metavar=("H", "W", "C"),
        help="image shape the model is measured on (NHWC)",
    )  # fmt: skip
    p.add_argument(
        "--mean", type=_floats, default=None,
        help="per-channel input mean, e.g. '0.4914 0.4822 0.4465' (None: none, or the "
        "checkpoint's mu buffer)",
    )  # fmt: skip
    p.add_argument("--std", type=_floats, default=None, help="per-channel input std")
    p.add_argument("--config", default="{}", help="more architecture options as JSON, e.g. "
                   "'{\"bn_before_fc\": true}'")  # fmt: skip
    p.add_argument("--dataset", default="cifar10", help="the dataset the model classifies "
                   "(the default of the other commands' --dataset)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=Implementation(f"{__package__}._import_torch_run"))
    return p
