"""``geomrobust report``: the whole geometric analysis as one HTML report."""

from __future__ import annotations

import argparse

from ._args import add_distributed_args, add_n_arg, add_resize_arg, seed
from ._dispatch import Implementation

__all__ = ["add_parser"]

#: the names of geomrobust.report.STAGES, in order (not imported: --help answers without JAX;
#: tests/test_cli_errors.py checks that they agree)
STAGES = (
    "accuracy",
    "margins",
    "dct",
    "random",
    "curvature",
    "loss_hessian",
    "slices",
    "nads",
    "thickness",
    "frequency",
    "noise",
    "interpretability",
    "minimal",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="the whole geometric analysis of a standard and a robust model, as an HTML report",
        description=(
            "Train (or reuse from the cache) a standard and a PGD-adversarially-trained LeNet on "
            "the embedded digits, or analyse the given --checkpoint(s), then run every analysis "
            "on held-out examples: DeepFool margins (L2, Linf), DCT-subspace margins, random vs "
            "adversarial margins, principal curvatures and shared directions, input-loss Hessian "
            "spectra, 2-D boundary slices, the architecture's NADs and boundary thickness. "
            "Writes OUT/index.html (self-contained), OUT/results.json and OUT/*.png; finished "
            "stages are kept in OUT/stages so an interrupted report resumes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset (test split); None means digits, or the checkpoint's dataset",
    )
    p.add_argument("--data-dir", metavar="DIR", default=None, help="TFDS data directory")
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        nargs="+",
        default=None,
        help="checkpoint(s) written by `geomrobust train` to analyse instead of the default "
        "standard + PGD-AT models",
    )
    p.add_argument("--out", metavar="DIR", default="geomrobust-report", help="output directory")
    add_n_arg(p, "held-out examples to analyse; None means 100 (32 with --quick)")
    p.add_argument("--quick", action="store_true", help="smaller sizes: about a minute")
    add_resize_arg(
        p, "resize images; None means 16 for digits (8 with --quick), or the checkpoint's setting"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="trained-model cache; None means $GEOMROBUST_CACHE_DIR/models or "
        "~/.cache/geomrobust/models",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        choices=list(STAGES),
        default=None,
        help="run only these stages (slices needs curvature)",
    )
    p.add_argument("--key", metavar="INT", type=seed, default=0, help="PRNG seed")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr; None means only on a terminal",
    )
    add_distributed_args(p)
    p.set_defaults(func=Implementation(f"{__package__}._report_run"))
    return p
