"""``geomrobust slice``: 2-D sections of the decision boundary and the loss near examples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ._common import add_model_data_args, load_model_and_data, one_line, positive_int, write_results

__all__ = ["add_parser", "run"]

PLANES = ("adversarial", "principal", "tangent")


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
    add_model_data_args(p)
    g = p.add_argument_group("slices")
    g.add_argument(
        "--index",
        type=int,
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
        type=float,
        default=None,
        help="half-width of the grid; None means 3 x the DeepFool margin",
    )
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from geomrobust.measures import boundary_slice, principal_curvatures, random_orthogonal
    from geomrobust.search import deepfool, refine_boundary

    try:
        logits_fn, data, meta = load_model_and_data(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"geomrobust slice: error: {one_line(e)}", file=sys.stderr)
        return 2
    n = data.images.shape[0]
    bad = [i for i in args.index if not 0 <= i < n]
    if bad:
        print(f"geomrobust slice: error: --index {bad} outside [0, {n})", file=sys.stderr)
        return 2
    out = Path(args.out or "slice_results")
    key = jax.random.key(args.key)
    x = jnp.asarray(data.images[np.asarray(args.index)])
    pred = jnp.argmax(logits_fn(x), -1)
    df = deepfool(logits_fn, x, pred)
    bp = refine_boundary(logits_fn, x, x + df.perturbation, pred)
    arrays, summary, figures = {}, {"command": "slice", "metadata": meta, "slices": []}, []
    for j, i in enumerate(args.index):
        if not (bool(df.converged[j]) and float(df.margin[j]) > 0 and bool(bp.converged[j])):
            summary["slices"].append({"index": int(i), "status": "no boundary point found"})
            continue
        kj = jax.random.fold_in(key, int(i))
        margin = float(df.margin[j])
        extent = args.extent or 3.0 * margin
        yj, kk = int(bp.y[j]), int(bp.k[j])
        planes = {}
        if "adversarial" in args.planes:
            u = df.perturbation[j] / jnp.linalg.norm(df.perturbation[j])
            planes["adversarial"] = (x[j], u, random_orthogonal(kj, u))
        if {"principal", "tangent"} & set(args.planes):
            curv = principal_curvatures(
                logits_fn, bp.z[j : j + 1], bp.y[j : j + 1], bp.k[j : j + 1], num=1, key=kj
            )
            nrm = curv.normal[0]
            if "principal" in args.planes:
                planes["principal"] = (bp.z[j], nrm, curv.directions[0, 0])
            if "tangent" in args.planes:
                planes["tangent"] = (
                    bp.z[j],
                    nrm,
                    random_orthogonal(jax.random.fold_in(kj, 1), nrm),
                )
        for name, (c, u, v) in planes.items():
            s = boundary_slice(logits_fn, c, u, v, extent, args.resolution, classes=(yj, kk))
            tag = f"{i}_{name}"
            for field in ("labels", "logit_diff", "loss", "contour", "a", "b"):
                arrays[f"{field}_{tag}"] = np.asarray(getattr(s, field))
            summary["slices"].append(dict(
                index=int(i), plane=name, y=yj, k=kk, margin=margin, extent=float(extent),
                boundary_points=int(s.contour.shape[0]),
            ))  # fmt: skip
            figures.append((tag, name, s))
    write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, figures)
    print(f"slice: {len(figures)} slices of {len(args.index)} example(s); results in {out}")
    return 0


AXES = {
    "adversarial": ("adversarial direction", "random direction"),
    "principal": ("normal n", "top principal direction"),
    "tangent": ("normal n", "random tangent direction"),
}


def _plots(out, figures):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.plot._slices import plot_loss_surface, plot_slice

    for tag, name, s in figures:
        xl, yl = AXES[name]
        fig, _ = plot_slice(s.labels, s.a, s.b, s.contour, xlabel=xl, ylabel=yl,
                            title=f"Decision regions ({name} plane)")  # fmt: skip
        fig.savefig(out / f"slice_{tag}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig, _ = plot_loss_surface(s.loss, s.a, s.b, xlabel=xl, ylabel=yl)
        fig.savefig(out / f"loss_{tag}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
