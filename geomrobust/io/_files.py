"""Safe result files: atomic writes and pickle-free, validated reads.

* :func:`atomic_write` writes bytes or text to a temporary file in the target's folder,
  flushes it to disk and renames it over the target (``os.replace`` is atomic on POSIX and
  Windows), so a reader, or a run interrupted by SIGINT/SIGKILL, never sees a half-written file.
* :func:`save_npz` / :func:`load_npz` store flat dicts of numeric NumPy arrays. Loading never
  unpickles (``allow_pickle=False``) and turns a truncated, corrupted or foreign file into a
  :class:`CorruptFileError` (a ``ValueError``) that names the file and says what to do.
* :func:`save_json` / :func:`load_json` do the same for JSON records. The JSON is standard
  (RFC 8259): non-finite floats, which JSON cannot hold, are written as the strings ``"inf"``,
  ``"-inf"``, ``"nan"`` (:func:`to_json_text`, the one encoding of results, summaries,
  checkpoints and the report), never as bare ``NaN`` / ``Infinity``.
* :func:`lock_folder` takes an exclusive lock on a folder (``fcntl.flock`` on
  ``<folder>/.geomrobust.lock``, released by the OS when the process dies), so two runs never
  write into the same output folder; the second fails with :class:`FolderLockedError`.

A write that fails (disk full, a file-size limit, a target that is a folder) raises an
``OSError`` naming the target and the cause, and leaves the old content (or nothing) at the
target and no temporary file behind. New files get the permissions of the user's umask
(``0o666 & ~umask``), like a file created by ``open()``, not ``mkstemp``'s ``0o600``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import zipfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np

__all__ = [
    "CorruptFileError",
    "FolderLockedError",
    "atomic_write",
    "file_sha256",
    "load_json",
    "load_npz",
    "lock_folder",
    "remove_stale_temps",
    "save_json",
    "save_npz",
    "to_json_text",
]

LOCK_FILE = ".geomrobust.lock"


class CorruptFileError(ValueError):
    """A results or metadata file that is truncated, corrupted, or not what it claims to be."""


class FolderLockedError(BlockingIOError):
    """Another run (process) holds the lock of an output folder."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def _cause(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device (disk full)"
    if e.errno == errno.EFBIG:
        return "file too large (a file-size limit, ulimit -f, or the file system's limit)"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return e.strerror or type(e).__name__


def _temp_name(target: Path) -> Path:
    """``.<name>.<pid>-<random>.tmp`` next to ``target``: the pid says whose it is."""
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def atomic_write(path: str | os.PathLike, data) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename).

    ``data``: bytes, a str (UTF-8), or a callable ``write(f)`` that writes the content into
    the open binary file ``f`` (streamed: a large file need not be held in memory).

    The parent folder is created if needed. The temporary file is fsynced before the rename,
    so after a crash ``path`` holds either the old content or the complete new content.
    Temporary files are named ``.<name>.<pid>-<random>.tmp`` (see :func:`remove_stale_temps`)
    and get the permissions ``0o666 & ~umask``.

    Raises
    ------
    OSError
        The write failed (disk full, file-size limit, ``path`` is a folder, no permission):
        the message names ``path`` and the cause; ``path`` keeps its old content and no
        temporary file is left.
    """
    target = Path(path).expanduser()
    if isinstance(data, str):
        data = data.encode("utf-8")
    if callable(data):
        write = data
    elif isinstance(data, bytes | bytearray | memoryview):
        write = partial(_write_bytes, data=data)
    else:
        raise TypeError(f"data must be bytes or str (or a writer), got {type(data).__name__}")
    if target.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"cannot write {target}: it is a folder (choose a file path)"
        )
    tmp = _temp_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except OSError:  # pragma: no cover - file systems without permissions
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {target}: {_cause(e)}") from None
    finally:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return target


def _write_bytes(f, data) -> None:
    f.write(data)


def _writer_alive(temp: Path) -> bool:
    """Whether the process whose pid is in the temporary file's name still runs."""
    stem = temp.name[: -len(".tmp")]
    pid_part = stem.rsplit(".", 1)[-1].split("-", 1)[0]
    try:
        pid = int(pid_part)
    except ValueError:
        return False  # no pid in the name (an older geomrobust): stale
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # pragma: no cover - alive, owned by another user
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, names=None) -> int:
    """Delete temporary files left by an :func:`atomic_write` that was killed; returns how many.

    Only ``.<name>.*.tmp`` files are touched (``names``: the file names whose temporary files
    may be removed, e.g. ``["store.json", "chunk-*.npz"]``; None: any), and only those whose
    writer (the pid in the name) no longer runs: a running writer's file is never removed.
    """
    patterns = [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]
    count = 0
    seen = set()
    for pattern in patterns:
        for p in Path(folder).glob(pattern):
            if p in seen or not p.is_file() or _writer_alive(p):
                continue
            seen.add(p)
            try:
                p.unlink()
                count += 1
            except OSError:  # pragma: no cover - raced with another process
                pass
    return count


class _Lock:
    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover - released explicitly by lock_folder
        self.release()


