"""The lock of a subcommand's output folder: a second run into the same ``--out`` stops at
once with "another run holds OUT" (exit code 1), without touching the first run's files.

:func:`geomrobust.cli.main` runs every subcommand inside an :class:`OutputLocks` (a context
manager) and hands it to the subcommand, which calls :meth:`OutputLocks.hold` as soon as its
output path is known; the locks are released when the subcommand returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from geomrobust.io import lock_folder

from ._errors import user_errors

__all__ = ["OutputLocks", "locked_out"]


@contextlib.contextmanager
def locked_out(out: str | os.PathLike, *, entry: bool = False) -> Iterator[Path]:
    """Hold the lock of the output folder ``out`` for a block (:func:`geomrobust.io.lock_folder`).

    A second run into the same ``out`` fails at once with a :class:`CLIError` (exit code 1)
    "another run holds OUT", without touching the first run's files. ``entry=True`` locks
    ``out`` as an entry of its parent (an output replaced as a whole: a checkpoint).
    """
    out = Path(out).expanduser()
    with contextlib.ExitStack() as stack:
        with user_errors(1):
            if entry:
                stack.enter_context(lock_folder(out.parent, what="--out", entry=out.name))
            else:
                stack.enter_context(lock_folder(out, what="--out"))
        yield out


class OutputLocks(contextlib.AbstractContextManager):
    """The output locks of one subcommand run, released together when the block ends.

    ``with OutputLocks() as outputs: ... outputs.hold(out) ...``
    """

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._held: set[tuple[str, bool]] = set()

    def hold(self, out: str | os.PathLike, *, entry: bool = False) -> Path:
        """Take the lock of ``out`` (:func:`locked_out`) until the block ends; returns ``out``.

        Call it as soon as the output path is known, before anything is read from or written
        to it. A second call for the same path is a no-op.
        """
        out = Path(out).expanduser()
        key = (os.fspath(out.absolute()), entry)
        if key not in self._held:
            self._stack.enter_context(locked_out(out, entry=entry))
            self._held.add(key)
        return out

    def __exit__(self, *exc) -> None:
        self._held.clear()
        self._stack.close()
