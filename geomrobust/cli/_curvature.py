"""``geomrobust curvature``: principal curvatures of the decision boundary near data points."""

from __future__ import annotations

import argparse

from ._args import (
    add_analysis_command,
    add_box_arg,
    add_deepfool_args,
    nonnegative_int,
    positive_float,
    positive_int,
)
from ._dispatch import Implementation

__all__ = ["add_parser"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_analysis_command(
        subparsers,
        "curvature",
        help="principal curvatures of the decision boundary at boundary points near the data",
        description=(
            "For each example: DeepFool to the nearest boundary, bisection onto it "
            "(F_k = f_k - f_y = 0), then the principal curvatures of the boundary there "
            "(eigenvalues of P H P / ||grad F_k||, largest magnitude first; positive = bends "
            "towards the example's class). Also: the singular-value decay of the stacked "
            "normals and top principal directions (shared directions), fooling rates of "
            "random perturbations in the shared subspace vs isotropic ones, and optionally "
            "the top eigenvalues of the input-space loss Hessian. Writes results.npz, "
            "summary.json and PNG figures to --out."
        ),
        devices=True,
        resume=True,
    )
    g = p.add_argument_group("curvature")
    g.add_argument("--num", type=positive_int, default=20, help="principal curvatures per point")
    g.add_argument(
        "--method",
        choices=("auto", "dense", "lanczos"),
        default="auto",
        help="eigensolver: dense Hessian + eigh, matrix-free Lanczos, or auto by input size",
    )
    g.add_argument(
        "--tol",
        type=positive_float,
        default=None,
        help="relative residual tolerance (None: 1e-3 float32, 1e-6 float64)",
    )
    g.add_argument(
        "--restarts",
        "--max-restarts",
        dest="restarts",
        type=positive_int,
        default=30,
        help="Lanczos restarts (--max-restarts: the old name)",
    )
    g.add_argument(
        "--scale",
        type=positive_float,
        default=None,
        help="curvature at this scale σ (the Gaussian-smoothed boundary; needed for ReLU "
        "networks, whose exact Hessian is zero; also applies to --loss-eigs); None: exact",
    )
    g.add_argument(
        "--samples", type=positive_int, default=256,
        help="gradient samples per point at a scale (even; standard error ~ 1/sqrt)",
    )  # fmt: skip
    add_deepfool_args(g)
    add_box_arg(g)
    g.add_argument(
        "--loss-eigs",
        type=nonnegative_int,
        default=0,
        help="also the top eigenvalues of the loss Hessian per example (0: skip)",
    )
    g.add_argument(
        "--shared-dim",
        type=positive_int,
        default=10,
        help="dimension of the shared subspace for the fooling-rate test",
    )
    g.add_argument(
        "--fooling-samples",
        type=nonnegative_int,
        default=16,
        help="random draws per example and kind for fooling rates (0: skip)",
    )
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=Implementation(f"{__package__}._curvature_run"))
    return p
