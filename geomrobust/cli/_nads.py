"""``geomrobust nads``: neural anisotropy directions and the Fourier accuracy map of a model."""

from __future__ import annotations

import argparse

from ._args import add_resume_args, parse_resize, positive_float, positive_int, seed
from ._dispatch import Implementation

__all__ = ["add_parser"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW or HxWxC (e.g. 8x8x1), got {text!r}")
    return shape if len(shape) == 3 else (*shape, 1)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "nads",
        help="neural anisotropy directions (NADs) of an architecture, and its Fourier map",
        description=(
            "Eigen-decomposition of E_θ[∇f_θ(x0) ∇f_θ(x0)ᵀ] over random initialisations θ of "
            "an architecture at a fixed x0 ~ N(0, I) (the two-class logit difference f_1 - f_0 "
            "is the scalar output), streamed over batches of networks. With --accuracy-map, "
            "also train the architecture on the directional datasets D(v) for 2-D Fourier "
            "directions v and map the test accuracies. The architecture comes from "
            "--checkpoint (its configuration, not its weights) or from --model."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("architecture")
    g.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="take the architecture (not the weights) from this checkpoint",
    )
    g.add_argument(
        "--model",
        choices=("mlp", "lenet", "resnet"),
        default="lenet",
        help="architecture when no --checkpoint is given",
    )
    g.add_argument(
        "--config",
        metavar="JSON",
        default="{}",
        help='extra model options as JSON, e.g. \'{"activation": "softplus"}\'',
    )
    g.add_argument(
        "--input-shape",
        metavar="HxWxC",
        type=_shape,
        default=None,
        help="input shape; None means the checkpoint's, else 8x8x1",
    )
    g.add_argument(
        "--resize",
        metavar="S|HxW",
        type=parse_resize,
        default=None,
        help="alternative to --input-shape: S×S or H×W with the checkpoint's channels",
    )
    n = p.add_argument_group("NADs")
    n.add_argument("--num-networks", type=positive_int, default=256, help="initialisations")
    n.add_argument("--batch", type=positive_int, default=32, help="networks per jitted batch")
    n.add_argument("--num", type=positive_int, default=16, help="NADs kept and plotted")
    n.add_argument("--out", metavar="DIR", default=None, help="directory for the results")
    n.add_argument("--key", metavar="INT", type=seed, default=0, help="PRNG seed")
    m = p.add_argument_group("Fourier accuracy map")
    m.add_argument("--accuracy-map", action="store_true", help="compute the accuracy map")
    m.add_argument(
        "--map-stride",
        type=positive_int,
        default=1,
        help="use every S-th frequency along each axis (speed)",
    )
    m.add_argument("--map-train", type=positive_int, default=1000, help="training examples")
    m.add_argument("--map-test", type=positive_int, default=500, help="test examples")
    m.add_argument("--map-steps", type=positive_int, default=300, help="Adam steps per direction")
    m.add_argument("--map-lr", type=positive_float, default=1e-2, help="Adam learning rate")
    m.add_argument("--map-chunk", type=positive_int, default=16, help="directions per vmap")
    m.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    add_resume_args(p)
    p.set_defaults(func=Implementation(f"{__package__}._nads_run"))
    return p
