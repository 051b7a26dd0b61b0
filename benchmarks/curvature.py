"""Benchmark: top principal curvatures, matrix-free Lanczos vs dense Hessian + eigh.

For a CNN (the package's LeNet with softplus activations, random initialisation: the timing
does not depend on the weights' accuracy) on 32x32x1 (D = 1024) and 32x32x3 (D = 3072) inputs:
DeepFool + bisection give boundary points, then ``principal_curvatures`` computes the top
``--num`` curvatures with ``method="dense"`` (D Hessian-vector products forming H, then
``eigh`` of the (D-1)x(D-1) tangent matrix) and ``method="lanczos"`` (thick-restart Lanczos on
the matrix-free shape operator). Both are jitted once (warm-up call excluded from the timing)
and run in the same chunks. Prints a table of times, the speed-up and eigenvalue agreement.

    python benchmarks/curvature.py                      # 256 points, D = 1024 and 3072
    python benchmarks/curvature.py --points 32 --dims 1024   # scaled down

Targets (issue 4): >= 5x faster than dense at D = 3072 with eigenvalues within 1e-3 relative;
never slower than dense at D = 1024.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.measures import principal_curvatures
from geomrobust.models import as_classifier, create_model
from geomrobust.search import deepfool, refine_boundary

SHAPES = {256: (16, 16, 1), 1024: (32, 32, 1), 3072: (32, 32, 3)}


def boundary_points(logits_fn, shape, n, key):
    x = 0.5 + 0.25 * jax.random.normal(key, (n, *shape), jnp.float32)
    pred = jnp.argmax(logits_fn(x), -1)
    df = deepfool(logits_fn, x, pred)
    bp = refine_boundary(logits_fn, x, x + df.perturbation, pred)
    ok = np.asarray(bp.converged & df.converged & (df.margin > 0))
    return bp.z[ok], bp.y[ok], bp.k[ok]


def timed(fn, warm):
    jax.block_until_ready(warm())  # compile once
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.values)
    return out, time.perf_counter() - t


def measure(d, args):
    shape = SHAPES[d]
    key = jax.random.key(d)
    model = create_model("lenet", shape, 10, key=key, activation="softplus")
    logits_fn = as_classifier(model)
    z, y, k = boundary_points(logits_fn, shape, args.points, jax.random.fold_in(key, 1))
    n = z.shape[0]
    nd = n if args.dense_points is None else min(n, args.dense_points)
    kw = dict(num=args.num, key=jax.random.key(0), chunk_size=args.chunk)

    def run(method, m, **extra):
        return lambda: principal_curvatures(
            logits_fn, z[:m], y[:m], k[:m], method=method, **kw, **extra
        )

    def warm(method):
        c = min(args.chunk, n)
        return lambda: (
            principal_curvatures(logits_fn, z[:c], y[:c], k[:c], method=method, **kw).values
        )

    lz, t_l = timed(run("lanczos", n), warm("lanczos"))
    dn, t_d = timed(run("dense", nd), warm("dense"))
    t_d_full = t_d * n / nd
    both = np.asarray(lz.converged[:nd])
    lv, dv = np.asarray(lz.values[:nd], np.float64), np.asarray(dn.values, np.float64)
    # rank-wise by magnitude (robust to the order of a ± pair of equal |κ|), and signed values
    # matched to the nearest dense eigenvalue of the same point
    rel = np.abs(np.abs(lv) - np.abs(dv)) / np.abs(dv)
    nearest = np.abs(lv[:, :, None] - dv[:, None, :]).min(-1)
    rel_top = nearest.max(1) / np.abs(dv).max(1)
    if args.save:
        np.savez(f"{args.save}_{d}.npz", lanczos=lv, dense=dv, converged=both)
    return dict(
        D=d, points=n, dense_timed=nd, t_dense=t_d_full, t_lanczos=t_l, speedup=t_d_full / t_l,
        converged=float(np.mean(np.asarray(lz.converged))),
        restarts=float(np.mean(np.asarray(lz.restarts))),
        rel_median=float(np.median(rel[both])) if both.any() else np.nan,
        rel_max=float(np.max(rel[both])) if both.any() else np.nan,
        rel_top_max=float(np.max(rel_top[both])) if both.any() else np.nan,
    )  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=256, help="boundary points per dimension")
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 3072], choices=sorted(SHAPES))
    ap.add_argument("--num", type=int, default=20, help="principal curvatures per point")
    ap.add_argument("--chunk", type=int, default=16, help="points per jitted chunk")
    ap.add_argument(
        "--dense-points",
        type=int,
        default=None,
        help="time dense on only this many points and extrapolate (slow at 3072)",
    )
    ap.add_argument("--save", default=None, help="save the eigenvalues to SAVE_<D>.npz")
    args = ap.parse_args()  # fmt: skip

    rows = [measure(d, args) for d in args.dims]
    print(f"\ntop-{args.num} principal curvatures, LeNet (softplus), float32, "
          f"{jax.devices()[0].platform}, chunk {args.chunk}")  # fmt: skip
    hdr = ("D", "points", "dense s", "lanczos s", "speed-up", "conv", "restarts",
           "|κ| med", "|κ| max", "κ vs |κ1|")  # fmt: skip
    print(" | ".join(f"{h:>9}" for h in hdr))
    for r in rows:
        dense = f"{r['t_dense']:.2f}" + ("*" if r["dense_timed"] < r["points"] else "")
        cells = (r["D"], r["points"], dense, f"{r['t_lanczos']:.2f}", f"{r['speedup']:.1f}x",
                 f"{r['converged']:.0%}", f"{r['restarts']:.1f}", f"{r['rel_median']:.1e}",
                 f"{r['rel_max']:.1e}", f"{r['rel_top_max']:.1e}")  # fmt: skip
        print(" | ".join(f"{c:>9}" for c in cells))
    if any(r["dense_timed"] < r["points"] for r in rows):
        print("* dense time extrapolated from --dense-points points")


if __name__ == "__main__":
    main()
