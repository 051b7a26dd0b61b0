"""``geomrobust margins``: minimal perturbations, attacks and subspace margins of a checkpoint."""

from __future__ import annotations

import argparse

from ._args import (
    add_analysis_command,
    add_box_arg,
    add_deepfool_args,
    positive_float,
    positive_int,
)
from ._dispatch import Implementation

__all__ = ["add_parser"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_analysis_command(
        subparsers,
        "margins",
        help="margins (DeepFool), attacks (PGD, SparseFool) and subspace margins",
        description=(
            "Measure how far the examples of a dataset are from the decision boundary of a "
            "checkpoint: minimal perturbations by DeepFool (L2 / Linf), robust accuracy "
            "under PGD, sparse perturbations by SparseFool, and margins inside DCT frequency "
            "bands (Hold me tight!) or random subspaces. Writes results.npz, summary.json "
            "and PNG plots to --out."
        ),
        devices=True,
        resume=True,
    )
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("deepfool", "pgd", "sparsefool", "best"),
        default="deepfool",
        help="boundary search; best: the smallest perturbation over DeepFool, FMN and (L2) "
        "C&W, with DeepFool's overestimate ratio",
    )
    g.add_argument(
        "--norm", choices=("2", "inf"), default="2", help="Lp norm (deepfool, pgd, best)"
    )
    g.add_argument("--fmn-steps", type=positive_int, default=100, help="FMN steps (best)")
    g.add_argument(
        "--cw-steps", type=positive_int, default=100, help="C&W steps per constant (best)"
    )
    g.add_argument(
        "--cw-binary-steps", type=positive_int, default=5,
        help="C&W constants tried by the binary search (best)",
    )  # fmt: skip
    g.add_argument(
        "--subspaces",
        choices=("none", "dct", "random"),
        default="none",
        help="deepfool L2 only: margins inside DCT bands or random subspaces",
    )
    add_deepfool_args(g)
    g.add_argument(
        "--slots",
        type=positive_int,
        default=32,
        help="continuous-batching working set of the DeepFool driver",
    )
    g.add_argument(
        "--eps",
        type=positive_float,
        nargs="+",
        default=None,
        help="PGD radii; None means 8/255-scaled defaults for the norm",
    )
    g.add_argument("--steps", type=positive_int, default=10, help="PGD steps")
    add_box_arg(g)
    g.add_argument(
        "--lambda", dest="lambda_", type=positive_float, default=3.0, help="SparseFool λ"
    )
    g.add_argument(
        "--block",
        type=positive_int,
        default=None,
        help="DCT block side K; None means min(8, H // 4)",
    )
    g.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="DCT diagonal stride T; None means 1 up to 28 pixels, else 2",
    )
    g.add_argument(
        "--subspace-dim",
        type=positive_int,
        default=None,
        help="random-subspace dimension m; None means D // 16",
    )
    g.add_argument("--draws", type=positive_int, default=3, help="random subspaces drawn")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=Implementation(f"{__package__}._margins_run"))
    return p
