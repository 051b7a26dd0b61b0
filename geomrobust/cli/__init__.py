"""The ``geomrobust`` command: one subcommand per module in this package.

Each subcommand has a parser module ``cli/_<name>.py`` (:mod:`argparse` only) exposing
``add_parser(subparsers)``, which registers its parser and sets ``func`` to its
implementation ``cli/_<name>_run.py`` (:class:`~geomrobust.cli._dispatch.Implementation`,
imported on dispatch), so ``--help`` and bad options are answered before JAX is imported.
Before a subcommand runs, JAX's persistent compilation cache is turned on
(:func:`geomrobust.engine.enable_compilation_cache`: ``~/.cache/geomrobust/xla``, or
``$GEOMROBUST_CACHE_DIR/xla``), unless ``--no-compilation-cache`` or ``GEOMROBUST_XLA_CACHE=0``.
A subcommand reports an error by raising :class:`CLIError` anywhere below :func:`main`, which
prints it as one line ``geomrobust <command>: error: ...`` on stderr and returns its exit
code (2: bad arguments or inputs, 1: failures at run time); argparse's own errors are one
line with exit code 2 too. An environment fault that escapes a subcommand (an ``OSError``:
disk full, a file-size limit, no permission; or ``MemoryError``) is one line with exit code 1
as well, never a Python traceback; a file-size limit (``ulimit -f``) is reported as such
because ``SIGXFSZ`` is ignored (the write fails with ``EFBIG`` instead of killing the process).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import threading

from geomrobust import __version__

from ._args import OneLineParser, nonnegative_int, positive_float, positive_int, seed
from ._errors import CLIError, os_message, run_script

# OneLineParser, run_script and the argparse types are what every script under scripts/
# uses to follow the command's rules (one `error:` line, exit code 2 for bad arguments).
__all__ = [
    "CLIError",
    "OneLineParser",
    "build_parser",
    "main",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "run_script",
    "seed",
]

# Subcommand modules, in the order they appear in ``geomrobust --help``.
_COMMANDS = (
    "_report",
    "_train",
    "_import_torch",
    "_margins",
    "_curvature",
    "_slice",
    "_nads",
    "_diagnose",
)


_Parser = OneLineParser  # errors: one line on stderr, exit code 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="geomrobust",
        description="Geometric analysis of neural-network decision boundaries (JAX).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geomrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"geomrobust.cli.{name}")
        except ModuleNotFoundError as e:  # subcommand not written yet
            if e.name != f"geomrobust.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--no-compilation-cache",
            action="store_true",
            help="flag: compile every program again instead of loading it from JAX's persistent "
            "compilation cache ($GEOMROBUST_CACHE_DIR/xla or ~/.cache/geomrobust/xla; "
            "GEOMROBUST_XLA_CACHE=0 turns it off too)",
        )
    return parser


def _start(args: argparse.Namespace, own_process: bool = False):
    """After parsing: turn on the compilation cache (unless ``--no-compilation-cache``), tune
    the garbage collector where the command owns its process (``own_process``: the
    ``geomrobust`` script, ``python -m geomrobust``) and return the output locks of the run
    (:class:`geomrobust.cli._locks.OutputLocks`). The engine (JAX) and the locks (NumPy) are
    imported here, not before ``--help`` is answered."""
    engine = importlib.import_module("geomrobust.engine")
    if not args.no_compilation_cache:
        engine.enable_compilation_cache()
    if own_process:
        _tune_garbage_collector()
    return importlib.import_module(f"{__name__}._locks").OutputLocks()


def _tune_garbage_collector() -> None:
    """The command owns its process: freeze the objects of the imports out of Python's cyclic
    collections and collect the youngest generation every 100,000 allocations instead of
    700. Tracing and lowering a program builds many short-lived objects, and with the default
    thresholds each full collection walks every imported module's objects again (see
    docs/performance.md, "Start-up"). Arrays are freed by reference counting as before.
    Only for the command line's own process: ``main([...])`` called from Python (a notebook,
    a script, the tests) leaves its caller's collector as it was."""
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


_GC_TUNED = False


def _ignore_sigxfsz() -> None:
    """Exceeding ``ulimit -f`` then fails the write (``EFBIG``) instead of killing us."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """The ``geomrobust`` command line; ``argv=None`` (the installed script, ``python -m
    geomrobust``) reads ``sys.argv`` and owns the process, a list runs that command inside
    the caller's process. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _ignore_sigxfsz()
    code = _run(args, own_process=argv is None)
    if code and getattr(args, "process_layout", (0, 1))[1] > 1:
        _end_process(code)
    return code


def _run(args: argparse.Namespace, own_process: bool = False) -> int:
    try:
        with _start(args, own_process) as outputs:  # the locks of --out, released when it returns
            return int(args.func(args, outputs) or 0)
    except CLIError as e:
        print(f"geomrobust {args.command}: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # an environment fault no subcommand turned into a CLIError
        print(f"geomrobust {args.command}: error: {os_message(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"geomrobust {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except RuntimeError as e:  # another process of a --distributed run failed or was lost
        if not isinstance(e, importlib.import_module("geomrobust.engine").ProcessFailure):
            raise
        print(f"geomrobust {args.command}: error: {e}", file=sys.stderr)
        return 1


def _end_process(code: int) -> None:
    """End a failed process of a ``--distributed`` run now, with ``code``: JAX's orderly
    shutdown would wait at a barrier for the other processes (which may be waiting for this
    one) and abort with a page of runtime logs; leaving at once closes this process's
    connections, so the others' next collective fails and they end with their own line."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
