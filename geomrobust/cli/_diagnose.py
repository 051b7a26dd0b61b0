"""``geomrobust diagnose``: robustness diagnostics of a trained checkpoint.

``--what thickness`` boundary thickness (Yang et al. 2020; DeepFool or L2 PGD endpoints),
``--what signature`` margin-distribution signature (Jiang et al. 2019; input and, for MLP /
LeNet checkpoints, hidden layers), ``--what linearity`` local linearity ``γ(ε, x)`` (Qin et
al. 2019), ``--what rho`` normalized robustness ``mean ||r(x)|| / ||x||`` (DeepFool, L2);
not by default: ``--what alignment`` gradient-image alignment (Etmann et al. 2019), ``--what
noise`` error in Gaussian noise per ``--noise-sigmas`` against the half-space prediction
``Φ(-d/σ)`` from the DeepFool margin (Ford et al. 2019).
Writes ``results.npz`` + ``summary.json`` to ``--out`` and prints a one-line summary each;
with ``--out`` the per-example diagnostics are written per chunk (``OUT/chunks``) and an
interrupted run resumes there.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import _common as common

__all__ = ["add_parser", "run"]

# geomrobust.analyses.diagnose.WHAT and DEFAULT_WHAT (not imported: the CLI starts fast)
WHAT = ("thickness", "signature", "linearity", "rho", "alignment", "noise")
DEFAULT_WHAT = ("thickness", "signature", "linearity", "rho")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "diagnose",
        help="robustness diagnostics: thickness, margin signature, local linearity, rho",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    common.add_model_data_args(p)
    common.add_resume_args(p)
    common.add_distributed_args(p)
    p.add_argument(
        "--what", choices=WHAT, nargs="+", default=list(DEFAULT_WHAT),
        help="diagnostics to compute",
    )  # fmt: skip
    p.add_argument(
        "--noise-sigmas", type=common.positive_float, nargs="+",
        default=[0.05, 0.1, 0.2, 0.4, 0.8], help="noise std per pixel of --what noise",
    )  # fmt: skip
    p.add_argument(
        "--noise-samples", type=common.positive_int, default=32,
        help="noise draws per example and sigma of --what noise",
    )  # fmt: skip
    p.add_argument(
        "--alpha", type=common.finite_float, default=0.0, help="thickness band lower end"
    )
    p.add_argument(
        "--beta", type=common.finite_float, default=0.75, help="thickness band upper end"
    )
    p.add_argument(
        "--attack",
        choices=("deepfool", "pgd"),
        default="deepfool",
        help="thickness endpoint: minimal DeepFool point or L2 PGD point of radius --eps",
    )
    p.add_argument(
        "--eps",
        type=common.positive_float,
        default=None,
        help="radius: L2 PGD (thickness), Linf (linearity)",
    )
    p.add_argument(
        "--steps", type=common.positive_int, default=10, help="steps of the PGD searches"
    )
    p.add_argument(
        "--grid", type=common.positive_int, default=256, help="thickness integration grid points"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomrobust.analyses import DiagnoseSettings, diagnose

    common.start_processes(args)
    with common.user_errors(1):
        clf, data, meta = common.load_model_and_data(args)
        settings = common.settings_from_args(DiagnoseSettings, args).validate()
    splits = _splits(args) if "signature" in settings.what else None
    if args.out:
        common.hold_run_out(args.out, args)  # another run into the same --out stops here
    n = int(data.images.shape[0])
    store = common.open_run_store(args.out, settings, args, meta, n) if args.out else None
    with common.user_errors(1), common.warnings_as_lines("diagnose"):
        arrays, summary = diagnose.compute(
            clf, data, settings, store=store, splits=splits, progress=common.show_progress()
        )
    summary = {"checkpoint": meta["checkpoint_path"], **summary}
    if not common.writes_outputs(args):  # --distributed: process 0 prints and writes
        return 0
    _print(summary, settings)
    if args.out:
        out = common.write_results(args.out, arrays, summary, args=args)
        print(f"results: {out}")
    return 0


def _splits(args) -> dict:
    """The hidden layers of the checkpoint's network for the signature (MLP, LeNet), or
    none (input layer only) with a note."""
    from geomrobust.measures import layer_splits
    from geomrobust.train import load_checkpoint

    with common.user_errors(1):
        model = load_checkpoint(args.checkpoint).model
    try:
        return layer_splits(model)
    except TypeError as e:
        print(f"note: input layer only ({e})", file=sys.stderr)
        return {}


def _print(summary: dict, s) -> None:
    if "thickness" in summary:
        mean = summary["thickness"].get("mean", math.nan)
        print(f"boundary thickness ({s.attack}): mean {mean:.4f}")
    for name, g in summary.get("signature", {}).items():
        q = g["stats"]
        print(f"margin signature {name}: Q1 {q[1]:.4g} median {q[2]:.4g} Q3 {q[3]:.4g}")
    if "linearity" in summary:
        print(f"local linearity gamma(eps={s.eps}): mean {summary['linearity']['mean_gamma']:.4g}")
    if "rho" in summary:
        print(f"normalized robustness rho (L2 DeepFool): {summary['rho']['rho']:.4f}")
    if "alignment" in summary:
        a = summary["alignment"]
        print(f"gradient-image alignment: median {a.get('median', math.nan):.4g} "
              f"({a['n_valid']} valid, {a['n_excluded']} excluded)")  # fmt: skip
    if "noise" in summary:
        n = summary["noise"]
        pairs = ", ".join(f"σ={sg:g}: {e:.3f} (Φ(-d/σ) {p:.3f})"
                          for sg, e, p in zip(n["sigmas"], n["error"], n["halfspace_error"],
                                              strict=True))  # fmt: skip
        print(f"error in Gaussian noise: {pairs}")
