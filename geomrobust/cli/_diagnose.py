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

from ._args import (
    add_analysis_command,
    finite_float,
    positive_float,
    positive_int,
)
from ._dispatch import Implementation

__all__ = ["add_parser"]

# geomrobust.analyses.diagnose.WHAT and DEFAULT_WHAT (not imported: the CLI starts fast)
WHAT = ("thickness", "signature", "linearity", "rho", "alignment", "noise")
DEFAULT_WHAT = ("thickness", "signature", "linearity", "rho")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_analysis_command(
        subparsers,
        "diagnose",
        help="robustness diagnostics: thickness, margin signature, local linearity, rho",
        description=__doc__,
        devices=False,
        resume=True,
    )
    p.add_argument(
        "--what", choices=WHAT, nargs="+", default=list(DEFAULT_WHAT),
        help="diagnostics to compute",
    )  # fmt: skip
    p.add_argument(
        "--noise-sigmas", type=positive_float, nargs="+",
        default=[0.05, 0.1, 0.2, 0.4, 0.8], help="noise std per pixel of --what noise",
    )  # fmt: skip
    p.add_argument(
        "--noise-samples", type=positive_int, default=32,
        help="noise draws per example and sigma of --what noise",
    )  # fmt: skip
    p.add_argument("--alpha", type=finite_float, default=0.0, help="thickness band lower end")
    p.add_argument("--beta", type=finite_float, default=0.75, help="thickness band upper end")
    p.add_argument(
        "--attack",
        choices=("deepfool", "pgd"),
        default="deepfool",
        help="thickness endpoint: minimal DeepFool point or L2 PGD point of radius --eps",
    )
    p.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="radius: L2 PGD (thickness), Linf (linearity)",
    )
    p.add_argument("--steps", type=positive_int, default=10, help="steps of the PGD searches")
    p.add_argument(
        "--grid", type=positive_int, default=256, help="thickness integration grid points"
    )
    p.set_defaults(func=Implementation(f"{__package__}._diagnose_run"))
    return p
