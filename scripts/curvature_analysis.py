"""Curvature statistics of a checkpoint's decision boundary over a dataset.

For each example: L2 DeepFool, bisection onto the boundary F_k = 0, principal curvatures
(Fawzi et al., CVPR 2018), shared directions (SVD of the stacked normals / top curved
directions) and the top eigenvalues of the input-space loss Hessian (CURE, CVPR 2019).
Writes OUT/results.npz, OUT/summary.json and OUT/*.png.

    python scripts/curvature_analysis.py --checkpoint runs/lenet --n 64 --out curv
    python scripts/curvature_analysis.py --quick-model --n 16 --out curv   # report's model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="checkpoint from `geomrobust train`")
    src.add_argument(
        "--quick-model",
        action="store_true",
        help="use (train once and cache) the quick standard LeNet of the report",
    )
    p.add_argument("--n", type=int, default=64, help="test examples")
    p.add_argument("--num", type=int, default=10, help="principal curvatures per point")
    p.add_argument("--loss-eigs", type=int, default=10, help="loss-Hessian eigenvalues")
    p.add_argument("--key", type=int, default=0, help="PRNG seed")
    p.add_argument("--out", default="curvature_analysis", help="output directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.data import load_dataset
    from geomrobust.measures import loss_hessian_eigs, principal_curvatures, shared_directions
    from geomrobust.models import as_logits_fn
    from geomrobust.plot._curvature import plot_curvature_spectrum, plot_singular_values
    from geomrobust.search import deepfool_dataset, refine_boundary
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
    f = as_logits_fn(ckpt.model)
    data = load_dataset(meta.get("dataset", "digits"), "test", resize=meta.get("resize"))
    x = jnp.asarray(data.images[: args.n])
    key = jax.random.key(args.key)
    pred = jnp.argmax(f(x), -1)
    df = deepfool_dataset(f, x)
    bp = refine_boundary(f, x, x + df.perturbation, pred)
    ok = np.asarray(bp.converged & df.converged & (df.margin > 0))
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        print("no boundary point found", file=sys.stderr)
        return 1
    num = min(args.num, int(np.prod(x.shape[1:])) - 1)
    c = principal_curvatures(f, bp.z[idx], bp.y[idx], bp.k[idx], num=num, key=key)
    conv = np.asarray(c.converged)
    vals = np.asarray(c.values)
    normals = shared_directions(c.normal)
    tops = shared_directions(c.directions[:, :1], input_shape=x.shape[1:])
    le = loss_hessian_eigs(
        f,
        x,
        jnp.asarray(data.labels[: args.n]),
        num=min(args.loss_eigs, int(np.prod(x.shape[1:]))),
        key=jax.random.fold_in(key, 1),
    )
    lv, lc = np.asarray(le.values), np.asarray(le.converged)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "results.npz",
        index=idx,
        curvatures=vals,
        converged=conv,
        margin=np.asarray(df.margin),
        loss_eigs=lv,
        loss_eigs_converged=lc,
        normals_sv=np.asarray(normals.normalized),
        top_sv=np.asarray(tops.normalized),
    )
    good = vals[conv]
    summary = {
        "checkpoint": str(path),
        "checkpoint_sha256": checkpoint_hash(path),
        "key": args.key,
        "n": int(x.shape[0]),
        "boundary_points": int(idx.size),
        "curvatures_converged": int(conv.sum()),
        "curvatures_unconverged": int((~conv).sum()),
        "median_abs_curvature_by_rank": np.median(np.abs(good), 0).tolist() if len(good) else None,
        "median_margin": float(np.median(np.asarray(df.margin)[idx])),
        "normals_singular_values": np.asarray(normals.normalized[:10]).tolist(),
        "top_directions_singular_values": np.asarray(tops.normalized[:10]).tolist(),
        "loss_eigs_converged": int(lc.sum()),
        "median_top_loss_eig": float(np.median(lv[lc, 0])) if lc.any() else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    fig, _ = plot_curvature_spectrum(good if len(good) else vals)
    fig.savefig(out / "curvature_spectrum.png", dpi=100, bbox_inches="tight")
    fig, ax = plot_singular_values(normals.normalized, label="normals")
    plot_singular_values(tops.normalized, ax=ax, label="top curved directions")
    fig.savefig(out / "shared_directions.png", dpi=100, bbox_inches="tight")
    plt.close("all")
    print(
        json.dumps(
            {k: summary[k] for k in ("boundary_points", "curvatures_converged", "median_margin")}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
