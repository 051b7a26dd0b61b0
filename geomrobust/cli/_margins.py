"""``geomrobust margins``: minimal perturbations, attacks and subspace margins of a checkpoint."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ._common import (
    add_devices_arg,
    add_model_data_args,
    add_resume_args,
    cli_devices,
    nonnegative_float,
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
        "margins",
        help="margins (DeepFool), attacks (PGD, SparseFool) and subspace margins",
        description=(
            "Measure how far the examples of a dataset are from the decision boundary of a "
            "checkpoint: minimal perturbations by DeepFool (L2 / Linf), robust accuracy "
            "under PGD, sparse perturbations by SparseFool, and margins inside DCT frequency "
            "bands (Hold me tight!) or random subspaces. Writes results.npz, summary.json "
            "and PNG plots to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_devices_arg(add_model_data_args(p))
    add_resume_args(p)
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("deepfool", "pgd", "sparsefool"),
        default="deepfool",
        help="boundary search",
    )
    g.add_argument("--norm", choices=("2", "inf"), default="2", help="Lp norm (deepfool, pgd)")
    g.add_argument(
        "--subspaces",
        choices=("none", "dct", "random"),
        default="none",
        help="deepfool L2 only: margins inside DCT bands or random subspaces",
    )
    g.add_argument("--overshoot", type=nonnegative_float, default=0.02, help="DeepFool overshoot η")
    g.add_argument("--max-iter", type=positive_int, default=50, help="DeepFool iterations")
    g.add_argument(
        "--slots",
        type=positive_int,
        default=32,
        help="continuous-batching working set of the DeepFool driver",
    )
    g.add_argument(
        "--eps",
        type=positive_float,
        nargs="+",
        default=None,
        help="PGD radii; None means 8/255-scaled defaults for the norm",
    )
    g.add_argument("--steps", type=positive_int, default=10, help="PGD steps")
    g.add_argument(
        "--lambda", dest="lambda_", type=positive_float, default=3.0, help="SparseFool λ"
    )
    g.add_argument(
        "--block",
        type=positive_int,
        default=None,
        help="DCT block side K; None means min(8, H // 4)",
    )
    g.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="DCT diagonal stride T; None means 1 up to 28 pixels, else 2",
    )
    g.add_argument(
        "--subspace-dim",
        type=positive_int,
        default=None,
        help="random-subspace dimension m; None means D // 16",
    )
    g.add_argument("--draws", type=positive_int, default=3, help="random subspaces drawn")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run)
    return p


def _fail(message: str, code: int = 1) -> int:
    """One-line error on stderr; exit code 2 for bad arguments, 1 for failures at run time."""
    print(f"geomrobust margins: error: {one_line(message)}", file=sys.stderr)
    return code


def _stats(v, ok) -> dict:
    ok = np.asarray(ok, bool)
    v = np.asarray(v, np.float64)[ok]
    excluded = {"n_excluded": int((~ok).sum())}  # unconverged or misclassified: not averaged
    if v.size == 0:
        return {"n": 0, **excluded}
    q = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size), **excluded, "mean": float(v.mean()),
        "q25": q[0], "median": q[1], "q75": q[2],
    }  # fmt: skip


def _save(fig, path: Path):
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from geomrobust import plot
    from geomrobust.measures import (
        dct_subspaces,
        normalized_robustness,
        random_subspace_margins,
        subspace_margins,
        summarize_bands,
    )
    from geomrobust.ops import map_in_chunks
    from geomrobust.search import deepfool_dataset, pgd, sparsefool

    if args.subspaces != "none" and (args.method != "deepfool" or args.norm != "2"):
        return _fail(
            "--subspaces needs --method deepfool --norm 2 (subspace margins are L2)", code=2
        )
    try:
        devs = cli_devices(args)
    except ValueError as e:
        return _fail(f"--devices: {e}", code=2)
    if devs is not None and args.method != "deepfool":
        return _fail("--devices is supported with --method deepfool (pgd and sparsefool run "
                     "on one device)", code=2)  # fmt: skip
    try:
        logits_fn, data, meta = _load(args)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    out = Path(args.out or f"runs/margins-{args.method}-{args.norm}-{args.subspaces}")
    x = jnp.asarray(data.images)
    y = jnp.asarray(data.labels, jnp.int32)
    n = int(x.shape[0])
    try:  # per-chunk results in OUT/chunks: an interrupted run resumes there
        store = open_run_store(out, args, meta, n)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    norm = math.inf if args.norm == "inf" else 2.0
    clean = np.asarray(jnp.argmax(logits_fn(x), -1) == y)
    summary = {
        "method": args.method,
        "norm": args.norm,
        "subspaces": args.subspaces,
        "n": n,
        "clean_accuracy": float(clean.mean()),
        "model": meta,
    }
    arrays = {"labels": np.asarray(y)}
    figs = {}
    chunk = args.chunk_size
    dfkw = dict(
        overshoot=args.overshoot,
        max_iter=args.max_iter,
        slots=args.slots,
        chunk_size=chunk,  # store chunks and DeepFool chunks coincide (also with --devices)
        devices=devs,
    )

    def chunked(desc, fn):  # with --devices: one store chunk per device at a time
        with progress_bar(n, desc) as bar:
            return store.map(
                fn, n=n, chunk_size=chunk, progress=bar.update, group=len(devs or [None])
            )

    if args.method == "deepfool" and args.subspaces == "none":
        r = SimpleNamespace(
            **chunked(
                "deepfool",
                lambda i, sl: deepfool_dataset(
                    logits_fn, x[sl], y[sl], norm=norm, **dfkw
                )._asdict(),
            )
        )
        ok = np.asarray(r.converged)
        arrays.update(
            margin=r.margin,
            converged=r.converged,
            adv_label=r.adv_label,
            iterations=r.iterations,
            perturbation=r.perturbation,
        )
        summary["margin"] = _stats(r.margin, ok & clean)
        summary["converged_fraction"] = float(ok.mean())
        summary["rho"] = normalized_robustness(r.margin, x, ok & clean, norm=norm)
        if not args.no_plots:
            figs["margins.png"] = plot.plot_margin_distribution(
                {f"L{args.norm}": np.asarray(r.margin)[clean]}, {f"L{args.norm}": ok[clean]}
            )[0]
            figs["perturbations.png"] = plot.plot_perturbation_grid(
                data.images,
                np.asarray(r.perturbation),
                labels=data.labels,
                adv_labels=np.asarray(r.adv_label),
            )[0]
    elif args.method == "deepfool" and args.subspaces == "dct":
        h = x.shape[1]
        block = args.block or min(8, max(1, h // 4))
        stride = args.stride or (1 if h <= 28 else 2)
        bases = dct_subspaces(x.shape[1:], block, stride)

        def bands(i, sl):  # (S, n_c) -> (n_c, S): chunks stack along examples
            r = subspace_margins(logits_fn, x[sl], y[sl], bases, **dfkw)
            return {f: np.asarray(getattr(r, f)).T for f in ("margin", "converged", "iterations")}

        r = SimpleNamespace(**{k: v.T for k, v in chunked("DCT bands", bands).items()})
        s = summarize_bands(r.margin, np.asarray(r.converged) & clean[None])
        arrays.update(margin=r.margin, converged=r.converged, iterations=r.iterations)
        summary.update(block=block, stride=stride, bands=s._asdict())
        if not args.no_plots:
            figs["subspace_profile.png"] = plot.plot_subspace_profile(
                np.asarray(r.margin)[:, clean], np.asarray(r.converged)[:, clean]
            )[0]
    elif args.method == "deepfool":  # random subspaces
        d = int(np.prod(x.shape[1:]))
        m = args.subspace_dim or max(1, d // 16)

        def draws(i, sl):  # the draws depend on the key only: shared by all chunks
            r = random_subspace_margins(
                logits_fn, x[sl], y[sl], dim=m, key=jax.random.key(args.key),
                num_draws=args.draws, **dfkw,
            )  # fmt: skip
            return {
                "margin": np.asarray(r.margin).T,
                "converged": np.asarray(r.converged).T,
                "minimal_margin": r.minimal_margin,
                "minimal_converged": r.minimal_converged,
                "ratio": np.asarray(r.ratio).T,
            }

        a = chunked("random subspaces", draws)
        finite = a["ratio"][np.isfinite(a["ratio"])]
        r = SimpleNamespace(
            margin=a["margin"].T,
            converged=a["converged"].T,
            minimal_margin=a["minimal_margin"],
            minimal_converged=a["minimal_converged"],
            ratio=a["ratio"].T,
            median_ratio=float(np.median(finite)) if finite.size else float("nan"),
            predicted_ratio=math.sqrt(d / m),
        )
        arrays.update(
            margin=r.margin,
            converged=r.converged,
            minimal_margin=r.minimal_margin,
            minimal_converged=r.minimal_converged,
            ratio=r.ratio,
        )
        summary.update(dim=m, median_ratio=r.median_ratio, predicted_ratio=r.predicted_ratio)
        if not args.no_plots:
            figs["margins.png"] = plot.plot_margin_distribution(
                {"minimal": np.asarray(r.minimal_margin), f"random m={m}": np.asarray(r.margin)},
                {
                    "minimal": np.asarray(r.minimal_converged),
                    f"random m={m}": np.asarray(r.converged),
                },
            )[0]
    elif args.method == "pgd":
        eps = args.eps or (
            [1 / 255, 2 / 255, 4 / 255, 8 / 255] if norm == math.inf else [0.1, 0.25, 0.5, 1.0]
        )
        eps_arr = jnp.asarray(eps, x.dtype)
        key = jax.random.key(args.key)

        @jax.jit
        def attack(xc, yc, k):  # (C, E): PGD success at every radius; compiled once
            def one(e):
                return pgd(logits_fn, xc, yc, key=k, eps=e, norm=norm, steps=args.steps).success

            return jax.lax.map(one, eps_arr).T

        def pgd_chunk(i, sl):  # fold_in(key, first example): the chunk's own random starts
            k = jax.random.fold_in(key, sl.start)
            fn = lambda a, b: attack(a, b, k)  # noqa: E731
            return {"success": map_in_chunks(fn, x[sl], y[sl], chunk_size=chunk)}

        success = chunked("pgd", pgd_chunk)["success"].T  # (E, N)
        robust = clean[None, :] & ~success
        r = SimpleNamespace(
            epsilons=np.asarray(eps, np.float64), accuracy=robust.mean(axis=1), success=success
        )
        arrays.update(epsilons=r.epsilons, accuracy=r.accuracy, success=r.success)
        summary["robust_accuracy"] = dict(
            zip(map(str, r.epsilons), map(float, r.accuracy), strict=True)
        )
        if not args.no_plots:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            ax.plot(r.epsilons, r.accuracy, "o-")
            ax.set_xlabel(f"ε (L{args.norm})")
            ax.set_ylabel("robust accuracy (PGD)")
            figs["robust_accuracy.png"] = fig
    else:  # sparsefool
        fn = jax.jit(
            lambda a, b: sparsefool(logits_fn, a, b, lambda_=args.lambda_, overshoot=args.overshoot)
        )
        r = SimpleNamespace(
            **chunked(
                "sparsefool",
                lambda i, sl: map_in_chunks(fn, x[sl], y[sl], chunk_size=min(chunk, n))._asdict(),
            )
        )
        ok = np.asarray(r.converged)
        arrays.update(
            l1=r.l1,
            sparsity=r.sparsity,
            converged=r.converged,
            adv_label=r.adv_label,
            perturbation=r.perturbation,
        )
        summary.update(
            l1=_stats(r.l1, ok & clean),
            sparsity=_stats(r.sparsity, ok & clean),
            converged_fraction=float(ok.mean()),
        )
        if not args.no_plots:
            figs["perturbations.png"] = plot.plot_perturbation_grid(
                data.images,
                np.asarray(r.perturbation),
                labels=data.labels,
                adv_labels=np.asarray(r.adv_label),
            )[0]
    write_results(out, {k: np.asarray(v) for k, v in arrays.items()}, summary, args=args)
    for name, fig in figs.items():
        _save(fig, out / name)
    print(_headline(summary), file=sys.stdout)
    print(f"results written to {out}", file=sys.stdout)
    return 0


def _load(args):
    from ._common import load_model_and_data

    return load_model_and_data(args)


def _headline(summary: dict) -> str:
    norm = "L1" if summary["method"] == "sparsefool" else f"L{summary['norm']}"
    s = f"{summary['method']} {norm}: clean accuracy {summary['clean_accuracy']:.3f}"
    if "margin" in summary and summary["margin"].get("n"):
        s += f", median margin {summary['margin']['median']:.4g}, rho {summary['rho']:.4g}"
    if "robust_accuracy" in summary:
        s += ", robust accuracy " + ", ".join(
            f"{float(k):.4g}: {v:.3f}" for k, v in summary["robust_accuracy"].items()
        )
    if "bands" in summary:
        med = summary["bands"]["median"]
        s += f", median margin per DCT band: lowest {med[0]:.4g}, highest {med[-1]:.4g}"
    if "median_ratio" in summary:
        s += (
            f", random/minimal margin ratio {summary['median_ratio']:.3g} "
            f"(flat boundary: {summary['predicted_ratio']:.3g})"
        )
    if "sparsity" in summary and summary["sparsity"].get("n"):
        s += f", median changed fraction {summary['sparsity']['median']:.3g}"
    return s
