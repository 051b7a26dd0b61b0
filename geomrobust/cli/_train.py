"""``geomrobust train``: train a model on a dataset and write a checkpoint."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._common import parse_resize, positive_int

__all__ = ["add_parser", "run"]

MODELS = ("mlp", "lenet", "resnet")
METHODS = ("standard",)  # robust training methods (PGD-AT, FGSM-RS, ...) come later
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
        help="training method (only standard training for now)",
    )
    p.add_argument("--key", metavar="INT", type=int, default=0, help="PRNG seed")
    p.add_argument("--out", metavar="DIR", required=True, help="checkpoint directory to write")
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


def _fail(message: str) -> int:
    print(f"geomrobust train: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        return _fail(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if args.lr is not None and not args.lr > 0:
        return _fail(f"--lr must be positive, got {args.lr}")
    try:
        config = _model_config(args)
    except ValueError as e:
        return _fail(str(e))

    import jax
    from flax import nnx

    from geomrobust.data import load_dataset
    from geomrobust.models import create_model, pure_apply
    from geomrobust.train import (
        cross_entropy_loss,
        evaluate,
        fit,
        make_optimizer,
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

    result = fit(
        apply,
        params,
        optimizer,
        train.images,
        train.labels,
        key=train_key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss_fn=cross_entropy_loss,
        eval_data=(test.images, test.labels),
        progress=args.progress,
    )
    final = evaluate(apply, result.state.params, test.images, test.labels)
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
        "train_settings": settings,
        "history": result.history,
        "train_time_s": seconds,
    }
    try:
        path = save_checkpoint(out, model, metadata, overwrite=args.overwrite)
    except (FileExistsError, OSError) as e:
        return _fail(str(e))
    print(
        f"test accuracy {final.accuracy:.4f} (loss {final.loss:.4f}, "
        f"{test.images.shape[0]} examples) after {args.epochs} epochs in {seconds:.1f} s; "
        f"checkpoint: {path}"
    )
    return 0
