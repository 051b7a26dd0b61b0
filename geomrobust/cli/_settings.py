"""The parsed options of a subcommand as the settings of its analysis and as the record of
the run (``summary.json``'s ``settings``)."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["options_record", "settings_from_args"]


def options_record(args: argparse.Namespace) -> dict:
    """The parsed options as a JSON-serializable dict (callables dropped)."""
    out = {}
    for k, v in vars(args).items():
        if callable(v):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def settings_from_args(cls, args: argparse.Namespace, **overrides):
    """The settings dataclass ``cls`` of an analysis from the options of the same names
    (lists become tuples), ``overrides`` taking precedence."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, f.name):
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)
