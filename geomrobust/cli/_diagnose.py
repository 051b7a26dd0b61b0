"""``geomrobust diagnose``: robustness diagnostics of a trained checkpoint.

``--what thickness`` boundary thickness (Yang et al. 2020; DeepFool or L2 PGD endpoints),
``--what signature`` margin-distribution signature (Jiang et al. 2019; input and, for MLP /
LeNet checkpoints, hidden layers), ``--what linearity`` local linearity ``γ(ε, x)`` (Qin et
al. 2019), ``--what rho`` normalized robustness ``mean ||r(x)|| / ||x||`` (DeepFool, L2).
Writes ``results.npz`` + ``summary.json`` to ``--out`` and prints a one-line summary each.
"""

from __future__ import annotations

import argparse
import sys

from ._common import add_model_data_args, load_model_and_data, write_results

__all__ = ["add_parser", "run"]

WHAT = ("thickness", "signature", "linearity", "rho")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "diagnose",
        help="robustness diagnostics: thickness, margin signature, local linearity, rho",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_data_args(p)
    p.add_argument(
        "--what", choices=WHAT, nargs="+", default=list(WHAT), help="diagnostics to compute"
    )
    p.add_argument("--alpha", type=float, default=0.0, help="thickness band lower end")
    p.add_argument("--beta", type=float, default=0.75, help="thickness band upper end")
    p.add_argument(
        "--attack",
        choices=("deepfool", "pgd"),
        default="deepfool",
        help="thickness endpoint: minimal DeepFool point or L2 PGD point of radius --eps",
    )
    p.add_argument(
        "--eps", type=float, default=None, help="radius: L2 PGD (thickness), Linf (linearity)"
    )
    p.add_argument("--steps", type=int, default=10, help="steps of the PGD searches")
    p.add_argument("--grid", type=int, default=256, help="thickness integration grid points")
    p.set_defaults(func=run)
    return p


def _fail(message: str) -> int:
    print(f"geomrobust diagnose: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    try:
        logits_fn, data, meta = load_model_and_data(args)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as e:
        return _fail(str(e))
    if ("linearity" in args.what or args.attack == "pgd") and not (args.eps and args.eps > 0):
        return _fail("--what linearity and --attack pgd need --eps > 0")

    import jax
    import numpy as np

    from geomrobust.measures import (
        layer_splits,
        local_linearity,
        margin_signature,
        normalized_robustness,
        thickness,
    )
    from geomrobust.search import deepfool_dataset

    key = jax.random.key(args.key)
    x, y = data.images, data.labels
    arrays, summary = {}, {"checkpoint": meta["checkpoint_path"], "n": int(x.shape[0])}
    try:
        if "thickness" in args.what:
            t = thickness(
                logits_fn,
                x,
                y,
                attack=args.attack,
                eps=args.eps,
                key=jax.random.fold_in(key, 1),
                steps=args.steps,
                alpha=args.alpha,
                beta=args.beta,
                num_points=args.grid,
            )
            arrays.update(thickness=np.asarray(t.thickness), thickness_valid=np.asarray(t.valid))
            summary["thickness"] = {
                "mean": t.mean,
                "valid": int(np.sum(t.valid)),
                "attack": args.attack,
                "alpha": args.alpha,
                "beta": args.beta,
            }
            print(f"boundary thickness ({args.attack}): mean {t.mean:.4f}")
        if "signature" in args.what:
            from geomrobust.train import load_checkpoint

            splits = {}
            model = load_checkpoint(args.checkpoint).model
            try:
                splits = layer_splits(model)
            except TypeError as e:
                print(f"note: input layer only ({e})", file=sys.stderr)
            sig = margin_signature(logits_fn, x, y, splits=splits)
            summary["signature"] = {
                name: {
                    "stats": s.stats.tolist(),
                    "normalized_stats": s.normalized_stats.tolist(),
                    "normalizer": s.normalizer,
                }
                for name, s in sig.items()
            }
            for name, s in sig.items():
                arrays[f"signature_{name}"] = np.asarray(s.margins)
                print(
                    f"margin signature {name}: Q1 {s.stats[1]:.4g} median {s.stats[2]:.4g} "
                    f"Q3 {s.stats[3]:.4g}"
                )
        if "linearity" in args.what:
            ll = local_linearity(
                logits_fn,
                jax.numpy.asarray(x),
                y,
                eps=args.eps,
                key=jax.random.fold_in(key, 2),
                steps=args.steps,
                bounds=(0.0, 1.0),
            )
            arrays["linearity_gamma"] = np.asarray(ll.gamma)
            summary["linearity"] = {"eps": args.eps, "mean_gamma": float(np.mean(ll.gamma))}
            print(f"local linearity gamma(eps={args.eps}): mean {float(np.mean(ll.gamma)):.4g}")
        if "rho" in args.what:
            r = deepfool_dataset(logits_fn, x, y, norm=2)
            rho = normalized_robustness(r.margin, x, r.converged)
            arrays.update(deepfool_margin=np.asarray(r.margin))
            summary["rho"] = {"rho": rho, "converged": int(np.sum(r.converged))}
            print(f"normalized robustness rho (L2 DeepFool): {rho:.4f}")
    except (ValueError, TypeError) as e:
        return _fail(str(e))
    if args.out:
        out = write_results(args.out, arrays, summary, args=args)
        print(f"results: {out}")
    return 0
