"""``geomrobust curvature``: principal curvatures of the decision boundary near data points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ._common import (
    add_devices_arg,
    add_model_data_args,
    add_resume_args,
    cli_devices,
    load_model_and_data,
    nonnegative_float,
    nonnegative_int,
    one_line,
    open_run_store,
    positive_float,
    positive_int,
    progress_bar,
    write_results,
)

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
    add_devices_arg(add_model_data_args(p))
    add_resume_args(p)
    g = p.add_argument_group("curvature")
    g.add_argument("--num", type=positive_int, default=20, help="principal curvatures per point")
    g.add_argument(
        "--method", choices=("auto", "dense", "lanczos"), default="auto",
        help="eigensolver: dense Hessian + eigh, matrix-free Lanczos, or auto by input size",
    )  # fmt: skip
    g.add_argument(
        "--tol",
        type=positive_float,
        default=None,
        help="relative residual tolerance (None: 1e-3 float32, 1e-6 float64)",
    )
    g.add_argument("--max-restarts", type=positive_int, default=30, help="Lanczos restarts")
    g.add_argument("--overshoot", type=nonnegative_float, default=0.02, help="DeepFool overshoot")
    g.add_argument("--max-iter", type=positive_int, default=50, help="DeepFool iterations")
    g.add_argument(
        "--loss-eigs",
        type=nonnegative_int,
        default=0,
        help="also the top eigenvalues of the loss Hessian per example (0: skip)",
    )
    g.add_argument(
        "--shared-dim",
        type=positive_int,
        default=10,
        help="dimension of the shared subspace for the fooling-rate test",
    )
    g.add_argument(
        "--fooling-samples",
        type=nonnegative_int,
        default=16,
        help="random draws per example and kind for fooling rates (0: skip)",
    )
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from geomrobust.measures import (
        loss_hessian_eigs,
        principal_curvatures,
        shared_directions,
        subspace_fooling_rate,
    )  # fmt: skip
    from geomrobust.search import deepfool, refine_boundary

    try:
        devs = cli_devices(args)
    except ValueError as e:
        print(f"geomrobust curvature: error: --devices: {one_line(e)}", file=sys.stderr)
        return 2
    try:
        logits_fn, data, meta = load_model_and_data(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"geomrobust curvature: error: {one_line(e)}", file=sys.stderr)
        return 2
    out = Path(args.out or "curvature_results")
    x = jnp.asarray(data.images)
    n, shape = x.shape[0], x.shape[1:]
    d = int(np.prod(shape))
    if args.num > d - 1:
        print(f"geomrobust curvature: error: --num must be <= D-1 = {d - 1}", file=sys.stderr)
        return 2
    key = jax.random.key(args.key)
    chunk = args.chunk_size
    try:  # per-chunk results in OUT/chunks: an interrupted run resumes there
        store = open_run_store(out, args, meta, n)
    except (ValueError, OSError) as e:
        print(f"geomrobust curvature: error: {one_line(e)}", file=sys.stderr)
        return 1

    size = min(chunk, n)  # rows of every curvature solve

    def boundary(sl):
        """DeepFool -> bisection onto the boundary for one chunk; curvature fields empty."""
        xc = x[sl]
        pred = jnp.argmax(logits_fn(xc), -1)
        df = deepfool(logits_fn, xc, pred, overshoot=args.overshoot, max_iter=args.max_iter)
        bp = refine_boundary(logits_fn, xc, xc + df.perturbation, pred)
        ok = np.asarray(bp.converged & df.converged & (df.margin > 0))
        m = xc.shape[0]
        return {
            "z": np.asarray(bp.z), "y": np.asarray(bp.y), "k": np.asarray(bp.k), "ok": ok,
            "margin": np.asarray(df.margin),
            "values": np.full((m, args.num), np.nan, x.dtype),
            "converged": np.zeros(m, bool),
            "residuals": np.full((m, args.num), np.nan, x.dtype),
            "normal": np.zeros(xc.shape, x.dtype),
            "top_direction": np.zeros(xc.shape, x.dtype),
        }  # fmt: skip

    def some_chunks(i, sl):
        """Boundary points of each chunk in ``sl`` (one chunk, or one per device with
        --devices), then ONE curvature call on them: each chunk's points padded to ``size``
        rows form one block (one compilation; with --devices one block per device), and the
        point of example ``j`` draws its Lanczos start from ``fold_in(key, j)``, so results do
        not depend on the grouping or the number of devices."""
        parts = [
            boundary(slice(a, min(a + chunk, sl.stop))) for a in range(sl.start, sl.stop, chunk)
        ]
        blocks, where = [], []
        for j, (a, res) in enumerate(zip(range(sl.start, sl.stop, chunk), parts, strict=True)):
            sel = np.nonzero(res["ok"])[0]
            if sel.size:
                pad = np.concatenate([sel, np.full(size - sel.size, sel[-1])])
                blocks.append((res["z"][pad], res["y"][pad], res["k"][pad], a + pad))
                where.append((j, sel))
        if blocks:
            z_, y_, k_, ids = (np.concatenate(c) for c in zip(*blocks, strict=True))
            curv = principal_curvatures(
                logits_fn, jnp.asarray(z_), jnp.asarray(y_), jnp.asarray(k_), num=args.num,
                key=key, method=args.method, tol=args.tol, max_restarts=args.max_restarts,
                chunk_size=size, devices=devs, ids=ids, num_directions=1,
            )  # fmt: skip
            values, converged = np.asarray(curv.values), np.asarray(curv.converged)
            residuals, normal = np.asarray(curv.residuals), np.asarray(curv.normal)
            top = np.asarray(curv.directions[:, 0])
            for b, (j, sel) in enumerate(where):
                rows = slice(b * size, b * size + sel.size)
                res = parts[j]
                res["values"][sel], res["converged"][sel] = values[rows], converged[rows]
                res["residuals"][sel], res["normal"][sel] = residuals[rows], normal[rows]
                res["top_direction"][sel] = top[rows]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    with progress_bar(n, "deepfool + curvature") as bar:
        a = store.map(
            some_chunks, n=n, chunk_size=chunk, progress=bar.update, group=len(devs or [None])
        )
    z, y, k, ok, margin = a["z"], a["y"], a["k"], a["ok"], a["margin"]
    idx = np.nonzero(ok)[0]
    if idx.size == 0:
        print("geomrobust curvature: error: no boundary point found", file=sys.stderr)
        return 1
    curv = SimpleNamespace(
        values=a["values"][idx], converged=a["converged"][idx], residuals=a["residuals"][idx],
        normal=jnp.asarray(a["normal"][idx]),
        directions=jnp.asarray(a["top_direction"][idx])[:, None],
    )  # fmt: skip
    values = np.asarray(curv.values)
    conv = np.asarray(curv.converged)
    normals = shared_directions(curv.normal)
    top_dirs = shared_directions(curv.directions[:, :1], input_shape=shape)
    arrays = dict(
        index=idx, values=values, converged=conv, residuals=np.asarray(curv.residuals),
        normal=np.asarray(curv.normal), top_direction=np.asarray(curv.directions[:, 0]),
        z=z[idx], y=y[idx], k=k[idx], margin=margin[idx],
        normals_singular_values=np.asarray(normals.normalized),
        top_directions_singular_values=np.asarray(top_dirs.normalized),
    )  # fmt: skip
    good = values[conv]
    summary = dict(
        command="curvature", num_examples=int(n), num_boundary_points=int(idx.size),
        num_converged=int(conv.sum()), num_unconverged=int((~conv).sum()), metadata=meta,
        median_abs_curvature_by_rank=np.median(np.abs(good), 0).tolist() if len(good) else [],
        median_curvature_by_rank=np.median(good, 0).tolist() if len(good) else [],
        median_margin=float(np.median(margin[idx])),
        normals_singular_values=np.asarray(normals.normalized[:10]).tolist(),
        top_directions_singular_values=np.asarray(top_dirs.normalized[:10]).tolist(),
    )  # fmt: skip
    if args.fooling_samples > 0:
        dim = min(args.shared_dim, top_dirs.basis.shape[1])
        radius = float(np.median(margin[idx]))
        xs = x[idx]
        fr = subspace_fooling_rate(
            logits_fn, xs, top_dirs.basis[:, :dim].astype(xs.dtype), radius=radius,
            num_samples=args.fooling_samples, key=jax.random.fold_in(key, 1), chunk_size=chunk,
        )  # fmt: skip
        summary.update(fooling_radius=radius, fooling_subspace_dim=int(dim),
                       fooling_rate_shared_subspace=float(fr.subspace),
                       fooling_rate_isotropic=float(fr.isotropic))  # fmt: skip
    if args.loss_eigs > 0:
        with progress_bar(n, "loss hessian") as bar:
            le = loss_hessian_eigs(
                logits_fn, x, jnp.asarray(data.labels), num=min(args.loss_eigs, d),
                key=jax.random.fold_in(key, 2), chunk_size=chunk, progress=bar.update,
            )  # fmt: skip
        arrays.update(loss_eigs=np.asarray(le.values), loss_eigs_converged=np.asarray(le.converged))
        summary["median_top_loss_eig"] = float(np.median(np.asarray(le.values)[:, 0]))
    write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, values[conv] if conv.any() else values, normals, top_dirs)
    kappa1 = f"{np.median(np.abs(values[conv, 0])):.4g}" if conv.any() else "n/a"
    print(
        f"curvature: {int(conv.sum())}/{idx.size} boundary points converged (unconverged "
        f"excluded); median |κ_1| over converged = {kappa1}; results in {out}"
    )
    return 0


def _plots(out, values, normals, top_dirs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.plot._curvature import plot_curvature_spectrum, plot_singular_values

    fig, _ = plot_curvature_spectrum(values)
    fig.savefig(out / "curvature_spectrum.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plot_singular_values(normals.normalized, label="normals")
    plot_singular_values(top_dirs.normalized, ax=ax, label="top principal directions")
    fig.savefig(out / "shared_directions.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
