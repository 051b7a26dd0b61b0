"""``geomrobust diagnose``: the implementation, imported when the command runs.

Robustness diagnostics of a trained checkpoint. The parser and its options are in
``cli/_diagnose.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
import math
import sys

from geomrobust.analyses import DiagnoseSettings, diagnose
from geomrobust.measures import layer_splits
from geomrobust.train import load_checkpoint

from ._errors import user_errors
from ._loading import load_model_and_data
from ._locks import OutputLocks
from ._outputs import compute_analysis, write_results
from ._processes import start_processes, writes_outputs
from ._settings import settings_from_args

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    start_processes(args)
    with user_errors(1):
        clf, data, meta = load_model_and_data(args)
        settings = settings_from_args(DiagnoseSettings, args).validate()
    splits = _splits(args) if "signature" in settings.what else None
    out = args.out or None  # without --out: nothing stored, nothing written
    arrays, summary = compute_analysis(
        diagnose, "diagnose", clf, data, settings, meta, args, outputs, out, splits=splits
    )
    summary = {"checkpoint": meta["checkpoint_path"], **summary}
    if not writes_outputs(args):  # --distributed: process 0 prints and writes
        return 0
    _print(summary, settings)
    if args.out:
        out = write_results(args.out, arrays, summary, args=args)
        print(f"results: {out}")
    return 0


def _splits(args) -> dict:
    """The hidden layers of the checkpoint's network for the signature (MLP, LeNet), or
    none (input layer only) with a note."""
    with user_errors(1):
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
