"""``geomrobust train``: train a model on a dataset and write a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geomrobust.train._settings import DEFAULT_LR

from . import _common as common

__all__ = ["add_parser", "run", "train_settings"]

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
        "--resize", metavar="S|HxW", type=common.parse_resize, default=None, help="resize images"
    )
    p.add_argument("--model", choices=MODELS, default="lenet", help="architecture")
    p.add_argument(
        "--width",
        metavar="W",
        type=common.positive_int,
        nargs="+",
        default=None,
        help="architecture widths: mlp hidden widths (any number), lenet the two conv "
        "widths, resnet the first-stage width (one int); None means the model's default",
    )
    p.add_argument(
        "--blocks",
        metavar="B",
        type=common.positive_int,
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
    p.add_argument("--epochs", type=common.positive_int, default=30, help="training epochs")
    p.add_argument("--batch-size", type=common.positive_int, default=64, help="examples per step")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer")
    p.add_argument(
        "--lr",
        type=common.positive_float,
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
    p.add_argument(
        "--weight-decay", type=common.nonnegative_float, default=5e-4, help="weight decay"
    )
    p.add_argument("--momentum", type=common.nonnegative_float, default=0.9, help="SGD momentum")
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
        type=common.positive_float,
        default=None,
        help="attack radius (required by "
        "pgd, fgsm, fgsm_rs, nfgsm, gradalign, llr, and by the robustness monitor)",
    )
    r.add_argument("--norm", choices=("2", "inf"), default="inf", help="attack norm (pgd, llr)")
    r.add_argument(
        "--steps",
        type=common.positive_int,
        default=None,
        help="attack steps (pgd: 7, llr: 5 when None)",
    )
    r.add_argument(
        "--step-size",
        type=common.positive_float,
        default=None,
        help="attack step size (pgd/llr: 2.5 eps / steps; fgsm: eps; fgsm_rs: "
        "1.25 eps; nfgsm: eps when None)",
    )
    r.add_argument(
        "--lam",
        type=common.nonnegative_float,
        default=None,
        help="regularization weight (gradalign: 0.2, cure: 4, llr: 4 when None)",
    )
    r.add_argument(
        "--h",
        type=common.positive_float,
        default=None,
        help="CURE finite-difference step h (1.0 when None)",
    )
    r.add_argument(
        "--noise",
        type=common.nonnegative_float,
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
        type=common.nonnegative_int,
        metavar="N",
        default=256,
        help="held-out test examples for the per-epoch robustness and "
        "catastrophic-overfitting monitor (needs --eps; 0 disables)",
    )
    r.add_argument(
        "--eval-eps",
        type=common.positive_float,
        nargs="+",
        metavar="E",
        default=None,
        help="epsilons of the per-epoch and final FGSM/PGD robust accuracy (default: --eps)",
    )
    p.add_argument("--key", metavar="INT", type=common.seed, default=0, help="PRNG seed")
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
    p.set_defaults(func=run)
    return p


def _model_config(args) -> dict:
    config = {"activation": args.activation}
    if args.width is not None:
        if args.model == "mlp":
            config["widths"] = list(args.width)
        elif args.model == "lenet":
            if len(args.width) != 2:
                raise ValueError(f"--width for lenet takes two conv widths, got {args.width}")
            config["channels"] = list(args.width)
        else:
            if len(args.width) != 1:
                raise ValueError(f"--width for resnet takes one int, got {args.width}")
            config["width"] = args.width[0]
    if args.blocks is not None:
        if args.model != "resnet":
            raise ValueError("--blocks applies to --model resnet only")
        config["blocks"] = list(args.blocks)
    return config


NEEDS_EPS = ("pgd", "fgsm", "fgsm_rs", "nfgsm", "gradalign", "llr")
DEFAULT_LAM = {"gradalign": 0.2, "cure": 4.0, "llr": 4.0}
DEFAULT_H = 0.5


def method_settings(args) -> dict:
    """The loss-builder keyword arguments of ``args.method`` (JSON-serializable)."""
    m = args.method
    if m == "standard":
        return {}
    if m in NEEDS_EPS and (args.eps is None or not args.eps > 0):
        raise ValueError(f"--method {m} needs --eps > 0, got {args.eps}")
    bounds = None if args.no_box else [0.0, 1.0]
    lam = args.lam if args.lam is not None else DEFAULT_LAM.get(m)
    norm = "inf" if args.norm == "inf" else 2.0
    table = {
        "pgd": {
            "eps": args.eps,
            "norm": norm,
            "steps": args.steps or 7,
            "step_size": args.step_size,
            "bounds": bounds,
        },
        "fgsm": {"eps": args.eps, "alpha": args.step_size, "bounds": bounds},
        "fgsm_rs": {"eps": args.eps, "alpha": args.step_size, "bounds": bounds},
        "nfgsm": {"eps": args.eps, "noise": args.noise, "step": args.step_size, "bounds": bounds},
        "gradalign": {"eps": args.eps, "lam": lam, "alpha": args.step_size, "bounds": bounds},
        "cure": {"h": args.h if args.h is not None else DEFAULT_H, "lam": lam},
        "llr": {
            "eps": args.eps,
            "lam": lam,
            "steps": args.steps or 5,
            "norm": norm,
            "step_size": args.step_size,
            "bounds": bounds,
        },
    }
    return {k: v for k, v in table[m].items() if v is not None}


def default_out(args: argparse.Namespace, root: str | Path = "runs") -> Path:
    """``root/MODEL-DATASET``, or ``...-2``, ``...-3``, ... : the first that does not exist."""
    base = Path(root) / f"{args.model}-{args.dataset}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def train_settings(args: argparse.Namespace) -> dict:
    """The settings record of :func:`geomrobust.train.train_from_settings` from the options."""
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    eval_eps = list(args.eval_eps) if args.eval_eps else ([args.eps] if args.eps else [])
    if any(not e > 0 for e in eval_eps):
        raise ValueError(f"--eval-eps values must be > 0, got {eval_eps}")
    return {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "resize": args.resize,
        "model": args.model,
        "model_config": _model_config(args),
        "method": args.method,
        "method_settings": method_settings(args),
        "optimizer": args.optimizer,
        "lr": args.lr,
        "schedule": args.schedule,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "key": args.key,
        "eval_eps": eval_eps,
        "eval_norm": args.norm,
        "eval_bounds": None if args.no_box else [0.0, 1.0],
        "monitor": args.monitor,
        "monitor_eps": args.eps,
    }


def run(args: argparse.Namespace) -> int:
    from geomrobust.io import save_json
    from geomrobust.train import save_checkpoint, train_from_settings

    out = Path(args.out).expanduser() if args.out is not None else default_out(args)
    common.hold_out(out, entry=True)  # another run into the same --out stops here
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise common.CLIError(
            f"--out {out} exists and is not empty; pass --overwrite to replace it"
        )
    with common.user_errors(1):
        settings = train_settings(args)
        model, meta = train_from_settings(settings, progress=args.progress, callback=_warn)
        path = save_checkpoint(out, model, meta, overwrite=args.overwrite)
        keys = (
            "method",
            "method_settings",
            "history",
            "robust_accuracy",
            "catastrophic_overfitting_epochs",
        )
        save_json(Path(path) / "metrics.json", {k: meta[k] for k in keys})
    eval_eps = meta["robust_accuracy"]["epsilons"]
    for attack in ("fgsm", "pgd"):
        if attack in meta["robust_accuracy"]:
            accs = meta["robust_accuracy"][attack]
            line = ", ".join(f"eps {e:g}: {a:.4f}" for e, a in zip(eval_eps, accs, strict=True))
            print(f"{attack.upper()} robust accuracy ({args.norm}) {line}")
    flagged = meta["catastrophic_overfitting_epochs"]
    if flagged:
        print(f"WARNING: catastrophic overfitting detected at epochs {flagged}")
    print(
        f"test accuracy {meta['accuracy']:.4f} (loss {meta['test_loss']:.4f}, "
        f"{meta['test_examples']} examples) after {args.epochs} epochs in "
        f"{meta['train_time_s']:.1f} s; checkpoint: {path}"
    )
    return 0


def _warn(epoch: int, record: dict) -> None:
    if record.get("catastrophic_overfitting"):
        print(
            f"WARNING: epoch {epoch}: catastrophic overfitting: PGD accuracy "
            f"{record['pgd_accuracy']:.3f}, FGSM accuracy {record['fgsm_accuracy']:.3f}, "
            f"gradient cosine {record['grad_cosine']:.3f}",
            file=sys.stderr,
        )
