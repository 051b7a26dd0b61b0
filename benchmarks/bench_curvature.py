"""Principal curvatures (top 20, matrix-free Lanczos) vs dense Hessian + eigh.

Boundary points of the trained CNN (DeepFool + bisection onto the boundary), then
``principal_curvatures(method="lanczos")`` against ``method="dense"`` (D HVPs forming H, then
``eigh`` of the (D-1)x(D-1) tangent matrix), both jitted once and run in the same chunks;
dense is timed on a subset and extrapolated (it is the slow reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.measures import principal_curvatures
from geomrobust.search import deepfool_dataset, refine_boundary

from ._common import pool, timed, trained_cnn


def boundary_points(logits_fn, x):
    x = jnp.asarray(x)
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
    df = deepfool_dataset(logits_fn, x, y)
    bp = refine_boundary(logits_fn, x, x + df.perturbation, y)
    ok = np.asarray(bp.converged & df.converged & (df.margin > 0))
    return bp.z[ok], bp.y[ok], bp.k[ok]


def run(dims=(1024,), n=32, *, num=20, chunk=8, dense_points=8):
    return [_one(d, n, num, chunk, dense_points) for d in dims]


def _one(d, n, num, chunk, dense_points):
    logits_fn, _, _, _ = trained_cnn(d)
    z, y, k = boundary_points(logits_fn, pool(d, n))
    n_ok = int(z.shape[0])
    kw = dict(num=num, key=jax.random.key(0), chunk_size=chunk)
    t_l, lz = timed(
        lambda: principal_curvatures(logits_fn, z, y, k, method="lanczos", **kw), repeat=1
    )
    m = min(dense_points, n_ok)
    t_d, dn = timed(
        lambda: principal_curvatures(logits_fn, z[:m], y[:m], k[:m], method="dense", **kw),
        repeat=1,
    )
    t_d *= n_ok / m
    lv, dv = np.asarray(lz.values[:m], np.float64), np.asarray(dn.values, np.float64)
    rel = float(np.max(np.abs(np.abs(lv) - np.abs(dv)) / np.abs(dv).max(1, keepdims=True)))
    return (
        dict(name=f"principal curvatures D={d} N={n_ok} top-{num}", ours=t_l,
             reference=f"dense Hessian + eigh (extrapolated from {m})", ref=t_d,
             target="", ok=None, D=d, N=n_ok,
             converged=round(float(np.mean(np.asarray(lz.converged))), 4),
             max_rel_diff_vs_dense=rel)
    )  # fmt: skip
