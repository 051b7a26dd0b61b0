"""``geomrobust slice``: 2-D sections of the decision boundary and the loss near examples."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _common as common

__all__ = ["add_parser", "run"]

PLANES = ("adversarial", "principal", "tangent")  # the planes of geomrobust.analyses.slices


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    common.add_model_data_args(p)
    common.add_distributed_args(p)
    g = p.add_argument_group("slices")
    g.add_argument(
        "--index",
        type=common.nonnegative_int,
        nargs="+",
        default=[0],
        help="indices (within the first --n examples) of the examples to slice",
    )
    g.add_argument(
        "--planes", nargs="+", choices=PLANES, default=list(PLANES), help="which planes to slice"
    )
    g.add_argument(
        "--resolution", type=common.positive_int, default=101, help="grid points per axis"
    )
    g.add_argument(
        "--extent",
        type=common.positive_float,
        default=None,
        help="half-width of the grid; None means 3 x the DeepFool margin",
    )
    common.add_deepfool_args(g)
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomrobust.analyses import SliceSettings, slices

    common.start_processes(args)
    with common.user_errors(2):
        clf, data, meta = common.load_model_and_data(args)
        settings = common.settings_from_args(SliceSettings, args).check(data.images.shape[0])
    out = Path(args.out or "slice_results")
    if common.writes_outputs(args):  # --distributed: process 0 writes, the others nothing
        common.hold_out(out)
    with common.user_errors(1), common.warnings_as_lines("slice"):
        arrays, summary = slices.compute(clf, data, settings, progress=common.show_progress())
    summary = {"command": "slice", "metadata": meta, **summary}
    if not common.writes_outputs(args):
        return 0
    common.write_results(out, arrays, summary, args=args)
    done = [r for r in summary["slices"] if "plane" in r]
    if not args.no_plots:
        _plots(out, arrays, done)
    print(f"slice: {len(done)} slices of {len(args.index)} example(s); results in {out}")
    return 0


def _plots(out, arrays, records):
    import matplotlib

    matplotlib.use("Agg")
    from geomrobust.analyses.slices import PLANES
    from geomrobust.plot import plot_loss_surface, plot_slice

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
        common.save_figure(fig, out / f"slice_{tag}.png", dpi=110)
        fig, _ = plot_loss_surface(arrays[f"loss_{tag}"], a, b, xlabel=xl, ylabel=yl)
        common.save_figure(fig, out / f"loss_{tag}.png", dpi=110)
