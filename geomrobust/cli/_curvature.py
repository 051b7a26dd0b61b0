"""``geomrobust curvature``: principal curvatures of the decision boundary near data points."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import _common as common

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    common.add_devices_arg(common.add_model_data_args(p))
    common.add_resume_args(p)
    common.add_distributed_args(p)
    g = p.add_argument_group("curvature")
    g.add_argument(
        "--num", type=common.positive_int, default=20, help="principal curvatures per point"
    )
    g.add_argument(
        "--method",
        choices=("auto", "dense", "lanczos"),
        default="auto",
        help="eigensolver: dense Hessian + eigh, matrix-free Lanczos, or auto by input size",
    )
    g.add_argument(
        "--tol",
        type=common.positive_float,
        default=None,
        help="relative residual tolerance (None: 1e-3 float32, 1e-6 float64)",
    )
    g.add_argument(
        "--restarts",
        "--max-restarts",
        dest="restarts",
        type=common.positive_int,
        default=30,
        help="Lanczos restarts (--max-restarts: the old name)",
    )
    g.add_argument(
        "--scale",
        type=common.positive_float,
        default=None,
        help="curvature at this scale σ (the Gaussian-smoothed boundary; needed for ReLU "
        "networks, whose exact Hessian is zero; also applies to --loss-eigs); None: exact",
    )
    g.add_argument(
        "--samples", type=common.positive_int, default=256,
        help="gradient samples per point at a scale (even; standard error ~ 1/sqrt)",
    )  # fmt: skip
    common.add_deepfool_args(g)
    common.add_box_arg(g)
    g.add_argument(
        "--loss-eigs",
        type=common.nonnegative_int,
        default=0,
        help="also the top eigenvalues of the loss Hessian per example (0: skip)",
    )
    g.add_argument(
        "--shared-dim",
        type=common.positive_int,
        default=10,
        help="dimension of the shared subspace for the fooling-rate test",
    )
    g.add_argument(
        "--fooling-samples",
        type=common.nonnegative_int,
        default=16,
        help="random draws per example and kind for fooling rates (0: skip)",
    )
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomrobust.analyses import CurvatureSettings, curvature

    common.start_processes(args)
    with common.user_errors(2, "--devices: "):
        devs = common.cli_devices(args)
    with common.user_errors(2):
        clf, data, meta = common.load_model_and_data(args)
        settings = common.settings_from_args(CurvatureSettings, args).check(data.images.shape[1:])
    out = Path(args.out or "curvature_results")
    common.hold_run_out(out, args)  # another run into the same --out stops here
    n = int(data.images.shape[0])
    store = common.open_run_store(out, settings, args, meta, n)  # an interrupted run resumes there
    with common.user_errors(1), common.warnings_as_lines("curvature"):
        arrays, summary = curvature.compute(
            clf, data, settings, store=store, progress=common.show_progress(), devices=devs
        )
    if summary["num_boundary_points"] == 0:
        raise common.CLIError("no boundary point found", 1)
    summary = {"command": "curvature", **summary, "metadata": meta}
    if not common.writes_outputs(args):  # --distributed: process 0 writes
        return 0
    common.write_results(out, arrays, summary, args=args)
    values, conv = arrays["values"], arrays["converged"]
    if not args.no_plots:
        _plots(out, values[conv] if conv.any() else values, arrays)
    kappa1 = f"{np.median(np.abs(values[conv, 0])):.4g}" if conv.any() else "n/a"
    at = "" if settings.scale is None else f" at scale {settings.scale:g}"
    print(
        f"curvature{at}: {int(conv.sum())}/{values.shape[0]} boundary points converged "
        f"(unconverged excluded); median |κ_1| over converged = {kappa1}; results in {out}"
    )
    if "note" in summary:
        print(f"curvature: note: {summary['note']}")
    return 0


def _plots(out, values, arrays):
    import matplotlib

    matplotlib.use("Agg")
    from geomrobust.plot import plot_curvature_spectrum, plot_singular_values

    fig, _ = plot_curvature_spectrum(values)
    common.save_figure(fig, out / "curvature_spectrum.png")
    fig, ax = plot_singular_values(arrays["normals_singular_values"], label="normals")
    plot_singular_values(
        arrays["top_directions_singular_values"], ax=ax, label="top principal directions"
    )
    common.save_figure(fig, out / "shared_directions.png")
