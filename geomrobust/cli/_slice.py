"""``geomrobust slice``: 2-D sections of the decision boundary and the loss near examples."""

from __future__ import annotations

import argparse

from ._args import (
    add_analysis_command,
    add_deepfool_args,
    nonnegative_int,
    positive_float,
    positive_int,
)
from ._dispatch import Implementation

__all__ = ["add_parser"]

PLANES = ("adversarial", "principal", "tangent")  # the planes of geomrobust.analyses.slices


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_analysis_command(
        subparsers,
        "slice",
        help="2-D slices of the decision boundary and the loss around examples",
        description=(
            "For each selected example: (adversarial) the plane through x spanned by its "
            "DeepFool direction and a random orthogonal direction; at the boundary point z "
            "found by bisection, (principal) the plane of the normal and the most curved "
            "principal direction, and (tangent) the plane of the normal and a random tangent "
            "direction. Writes labels, logit differences and losses on an R x R grid to "
            "results.npz, a summary.json and PNG figures."
        ),
        devices=False,
        resume=False,
    )
    g = p.add_argument_group("slices")
    g.add_argument(
        "--index",
        type=nonnegative_int,
        nargs="+",
        default=[0],
        help="indices (within the first --n examples) of the examples to slice",
    )
    g.add_argument(
        "--planes", nargs="+", choices=PLANES, default=list(PLANES), help="which planes to slice"
    )
    g.add_argument("--resolution", type=positive_int, default=101, help="grid points per axis")
    g.add_argument(
        "--extent",
        type=positive_float,
        default=None,
        help="half-width of the grid; None means 3 x the DeepFool margin",
    )
    add_deepfool_args(g)
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=Implementation(f"{__package__}._slice_run"))
    return p
