"""The model and the data of a subcommand: ``--checkpoint --dataset --resize --split --n``
and ``--devices``, turned into a classifier, an ``ArrayDataset`` and a list of devices."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from geomrobust.data import load_dataset
from geomrobust.models import as_classifier
from geomrobust.parallel import resolve_devices
from geomrobust.train import checkpoint_hash, load_checkpoint

from ._args import DEFAULT_DATASET

__all__ = ["cli_devices", "load_model_and_data"]


def cli_devices(args: argparse.Namespace) -> list | None:
    """The devices of ``--devices`` (None: one device). Raises ValueError naming the fix
    when more devices are asked for than exist."""
    devs = resolve_devices(getattr(args, "devices", None))
    return devs if devs is not None and len(devs) > 1 else None


def load_model_and_data(args: argparse.Namespace):
    """Load ``args.checkpoint`` and the first ``args.n`` examples of the requested split.

    Returns
    -------
    (classifier, data, metadata)
        ``classifier`` the checkpoint's :class:`geomrobust.Classifier`;
        ``data`` an ``ArrayDataset`` (the first ``n`` examples, in dataset order);
        ``metadata`` the checkpoint's metadata plus ``checkpoint_path`` and
        ``checkpoint_sha256``, and the resolved ``eval_dataset`` / ``eval_resize`` /
        ``eval_split``.

    Raises
    ------
    ValueError, FileNotFoundError
        No ``--checkpoint``, an unreadable checkpoint, missing data, or data that does not
        fit the model; the message is one line that the subcommand can print.
    """
    if not getattr(args, "checkpoint", None):
        raise ValueError(
            "no --checkpoint given: train a model first, e.g. "
            "`geomrobust train --dataset digits --model lenet --out runs/lenet`, then pass "
            "--checkpoint runs/lenet"
        )
    ckpt = load_checkpoint(args.checkpoint)
    meta = dict(ckpt.metadata)
    dataset = args.dataset or meta.get("dataset") or DEFAULT_DATASET
    resize = args.resize if args.resize is not None else meta.get("resize")
    if isinstance(resize, list):
        resize = tuple(resize)
    data = load_dataset(
        dataset, args.split, data_dir=getattr(args, "data_dir", None), resize=resize
    )
    n = getattr(args, "n", None)
    if n is not None:
        data = data._replace(images=data.images[:n], labels=data.labels[:n])
    expected = tuple(meta.get("input_shape") or ())
    if expected and tuple(data.images.shape[1:]) != expected:
        raise ValueError(
            f"dataset {dataset!r} (resize={resize}) has images of shape "
            f"{tuple(data.images.shape[1:])}, but the checkpoint {args.checkpoint} expects "
            f"{expected}; pass --resize or a matching --dataset"
        )
    if meta.get("num_classes") is not None and data.num_classes != meta["num_classes"]:
        raise ValueError(
            f"dataset {dataset!r} has {data.num_classes} classes, but the checkpoint "
            f"{args.checkpoint} has {meta['num_classes']} outputs"
        )
    meta.update(
        checkpoint_path=os.fspath(Path(args.checkpoint).absolute()),
        checkpoint_sha256=checkpoint_hash(args.checkpoint),
        eval_dataset=dataset,
        eval_resize=list(resize) if isinstance(resize, tuple) else resize,
        eval_split=args.split,
    )
    return as_classifier(ckpt.model), data, meta
