"""Curvature statistics of a checkpoint's decision boundary over a dataset.

For each example: L2 DeepFool, bisection onto the boundary F_k = 0, principal curvatures
(Fawzi et al., CVPR 2018), shared directions (SVD of the stacked normals / top curved
directions) and the top eigenvalues of the input-space loss Hessian (CURE, CVPR 2019): the
curvature analysis of `geomrobust curvature` (geomrobust.analyses.curvature). Writes
OUT/results.npz, OUT/summary.json and OUT/*.png.

    python scripts/curvature_analysis.py --checkpoint runs/lenet --n 64 --out curv
    python scripts/curvature_analysis.py --quick-model --n 16 --out curv   # report's model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, nonnegative_int, positive_int, run_script, seed


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="checkpoint from `geomrobust train`")
    src.add_argument(
        "--quick-model",
        action="store_true",
        help="use (train once and cache) the quick standard LeNet of the report",
    )
    p.add_argument("--n", type=positive_int, default=64, help="test examples")
    p.add_argument("--num", type=positive_int, default=10, help="principal curvatures per point")
    p.add_argument("--loss-eigs", type=nonnegative_int, default=10, help="loss-Hessian eigenvalues")
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="curvature_analysis", help="output directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.analyses import CurvatureSettings, curvature
    from geomrobust.data import load_dataset
    from geomrobust.io import save_json, save_npz
    from geomrobust.plot import plot_curvature_spectrum, plot_singular_values
    from geomrobust.train import checkpoint_hash, load_checkpoint

    path = args.checkpoint
    if args.quick_model:
        from geomrobust.report import SIZES, cached_model, model_settings

        s = model_settings(
            "standard", SIZES["quick"], dataset="digits", data_dir=None, resize=None, key=0
        )
        path = cached_model("standard", s)[0]
    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    data = load_dataset(meta.get("dataset", "digits"), "test", resize=meta.get("resize"))
    data = data._replace(images=data.images[: args.n], labels=data.labels[: args.n])
    d = int(np.prod(data.images.shape[1:]))
    settings = CurvatureSettings(
        num=min(args.num, d - 1),
        loss_eigs=min(args.loss_eigs, d),
        fooling_samples=0,
        chunk_size=args.n,
        key=args.key,
    )
    # DeepFool -> bisection -> curvature at the valid boundary points, shared directions
    # and the loss-Hessian spectrum: the analysis behind `geomrobust curvature`
    arrays, summary = curvature.compute(ckpt.model, data, settings)
    if summary["num_boundary_points"] == 0:
        print("no boundary point found", file=sys.stderr)
        return 1
    summary = {
        "checkpoint": str(path),
        "checkpoint_sha256": checkpoint_hash(path),
        "key": args.key,
        "n": int(data.images.shape[0]),
        **summary,
    }
    out = Path(args.out)
    save_npz(out / "results.npz", arrays)
    save_json(out / "summary.json", summary)
    values, conv = arrays["values"], arrays["converged"]
    fig, _ = plot_curvature_spectrum(values[conv] if conv.any() else values)
    fig.savefig(out / "curvature_spectrum.png", dpi=100, bbox_inches="tight")
    fig, ax = plot_singular_values(arrays["normals_singular_values"], label="normals")
    plot_singular_values(
        arrays["top_directions_singular_values"], ax=ax, label="top curved directions"
    )
    fig.savefig(out / "shared_directions.png", dpi=100, bbox_inches="tight")
    plt.close("all")
    keys = ("num_boundary_points", "num_converged", "median_margin")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