@contextlib.contextmanager
def lock_folder(
    folder: str | os.PathLike,
    *,
    what: str = "--out",
    entry: str | None = None,
    wait: bool = False,
):
    """Hold an exclusive lock on ``folder`` (created if missing) for the duration of a block.

    The lock is ``fcntl.flock`` on ``<folder>/.geomrobust.lock``: the OS releases it when the
    process exits or is killed, so a killed run never blocks the next one. Where ``fcntl`` is
    missing (Windows) the block runs unlocked.

    ``entry`` locks one entry of ``folder`` instead (``<folder>/.<entry>.geomrobust.lock``),
    for an output that is replaced as a whole, such as a checkpoint directory. ``wait=True``
    waits for the other holder instead of failing (a shared cache).

    Raises
    ------
    FolderLockedError
        Another process (or another open of the same folder) holds the lock.
    OSError
        ``folder`` cannot be created (e.g. it is a file); the message names it.
    """
    root = Path(folder).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"{what} {root} exists and is not a folder (choose a folder path)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the folder {root}: {_cause(e)}") from None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield None
        return
    path = root / (LOCK_FILE if entry is None else f".{entry}{LOCK_FILE}")
    held = root if entry is None else root / entry
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the lock file {path}: {_cause(e)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderLockedError(
                errno.EWOULDBLOCK,
                f"another run holds {held} (lock {path}); wait for it to finish or choose "
                f"another {what}",
            ) from None
        raise  # pragma: no cover - flock unsupported by the file system
    lock = _Lock(path, fd)
    try:
        yield lock
    finally:
        lock.release()


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
    # streamed into the temporary file: an in-memory archive held the results twice more
    # (the BytesIO and its getvalue() copy), the largest allocation at the end of a run
    return atomic_write(path, partial(_savez, arrays=arrays))


def _savez(f, arrays) -> None:
    np.savez(f, **arrays)


def _check_member(p: Path, zf: zipfile.ZipFile, key: str, hint: str) -> None:
    """The ``.npy`` header of member ``key`` must declare no more bytes than the member holds
    (a crafted header declaring a huge array would otherwise allocate it: ``MemoryError``)."""
    fmt = np.lib.format
    name = key if key in zf.namelist() else f"{key}.npy"
    try:
        info = zf.getinfo(name)
        with zf.open(info) as fp:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fp)
            else:
                shape, _, dtype = fmt.read_array_header_2_0(fp)
            header = fp.tell()
    except KeyError:
        return  # not an .npy member: np.load reports it
    except (ValueError, TypeError, SyntaxError) as e:
        raise CorruptFileError(f"{p}: array {key!r} has a bad header ({e}); {hint}") from None
    if dtype.hasobject:
        return  # np.load refuses it (no pickle) with its own message
    count = math.prod(int(d) for d in shape)
    declared = count * dtype.itemsize
    if declared > info.file_size - header:
        raise CorruptFileError(
            f"{p}: array {key!r} declares shape {tuple(shape)} {dtype} ({declared} bytes) but "
            f"its member holds {max(info.file_size - header, 0)} bytes; {hint}"
        )


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
        f = np_load_closing(p)
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
            out = {}
            for k in f.files:
                _check_member(p, f.zip, k, hint)
                out[k] = np.asarray(f[k])
    except CorruptFileError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise CorruptFileError(
                f"{p} holds object arrays that need pickle to load; geomrobust never unpickles "
                "(a pickle can run arbitrary code). Re-create the file with numeric arrays"
            ) from None
        raise CorruptFileError(f"{p}: {e}; {hint}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as e:
        raise CorruptFileError(f"{p} cannot be read ({type(e).__name__}: {e}); {hint}") from None
    missing = [k for k in (keys or ()) if k not in out]
    if missing:
        raise CorruptFileError(f"{p} lacks the arrays {missing} (has {sorted(out)}); {hint}")
    return out


def np_load_closing(path) -> np.ndarray | np.lib.npyio.NpzFile:
    """``np.load(path, allow_pickle=False)`` that never leaves the file open: NumPy's
    ``np.load`` of a path leaks its file handle when the archive is unreadable (a truncated
    ``.npz`` raises ``BadZipFile`` after NumPy handed the handle to ``NpzFile``), and the handle
    is closed only by a later garbage collection, with a ``ResourceWarning``. Here the file is
    opened by us: closed at once for a bare ``.npy`` and on any error, and by the archive's
    ``close()`` (``with`` block) otherwise."""
    fh = open(path, "rb")  # closed below, or by the archive
    try:
        out = np.load(fh, allow_pickle=False)
    except BaseException:
        fh.close()
        raise
    if isinstance(out, np.lib.npyio.NpzFile):
        out.fid = fh  # NpzFile.close() closes its fid (NumPy leaves it None for a handle)
    else:
        fh.close()
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
    """``obj`` as indented, key-sorted, standard JSON.

    NumPy/JAX values are converted to lists and numbers; non-finite floats become the strings
    ``"inf"``, ``"-inf"``, ``"nan"`` (``float(s)`` reads them back), since standard JSON has
    no ``NaN`` or ``Infinity``; the text never holds those bare tokens.
    """
    return (
        json.dumps(_finite(obj), indent=2, sort_keys=True, default=_to_json, allow_nan=False) + "\n"
    )


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
