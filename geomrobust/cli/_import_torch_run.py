"""``geomrobust import-torch``: the implementation, imported when the command runs.

A PyTorch checkpoint as a geomrobust checkpoint. The parser and its options are in
``cli/_import_torch.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from geomrobust.io import file_sha256
from geomrobust.models import from_torch
from geomrobust.train import save_checkpoint

from ._errors import CLIError, one_line
from ._import_torch import _NORMALISED
from ._locks import OutputLocks

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    outputs.hold(args.out, entry=True)  # another run into the same --out stops here
    source = Path(args.weights).expanduser()
    if not source.is_file():
        raise CLIError(f"{source}: no such file", 2)
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as e:
        raise CLIError(f"--config is not valid JSON: {e}", 2) from None
    if not isinstance(config, dict):
        raise CLIError(f"--config must be a JSON object, got {args.config!r}", 2)
    if args.arch in ("wide_resnet", "dm_wide_resnet"):
        config.setdefault("depth", args.depth or 28)
        width = "widen_factor" if args.arch == "wide_resnet" else "width"
        config.setdefault(width, args.widen_factor or 10)
    elif args.arch == "dm_preact_resnet":
        if args.widen_factor is not None:
            raise CLIError("--widen-factor applies to the WideResNets only", 2)
        config.setdefault("depth", args.depth or 18)
    elif args.depth is not None or args.widen_factor is not None:
        raise CLIError("--depth/--widen-factor apply to the WideResNets and dm_preact_resnet", 2)
    if args.activation is not None:
        if not args.arch.startswith("dm_"):
            raise CLIError("--activation applies to --arch dm_wide_resnet/dm_preact_resnet", 2)
        config["activation"] = args.activation
    if (args.mean is None) != (args.std is None):
        raise CLIError("give both --mean and --std, or neither", 2)
    if args.mean is not None:
        config.update(mean=list(args.mean), std=list(args.std))
    elif args.arch in _NORMALISED and "mean" not in config:
        print(f"geomrobust import-torch: warning: no --mean/--std: {_NORMALISED[args.arch]}",
              file=sys.stderr)  # fmt: skip
    config["input_shape"] = list(args.input_shape)
    try:
        model = from_torch(source, args.arch, num_classes=args.num_classes, **config)
    except (ValueError, TypeError, ImportError, OSError) as e:
        raise CLIError(one_line(e), 2 if isinstance(e, ValueError | TypeError) else 1) from None
    meta = {
        "dataset": args.dataset,
        "method": "imported",
        "source": {"path": os.fspath(source.absolute()), "sha256": file_sha256(source),
                   "architecture": args.arch, "format": source.suffix.lstrip(".")},
    }  # fmt: skip
    try:
        out = save_checkpoint(args.out, model, meta, overwrite=args.overwrite)
    except (FileExistsError, OSError, ValueError) as e:
        raise CLIError(one_line(e), 1) from None
    print(f"import-torch: {args.arch} from {source.name} -> {out}")
    return 0
