"""``geomrobust train``: train a model on a dataset and write a checkpoint."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._common import one_line, parse_resize, positive_int

__all__ = ["add_parser", "run"]

MODELS = ("mlp", "lenet", "resnet")
METHODS = ("standard", "pgd", "fgsm", "fgsm_rs", "nfgsm", "gradalign", "cure", "llr")
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3}


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
        type=float,
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
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
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
        type=float,
        default=None,
        help="attack radius (required by "
        "pgd, fgsm, fgsm_rs, nfgsm, gradalign, llr, and by the robustness monitor)",
    )
    r.add_argument("--norm", choices=("2", "inf"), default="inf", help="attack norm (pgd, llr)")
    r.add_argument(
        "--steps", type=positive_int, default=None, help="attack steps (pgd: 7, llr: 5 when None)"
    )
    r.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="attack step size (pgd/llr: 2.5 eps / steps; fgsm: eps; fgsm_rs: "
        "1.25 eps; nfgsm: eps when None)",
    )
    r.add_argument(
        "--lam",
        type=float,
        default=None,
        help="regularization weight (gradalign: 0.2, cure: 4, llr: 4 when None)",
    )
    r.add_argument(
        "--h", type=float, default=None, help="CURE finite-difference step h (1.0 when None)"
    )
    r.add_argument(
        "--noise", type=float, default=None, help="N-FGSM noise magnitude (2 eps when None)"
    )
    r.add_argument(
        "--no-box",
        action="store_true",
        help="do not clip adversarial inputs to the data box [0, 1]",
    )
    r.add_argument(
        "--monitor",
        type=int,
        metavar="N",
        default=256,
        help="held-out test examples for the per-epoch robustness and "
        "catastrophic-overfitting monitor (needs --eps; 0 disables)",
    )
    r.add_argument(
        "--eval-eps",
        type=float,
        nargs="+",
        metavar="E",
        default=None,
        help="epsilons of the per-epoch and final FGSM/PGD robust accuracy (default: --eps)",
    )
    p.add_argument("--key", metavar="INT", type=int, default=0, help="PRNG seed")
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


def _fail(message: str) -> int:
    print(f"geomrobust train: error: {one_line(message)}", file=sys.stderr)
    return 1


def default_out(args: argparse.Namespace, root: str | Path = "runs") -> Path:
    """``root/MODEL-DATASET``, or ``...-2``, ``...-3``, ... : the first that does not exist."""
    base = Path(root) / f"{args.model}-{args.dataset}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser() if args.out is not None else default_out(args)
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        return _fail(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if args.lr is not None and not args.lr > 0:
        return _fail(f"--lr must be positive, got {args.lr}")
    try:
        config = _model_config(args)
        loss_settings = method_settings(args)
    except ValueError as e:
        return _fail(str(e))
    eval_eps = list(args.eval_eps) if args.eval_eps else ([args.eps] if args.eps else [])
    if any(not e > 0 for e in eval_eps):
        return _fail(f"--eval-eps values must be > 0, got {eval_eps}")

    import jax
    from flax import nnx

    from geomrobust.data import load_dataset
    from geomrobust.models import create_model, pure_apply
    from geomrobust.train import (
        evaluate,
        fit,
        make_loss,
        make_optimizer,
        robustness_monitor,
        save_checkpoint,
    )

    t0 = time.perf_counter()
    try:
        train = load_dataset(args.dataset, "train", data_dir=args.data_dir, resize=args.resize)
        test = load_dataset(args.dataset, "test", data_dir=args.data_dir, resize=args.resize)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        return _fail(str(e))
    n = train.images.shape[0]
    if args.batch_size > n:
        return _fail(f"--batch-size {args.batch_size} exceeds the {n} training examples")

    init_key, train_key = jax.random.split(jax.random.key(args.key))
    input_shape = train.images.shape[1:]
    try:
        model = create_model(args.model, input_shape, train.num_classes, key=init_key, **config)
    except (TypeError, ValueError) as e:
        return _fail(str(e))
    apply, params = pure_apply(model)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    steps = n // args.batch_size
    try:
        optimizer = make_optimizer(
            args.optimizer,
            lr,
            epochs=args.epochs,
            steps_per_epoch=steps,
            schedule=args.schedule,
            weight_decay=args.weight_decay,
            momentum=args.momentum,
        )
    except ValueError as e:
        return _fail(str(e))

    loss_fn = make_loss(args.method, **loss_settings)
    bounds = None if args.no_box else (0.0, 1.0)
    norm = float("inf") if args.norm == "inf" else 2.0
    hook = None
    if eval_eps and args.monitor > 0:
        m = min(args.monitor, int(test.images.shape[0]))
        hook = robustness_monitor(
            apply,
            test.images[:m],
            test.labels[:m],
            eps=args.eps or eval_eps[0],
            epsilons=eval_eps,
            key=jax.random.fold_in(train_key, 10**6),
            norm=norm,
            bounds=bounds,
        )
    flagged: list[int] = []

    def report(epoch, record):
        if record.get("catastrophic_overfitting"):
            flagged.append(epoch)
            print(
                f"WARNING: epoch {epoch}: catastrophic overfitting: PGD accuracy "
                f"{record['pgd_accuracy']:.3f}, FGSM accuracy {record['fgsm_accuracy']:.3f}, "
                f"gradient cosine {record['grad_cosine']:.3f}",
                file=sys.stderr,
            )

    result = fit(
        apply,
        params,
        optimizer,
        train.images,
        train.labels,
        key=train_key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss_fn=loss_fn,
        eval_data=(test.images, test.labels),
        progress=args.progress,
        eval_hook=hook,
        callback=report,
    )
    final = evaluate(apply, result.state.params, test.images, test.labels)
    robust = {}
    if eval_eps:
        from geomrobust.search import robust_accuracy

        p = result.state.params
        for attack in ("fgsm", "pgd"):
            ra = robust_accuracy(
                lambda z: apply(p, z),
                test.images,
                test.labels,
                eval_eps,
                key=jax.random.fold_in(train_key, 2 * 10**6),
                attack=attack,
                norm=norm,
                bounds=bounds,
            )
            robust[attack] = [float(a) for a in ra.accuracy]
    seconds = time.perf_counter() - t0
    nnx.update(model, result.state.params)
    settings = {
        "optimizer": args.optimizer,
        "lr": lr,
        "schedule": args.schedule,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum,
        "epochs": args.epochs,
        "key": args.key,
    }
    metadata = {
        "dataset": args.dataset,
        "resize": list(args.resize) if isinstance(args.resize, tuple) else args.resize,
        "epochs": args.epochs,
        "accuracy": final.accuracy,
        "test_loss": final.loss,
        "test_examples": int(test.images.shape[0]),
        "train_accuracy": result.history["train_accuracy"][-1],
        "method": args.method,
        "method_settings": loss_settings,
        "robust_accuracy": {"epsilons": eval_eps, "norm": args.norm, **robust},
        "catastrophic_overfitting_epochs": flagged,
        "train_settings": settings,
        "history": result.history,
        "train_time_s": seconds,
    }
    try:
        path = save_checkpoint(out, model, metadata, overwrite=args.overwrite)
    except (FileExistsError, OSError) as e:
        return _fail(str(e))
    try:
        import json

        metrics = {
            "method": args.method,
            "method_settings": loss_settings,
            "history": result.history,
            "robust_accuracy": metadata["robust_accuracy"],
            "catastrophic_overfitting_epochs": flagged,
        }
        (Path(path) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    except OSError as e:
        return _fail(f"cannot write metrics.json: {e}")
    for attack, accs in robust.items():
        line = ", ".join(f"eps {e:g}: {a:.4f}" for e, a in zip(eval_eps, accs, strict=True))
        print(f"{attack.upper()} robust accuracy ({args.norm}) {line}")
    if flagged:
        print(f"WARNING: catastrophic overfitting detected at epochs {flagged}")
    print(
        f"test accuracy {final.accuracy:.4f} (loss {final.loss:.4f}, "
        f"{test.images.shape[0]} examples) after {args.epochs} epochs in {seconds:.1f} s; "
        f"checkpoint: {path}"
    )
    return 0
