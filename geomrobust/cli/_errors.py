"""Errors and warnings of the ``geomrobust`` command, each as one line on stderr.

:class:`CLIError` is the one error type below :func:`geomrobust.cli.main`, which prints it as
ONE line ``geomrobust <command>: error: ...`` and exits with its code (2: bad arguments or
inputs, 1: failures at run time); :func:`user_errors` turns library errors into it and
:func:`warnings_as_lines` prints each warning of a block once, as one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "USER_ERRORS",
    "CLIError",
    "one_line",
    "os_message",
    "run_script",
    "user_errors",
    "warnings_as_lines",
]


def one_line(message) -> str:
    """An error message as one line (a CLI error is one line on stderr)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


class CLIError(Exception):
    """An error of a subcommand: ``message`` is printed as one line, ``exit_code`` returned
    (2: bad arguments or inputs, 1: failures at run time)."""

    def __init__(self, message, exit_code: int = 1):
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.exit_code = int(exit_code)


#: Library errors a user's input can cause: reported as one line, never a traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, KeyError)


def os_message(e: OSError) -> str:
    """An ``OSError`` as one readable line: ``path: cause`` (no ``[Errno N]`` prefix)."""
    if not e.strerror:
        return one_line(e)
    names = [n for n in (e.filename, e.filename2) if n is not None]
    return one_line(" -> ".join(map(os.fspath, names)) + f": {e.strerror}" if names else e.strerror)


@contextlib.contextmanager
def user_errors(exit_code: int, prefix: str = "") -> Iterator[None]:
    """Turn the library errors of a block (:data:`USER_ERRORS`) into a :class:`CLIError`
    with ``exit_code``, the message prefixed by ``prefix`` (e.g. ``"--devices: "``)."""
    try:
        yield
    except CLIError:
        raise
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError):
            message = os_message(e)
        raise CLIError(f"{prefix}{message}", exit_code) from e


@contextlib.contextmanager
def warnings_as_lines(command: str) -> Iterator[None]:
    """Print the warnings of a block once each, as one line ``geomrobust <command>:
    warning: ...`` on stderr (a chunked analysis can warn once per chunk)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {one_line(w.message)}"
        if text not in seen:
            seen.add(text)
            print(f"geomrobust {command}: warning: {text}", file=sys.stderr)


#: Errors of a script's inputs (a missing checkpoint, a bad setting): exit code 2.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, ImportError, FileNotFoundError,
                 NotADirectoryError, IsADirectoryError)  # fmt: skip


def run_script(main, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run a script's ``main(argv) -> int`` under the command's rules: a library error that the
    user's inputs caused (:data:`_INPUT_ERRORS`, or a :class:`CLIError` with its own code) is
    ONE line ``prog: error: ...`` with exit code 2, an environment fault (another
    ``OSError``, ``MemoryError``) one line with exit code 1, never a traceback. Use it as
    ``sys.exit(run_script(main))`` with an :class:`OneLineParser` for the arguments."""
    prog = prog or Path(sys.argv[0]).name
    try:
        return int(main(argv) or 0)
    except CLIError as e:
        print(f"{prog}: error: {one_line(e.message)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError):
            message = os_message(e)
        print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {os_message(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return 1
