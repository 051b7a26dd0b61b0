"""Safe result files: atomic writes and pickle-free, validated reads.

* :func:`atomic_write` writes bytes or text to a temporary file in the target's folder,
  flushes it to disk and renames it over the target (``os.replace`` is atomic on POSIX and
  Windows), so a reader, or a run interrupted by SIGINT/SIGKILL, never sees a half-written file.
* :func:`save_npz` / :func:`load_npz` store flat dicts of numeric NumPy arrays. Loading never
  unpickles (``allow_pickle=False``) and turns a truncated, corrupted or foreign file into a
  :class:`CorruptFileError` (a ``ValueError``) that names the file and says what to do.
* :func:`save_json` / :func:`load_json` do the same for JSON records (non-finite floats are
  written as the strings ``"inf"``, ``"-inf"``, ``"nan"``, which JSON cannot hold).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "CorruptFileError",
    "atomic_write",
    "file_sha256",
    "load_json",
    "load_npz",
    "save_json",
    "save_npz",
]


class CorruptFileError(ValueError):
    """A results or metadata file that is truncated, corrupted, or not what it claims to be."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename).

    The parent folder is created if needed. The temporary file is fsynced before the rename,
    so after a crash ``path`` holds either the old content or the complete new content.
    Temporary files are named ``.<name>.<random>.tmp`` (see :func:`remove_stale_temps`).
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left by an :func:`atomic_write` that was killed; returns how many."""
    count = 0
    for p in Path(folder).glob(".*.tmp"):
        try:
            p.unlink()
            count += 1
        except OSError:  # pragma: no cover - raced with another process
            pass
    return count


def _numeric(arrays: Mapping, what: str) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{what} must be a mapping of name -> array, got {type(arrays).__name__}")
    out = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object or a.dtype.kind not in "biufcU":
            raise TypeError(
                f"{what}[{k!r}] has dtype {a.dtype}; results hold numeric (or string) arrays "
                "only, so they load without pickle"
            )
        out[str(k)] = a
    return out


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save a flat dict of numeric arrays to ``path`` (``.npz``) atomically."""
    arrays = _numeric(arrays, "arrays")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def load_npz(path: str | os.PathLike, *, keys=None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory, without pickle.

    Parameters
    ----------
    path : the file.
    keys : optional iterable of names the file must contain.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CorruptFileError
        The file is truncated, corrupted, not an ``.npz`` archive, holds object (pickled)
        arrays, or lacks one of ``keys``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"results file {p} does not exist")
    hint = "it is truncated, corrupted or not a geomrobust results file; delete it and rerun"
    try:
        f = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise CorruptFileError(f"{p} is not an .npz archive (unknown format); {hint}") from None
        raise CorruptFileError(f"{p}: {e}; {hint}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptFileError(f"{p} cannot be read ({type(e).__name__}: {e}); {hint}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise CorruptFileError(f"{p} is a bare .npy array, not an .npz archive; {hint}")
    try:
        with f:
            out = {k: np.asarray(f[k]) for k in f.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise CorruptFileError(
                f"{p} holds object arrays that need pickle to load; geomrobust never unpickles "
                "(a pickle can run arbitrary code). Re-create the file with numeric arrays"
            ) from None
        raise CorruptFileError(f"{p}: {e}; {hint}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptFileError(f"{p} cannot be read ({type(e).__name__}: {e}); {hint}") from None
    missing = [k for k in (keys or ()) if k not in out]
    if missing:
        raise CorruptFileError(f"{p} lacks the arrays {missing} (has {sorted(out)}); {hint}")
    return out


def _finite(o):
    """Replace non-finite floats (not valid JSON) by strings, recursively."""
    if isinstance(o, Mapping):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, float | np.floating) and not math.isfinite(float(o)):
        return str(float(o))
    return o


def _to_json(o):
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, np.ndarray | np.generic) or hasattr(o, "__array__"):
        return _finite(np.asarray(o).tolist())
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


def to_json_text(obj) -> str:
    """``obj`` as indented, key-sorted JSON; NumPy/JAX values converted, non-finite as strings."""
    return json.dumps(_finite(obj), indent=2, sort_keys=True, default=_to_json) + "\n"


def save_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`to_json_text`)."""
    return atomic_write(path, to_json_text(obj))


def load_json(path: str | os.PathLike) -> dict:
    """Read a JSON object (a dict) from ``path``; clear errors for damaged or foreign files."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"file {p} does not exist")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(
            f"{p} is not valid JSON ({e}); it is truncated or corrupted: delete it and rerun"
        ) from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{p} should hold a JSON object, got {type(obj).__name__}")
    return obj
