"""A subcommand's implementation, imported when the subcommand runs.

Each subcommand's parser (``cli/_<name>.py``) needs only :mod:`argparse`; its implementation
(``cli/_<name>_run.py``) imports JAX and the analyses. The parser's ``func`` default is an
:class:`Implementation`, so ``geomrobust <command> --help`` (and a bad option) is answered
before anything heavy is imported: this is the one deliberate lazy import of the command line
(docs/api.md section 4).
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["Implementation"]


class Implementation:
    """``func`` of a subcommand's parser: ``Implementation("geomrobust.cli._margins_run")``
    calls that module's ``run(args, outputs)`` (``outputs``: the run's
    :class:`geomrobust.cli._locks.OutputLocks`) and returns its exit code."""

    def __init__(self, module: str):
        self.module = module

    def __call__(self, args: argparse.Namespace, outputs) -> int:
        return importlib.import_module(self.module).run(args, outputs)

    def __repr__(self) -> str:
        return f"Implementation({self.module!r})"
