"""JAX's persistent compilation cache for the front ends (CLI, report, scripts, notebooks).

A ``geomrobust`` command is compile-bound on the CPU: ``geomrobust report --quick`` spends most
of its time in XLA. JAX can keep every compiled program on disk and load it in a later
process instead of compiling it again (``jax_compilation_cache_dir``, see JAX's
"Persistent compilation cache" documentation). :func:`enable_compilation_cache` turns it on
for the front ends, under ``cache_root() / "xla"``, with no minimum compile time and no
minimum entry size, so the many small programs of a run are cached too.

``import geomrobust`` never turns the cache on by itself: a library user's process keeps
JAX's settings. ``GEOMROBUST_XLA_CACHE=0`` (or the CLI's ``--no-compilation-cache``) turns it
off; a cache folder already set through JAX (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``) is kept as it is.

A damaged entry costs one compilation, never a failed run: JAX warns ("Error reading
persistent compilation cache entry") and compiles the program again
(``tests/test_compilation_cache.py`` writes garbage into every entry and runs again).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["cache_root", "compilation_cache_enabled", "enable_compilation_cache"]

_OFF = ("0", "false", "no", "off")


def cache_root() -> Path:
    """``$GEOMROBUST_CACHE_DIR`` if set, else ``~/.cache/geomrobust``: the folder of the
    trained-model cache (``models/``) and of the compilation cache (``xla/``)."""
    root = os.environ.get("GEOMROBUST_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "geomrobust"


def compilation_cache_enabled() -> bool:
    """False when ``$GEOMROBUST_XLA_CACHE`` is ``0`` / ``false`` / ``no`` / ``off``."""
    return os.environ.get("GEOMROBUST_XLA_CACHE", "").strip().lower() not in _OFF


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep this process' compiled XLA programs on disk, and load them from there.

    Parameters
    ----------
    path
        The cache folder; None means ``cache_root() / "xla"`` (:func:`cache_root`).

    Returns
    -------
    Path or None
        The folder in use; None when the cache is off (``GEOMROBUST_XLA_CACHE=0``). A folder
        set through JAX before the call is kept and returned (the call then only lowers the
        size and time thresholds to cache every program).

    Notes
    -----
    Call it before the first compilation of the process: JAX opens the cache once. Entries
    are keyed by the program, the JAX / jaxlib versions, the device and the compile options,
    so a stale entry is never used for a different program.
    """
    if not compilation_cache_enabled():
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        folder = Path(current)
    else:
        folder = Path(path).expanduser() if path is not None else cache_root() / "xla"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only home: run without the cache rather than fail
            return None
        jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
