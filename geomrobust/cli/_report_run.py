"""``geomrobust report``: the implementation, imported when the command runs.

The whole geometric analysis as one HTML report. The parser and its options are in
``cli/_report.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse

from geomrobust.report import run_report

from ._errors import CLIError
from ._locks import OutputLocks
from ._processes import start_processes, writes_outputs

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    start_processes(args)
    if writes_outputs(args):  # --distributed: process 0 writes, the others nothing
        outputs.hold(args.out)  # another run into the same --out stops here
    try:
        run_report(
            args.out,
            dataset=args.dataset,
            data_dir=args.data_dir,
            checkpoints=args.checkpoint,
            n=args.n,
            quick=args.quick,
            key=args.key,
            resize=args.resize,
            cache_dir=args.cache_dir,
            stages=args.stages,
            progress=args.progress,
        )
    except (ValueError, FileNotFoundError) as e:  # a missing dataset too
        raise CLIError(str(e), 2) from e
    if writes_outputs(args):
        print(f"report: {args.out}/index.html")
    return 0
