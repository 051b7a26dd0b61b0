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

from ._errors import CLIError, user_errors, warnings_as_lines
from ._loading import cli_devices, load_model_and_data
from ._locks import OutputLocks
from ._outputs import open_run_store, save_figure, write_results
from ._processes import hold_run_out, start_processes, writes_outputs
from ._progress import show_progress
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
    hold_run_out(outputs, out, args)  # another run into the same --out stops here
    n = int(data.images.shape[0])
    store = open_run_store(out, settings, args, meta, n)  # an interrupted run resumes there
    with user_errors(1), warnings_as_lines("curvature"):
        arrays, summary = curvature.compute(
            clf, data, settings, store=store, progress=show_progress(), devices=devs
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
