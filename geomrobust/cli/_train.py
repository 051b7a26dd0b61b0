"""``geomrobust train``: train a model on a dataset and write a checkpoint."""

from __future__ import annotations

import argparse

from ._args import (
    nonnegative_float,
    nonnegative_int,
    parse_resize,
    positive_float,
    positive_int,
    seed,
)
from ._dispatch import Implementation

__all__ = ["add_parser"]

#: geomrobust.train.DEFAULT_LR (not imported: --help answers without JAX; tests/test_cli_train.py)
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3}
MODELS = ("mlp", "lenet", "resnet")
METHODS = ("standard", "pgd", "fgsm", "fgsm_rs", "nfgsm", "gradalign", "cure", "llr")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model and write a checkpoint",
        description=(
            "Train a Flax NNX model (MLP, LeNet or ResNet) on a dataset's train split, "
            "evaluate it on the test split, and write a checkpoint directory (parameters + "
            "metadata.json) that the analysis commands read with --checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="digits", help="dataset name (digits is embedded)")
    p.add_argument("--data-dir", metavar="DIR", default=None, help="TFDS data directory")
    p.add_argument(
        "--resize", metavar="S|HxW", type=parse_resize, default=None, help="resize images"
    )
    p.add_argument("--model", choices=MODELS, default="lenet", help="architecture")
    p.add_argument(
        "--width",
        metavar="W",
        type=positive_int,
        nargs="+",
        default=None,
        help="architecture widths: mlp hidden widths (any number), lenet the two conv "
        "widths, resnet the first-stage width (one int); None means the model's default",
    )
    p.add_argument(
        "--blocks",
        metavar="B",
        type=positive_int,
        nargs="+",
        default=None,
        help="resnet basic blocks per stage (e.g. 2 2 2 2 for ResNet-18)",
    )
    p.add_argument(
        "--activation",
        choices=("relu", "softplus", "gelu", "tanh", "swish", "elu"),
        default="relu",
        help="nonlinearity; curvature measurements need a smooth one (softplus, gelu, ...)",
    )
    p.add_argument("--epochs", type=positive_int, default=30, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=64, help="examples per step")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer")
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"peak learning rate; None means {DEFAULT_LR['sgd']} for sgd, "
        f"{DEFAULT_LR['adam']} for adam",
    )
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine", "onecycle", "piecewise"),
        default="cosine",
        help="learning-rate schedule",
    )
    p.add_argument("--weight-decay", type=nonnegative_float, default=5e-4, help="weight decay")
    p.add_argument("--momentum", type=nonnegative_float, default=0.9, help="SGD momentum")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="standard",
        help="training method: standard cross-entropy; pgd (PGD adversarial training); "
        "fgsm (single step, no random start); fgsm_rs (FGSM with random start, alpha = "
        "1.25 eps); nfgsm (noise in [-2eps, 2eps], step eps, no clipping to the ball); "
        "gradalign (FGSM + lambda (1 - cos)); cure (curvature regularization); llr (local "
        "linearity regularization)",
    )
    r = p.add_argument_group("robust training (methods other than standard)")
    r.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="attack radius (required by "
        "pgd, fgsm, fgsm_rs, nfgsm, gradalign, llr, and by the robustness monitor)",
    )
    r.add_argument("--norm", choices=("2", "inf"), default="inf", help="attack norm (pgd, llr)")
    r.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="attack steps (pgd: 7, llr: 5 when None)",
    )
    r.add_argument(
        "--step-size",
        type=positive_float,
        default=None,
        help="attack step size (pgd/llr: 2.5 eps / steps; fgsm: eps; fgsm_rs: "
        "1.25 eps; nfgsm: eps when None)",
    )
    r.add_argument(
        "--lam",
        type=nonnegative_float,
        default=None,
        help="regularization weight (gradalign: 0.2, cure: 4, llr: 4 when None)",
    )
    r.add_argument(
        "--h",
        type=positive_float,
        default=None,
        help="CURE finite-difference step h (1.0 when None)",
    )
    r.add_argument(
        "--noise",
        type=nonnegative_float,
        default=None,
        help="N-FGSM noise magnitude (2 eps when None)",
    )
    r.add_argument(
        "--no-box",
        action="store_true",
        help="do not clip adversarial inputs to the data box [0, 1]",
    )
    r.add_argument(
        "--monitor",
        type=nonnegative_int,
        metavar="N",
        default=256,
        help="held-out test examples for the per-epoch robustness and "
        "catastrophic-overfitting monitor (needs --eps; 0 disables)",
    )
    r.add_argument(
        "--eval-eps",
        type=positive_float,
        nargs="+",
        metavar="E",
        default=None,
        help="epsilons of the per-epoch and final FGSM/PGD robust accuracy (default: --eps)",
    )
    p.add_argument("--key", metavar="INT", type=seed, default=0, help="PRNG seed")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="checkpoint directory to write; None means a new directory "
        "runs/MODEL-DATASET[-N] (never an existing one)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing checkpoint at --out"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar; None means only when stderr is a terminal",
    )
    p.set_defaults(func=Implementation(f"{__package__}._train_run"))
    return p
