"""``geomrobust train``: the implementation, imported when the command runs.

Train a model on a dataset and write a checkpoint. The parser and its options are in
``cli/_train.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geomrobust.io import save_json
from geomrobust.train import save_checkpoint, train_from_settings

from ._errors import CLIError, user_errors
from ._locks import OutputLocks

__all__ = ["run"]


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


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    out = Path(args.out).expanduser() if args.out is not None else default_out(args)
    outputs.hold(out, entry=True)  # another run into the same --out stops here
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    with user_errors(1):
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
