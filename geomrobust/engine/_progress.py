"""Progress reporting: one bar style for the CLI and for ``progress=True`` in Python.

Dataset-level entry points take ``progress=`` as ``None``/``False`` (silent), ``True`` (a tqdm
bar on stderr counting examples) or a callable ``progress(n)`` called with the number of
examples finished since the last call. :func:`track` turns any of these into a callable
for the executor. The bar shows "compiling" until the first examples finish, and a
background ticker refreshes it twice a second, so its clock moves while XLA compiles or a
long chunk runs.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["progress_bar", "track"]


def progress_bar(total: int | None, desc: str = "", *, force: bool | None = None, **kwargs):
    """A tqdm progress bar on stderr.

    Shown when stderr is a terminal, or when ``force`` is True (or ``$GEOMROBUST_PROGRESS``
    is ``1``); ``force=False`` hides it. Use ``bar.update(n)`` and ``bar.close()`` (or
    ``with``).
    """
    if force is None:
        env = os.environ.get("GEOMROBUST_PROGRESS", "").strip().lower()
        force = True if env in ("1", "true", "yes") else None
    disable = not force if force is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=disable, leave=False, **kwargs)


class _Ticking:
    """``update(n)`` on a bar, with "compiling" shown until the first update and a daemon
    thread refreshing the bar (elapsed time) every ``interval`` seconds."""

    def __init__(self, bar, interval: float = 0.5):
        self.bar = bar
        self.lock = threading.Lock()
        self.started = False
        self.stop = threading.Event()
        if not getattr(bar, "disable", False):
            bar.set_postfix_str("compiling", refresh=True)
            self.thread = threading.Thread(target=self._tick, args=(interval,), daemon=True)
            self.thread.start()
        else:
            self.thread = None

    def _tick(self, interval: float) -> None:
        while not self.stop.wait(interval):
            with self.lock:
                self.bar.refresh()

    def __call__(self, n: int) -> None:
        with self.lock:
            if not self.started:
                self.started = True
                self.bar.set_postfix_str("", refresh=False)
            self.bar.update(int(n))

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
        self.bar.close()


def _check(progress) -> None:
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise TypeError(
        f"progress must be None, True/False or a callable progress(n), got "
        f"{type(progress).__name__}"
    )


@contextmanager
def track(progress, total: int | None, desc: str) -> Iterator[Callable[[int], None] | None]:
    """The executor's progress callback for an entry point's ``progress=`` option.

    ``None``/``False`` -> None; ``True`` -> a ticking tqdm bar of ``total`` examples,
    described by ``desc``, closed on exit; a callable -> itself.
    """
    _check(progress)
    if progress is None or progress is False:
        yield None
    elif progress is True:
        tick = _Ticking(progress_bar(total, desc, force=True))
        try:
            yield tick
        finally:
            tick.close()
    else:
        yield progress
