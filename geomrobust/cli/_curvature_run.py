"""``geomrobust curvature``: the implementation, imported when the command runs.

Principal curvatures of the decision boundary near data points. The parser and its options are
in ``cli/_curvature.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from geomrobust.analyses import CurvatureSettings, curvature
from geomrobust.plot import plot_curvature_spectrum, plot_singular_values

from ._errors import CLIError, user_errors
from ._loading import cli_devices, load_model_and_data
from ._locks import OutputLocks
from ._outputs import compute_analysis, save_figure, write_results
from ._processes import start_processes, writes_outputs
from ._settings import settings_from_args

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    start_processes(args)
    with user_errors(2, "--devices: "):
        devs = cli_devices(args)
    with user_errors(2):
        clf, data, meta = load_model_and_data(args)
        settings = settings_from_args(CurvatureSettings, args).check(data.images.shape[1:])
    out = Path(args.out or "curvature_results")
    arrays, summary = compute_analysis(
        curvature, "curvature", clf, data, settings, meta, args, outputs, out, devices=devs
    )
    if summary["num_boundary_points"] == 0:
        raise CLIError("no boundary point found", 1)
    summary = {"command": "curvature", **summary, "metadata": meta}
    if not writes_outputs(args):  # --distributed: process 0 writes
        return 0
    write_results(out, arrays, summary, args=args)
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
    fig, _ = plot_curvature_spectrum(values)
    save_figure(fig, out / "curvature_spectrum.png")
    fig, ax = plot_singular_values(arrays["normals_singular_values"], label="normals")
    plot_singular_values(
        arrays["top_directions_singular_values"], ax=ax, label="top principal directions"
    )
    save_figure(fig, out / "shared_directions.png")
