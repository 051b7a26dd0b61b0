"""``geomrobust slice``: the implementation, imported when the command runs.

2-D sections of the decision boundary and the loss near examples. The parser and its options
are in ``cli/_slice.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geomrobust.analyses import SliceSettings, slices
from geomrobust.analyses.slices import PLANES
from geomrobust.plot import plot_loss_surface, plot_slice

from ._errors import user_errors, warnings_as_lines
from ._loading import load_model_and_data
from ._locks import OutputLocks
from ._outputs import save_figure, write_results
from ._processes import start_processes, writes_outputs
from ._progress import show_progress
from ._settings import settings_from_args

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    start_processes(args)
    with user_errors(2):
        clf, data, meta = load_model_and_data(args)
        settings = settings_from_args(SliceSettings, args).check(data.images.shape[0])
    out = Path(args.out or "slice_results")
    if writes_outputs(args):  # --distributed: process 0 writes, the others nothing
        outputs.hold(out)
    with user_errors(1), warnings_as_lines("slice"):
        arrays, summary = slices.compute(clf, data, settings, progress=show_progress())
    summary = {"command": "slice", "metadata": meta, **summary}
    if not writes_outputs(args):
        return 0
    write_results(out, arrays, summary, args=args)
    done = [r for r in summary["slices"] if "plane" in r]
    if not args.no_plots:
        _plots(out, arrays, done)
    print(f"slice: {len(done)} slices of {len(args.index)} example(s); results in {out}")
    return 0


def _plots(out, arrays, records):
    import matplotlib

    matplotlib.use("Agg")
    for r in records:
        name = r["plane"]
        tag = f"{r['index']}_{name}"
        a, b = arrays[f"a_{tag}"], arrays[f"b_{tag}"]
        xl, yl = PLANES[name].xlabel, PLANES[name].ylabel
        fig, _ = plot_slice(
            arrays[f"labels_{tag}"],
            a,
            b,
            arrays[f"contour_{tag}"],
            xlabel=xl,
            ylabel=yl,
            title=f"Decision regions ({name} plane)",
        )
        save_figure(fig, out / f"slice_{tag}.png", dpi=110)
        fig, _ = plot_loss_surface(arrays[f"loss_{tag}"], a, b, xlabel=xl, ylabel=yl)
        save_figure(fig, out / f"loss_{tag}.png", dpi=110)
