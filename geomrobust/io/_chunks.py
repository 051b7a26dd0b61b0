"""A resumable chunk store: long runs write their results one chunk at a time.

A dataset-level run splits its ``N`` examples into chunks of ``chunk_size`` and writes each
chunk's arrays to ``<folder>/chunk-00000.npz, chunk-00001.npz, ...`` atomically, next to
``<folder>/store.json``, which records the run's **settings** (every option that changes the
numbers, the data and the checkpoint hash) and their SHA-256. After an interruption (Ctrl-C,
SIGKILL, a lost node) the same command opens the same folder, finds the chunks already done
and computes only the rest; since each chunk is a pure function of the inputs, the settings
and the PRNG key, the resumed result is bit-identical to an uninterrupted run.

Every chunk file also carries the settings' SHA-256 (the array ``__settings_sha256__``),
checked when the chunk is read back: a valid chunk file of another run (other settings,
another checkpoint) copied or left in the folder is refused, never mixed in.

Opening a folder whose ``store.json`` holds different settings refuses with a
:class:`SettingsMismatchError` that lists the differences, unless ``overwrite=True`` (the
CLI's ``--restart``), which deletes the files this store wrote (``store.json`` and the
``chunk-NNNNN.npz`` files that carry a digest) and nothing else. A non-empty folder without a
``store.json`` (one this store did not create) is never adopted. A folder is used by one run
at a time: wrap the run in :func:`geomrobust.io.lock_folder` (the CLI locks ``--out``).

Example
-------
>>> import numpy as np, tempfile
>>> folder = tempfile.mkdtemp()
>>> store = open_chunk_store(folder, {"n": 5, "chunk_size": 2})
>>> out = store.map(lambda i, s: {"sq": np.arange(s.start, s.stop) ** 2}, n=5, chunk_size=2)
>>> out["sq"].tolist()
[0, 1, 4, 9, 16]
>>> store.completed()
[0, 1, 2]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._deprecation import upgrade_record
from ._files import (
    LOCK_FILE,
    CorruptFileError,
    load_json,
    load_npz,
    remove_stale_temps,
    save_json,
    save_npz,
    to_json_text,
)

__all__ = ["ChunkStore", "SettingsMismatchError", "open_chunk_store", "settings_hash"]

_FORMAT = "geomrobust-chunk-store/1"
_STORE = "store.json"
_DIGEST = "__settings_sha256__"  # the array of every chunk file naming its settings
_CHUNK = re.compile(r"chunk-\d{5,}\.npz")
_TEMPS = (_STORE, "chunk-*.npz")


class SettingsMismatchError(ValueError):
    """A resumable folder holds results computed with other settings."""


def _canonical(settings: Mapping) -> Any:
    """``settings`` as plain JSON values (tuples -> lists, NumPy scalars -> Python)."""
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    return json.loads(to_json_text(dict(settings)))


def settings_hash(settings: Mapping) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (key order does not matter)."""
    text = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _differences(old: Mapping, new: Mapping, limit: int = 6) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [
        f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
        for k in keys
        if old.get(k, "<absent>") != new.get(k, "<absent>")
    ]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


class ChunkStore:
    """Per-chunk results of one run in ``folder`` (create it with :func:`open_chunk_store`).

    Attributes
    ----------
    folder : Path
    settings : dict, the canonical settings recorded in ``store.json``.
    digest : str, their SHA-256.
    upgrade : None, or ``upgrade(arrays) -> arrays`` applied to every chunk read back, so
        that a chunk written by an earlier release gets the arrays it lacks (set with
        :meth:`upgraded`; e.g. the margin analyses derive ``status`` there).
    """

    def __init__(self, folder: Path, settings: dict, digest: str, upgrade=None):
        self.folder = folder
        self.settings = settings
        self.digest = digest
        self.upgrade = upgrade

    def upgraded(self, upgrade: Callable[[dict], Mapping[str, np.ndarray]]) -> ChunkStore:
        """This store, with ``upgrade`` applied to every chunk it reads back (a new object;
        the folder and its files are shared)."""
        return ChunkStore(self.folder, self.settings, self.digest, upgrade)

    def __repr__(self) -> str:
        return f"ChunkStore({os.fspath(self.folder)!r}, {len(self.completed())} chunks done)"

    def path(self, index: int) -> Path:
        """The file of chunk ``index``."""
        return self.folder / f"chunk-{int(index):05d}.npz"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def completed(self) -> list[int]:
        """Indices of the chunks already written, ascending."""
        done = []
        for p in self.folder.glob("chunk-*.npz"):
            try:
                done.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(done)

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write chunk ``index`` atomically (a flat dict of numeric arrays), with the digest
        of the store's settings."""
        if _DIGEST in arrays:
            raise ValueError(f"{_DIGEST!r} is a reserved array name of chunk files")
        return save_npz(self.path(index), {**arrays, _DIGEST: np.asarray(self.digest)})

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Read chunk ``index`` (without pickle), through :attr:`upgrade` when set.

        Raises
        ------
        CorruptFileError
            The file is damaged.
        SettingsMismatchError
            The file was written by a run with other settings or another checkpoint (its
            digest differs from the store's), or carries no digest.
        """
        path = self.path(index)
        arrays = load_npz(path)
        digest = arrays.pop(_DIGEST, None)
        found = str(digest) if digest is not None and digest.ndim == 0 else None
        if found != self.digest:
            what = (
                "carries no settings digest (an older geomrobust, or not geomrobust's)"
                if (found is None)
                else (
                    f"was written with other settings or another checkpoint (digest "
                    f"{found[:12]}..., this run {self.digest[:12]}...)"
                )
            )
            raise SettingsMismatchError(
                f"{path} {what}; it is not a result of this run: rerun with --restart to "
                "discard the chunks, or remove that file"
            )
        if self.upgrade is not None:
            arrays = {k: np.asarray(v) for k, v in self.upgrade(arrays).items()}
        return arrays

    def map(
        self,
        fn: Callable[[int, slice], Mapping[str, Any]],
        *,
        n: int,
        chunk_size: int,
        progress: Callable[[int], None] | None = None,
        group: int = 1,
    ) -> dict[str, np.ndarray]:
        """Compute the missing chunks with ``fn(index, slice)`` and return all of them joined.

        ``fn`` gets the chunk index and the slice ``start:stop`` of the examples it covers
        and returns a flat dict of arrays with leading axis ``stop - start``. Chunks already
        on disk are read back instead of recomputed; each new chunk is written before the
        next one starts. ``progress`` is called with the number of examples of every chunk
        (done or loaded). Arrays are concatenated along axis 0 in chunk order.

        ``group > 1`` hands ``fn`` up to ``group`` consecutive missing chunks at once (the
        index of the first and the slice covering them all, starting on a chunk boundary), for
        example one chunk per device; the result is split back into chunks and each is
        written as usual, so the folder is the same whatever the grouping.
        """
        if int(n) < 1 or int(chunk_size) < 1 or int(group) < 1:
            raise ValueError(
                f"n, chunk_size and group must be positive, got n={n}, chunk={chunk_size}, "
                f"group={group}"
            )
        n, chunk_size = int(n), int(chunk_size)
        bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
        parts: list = [None] * len(bounds)
        index = 0
        while index < len(bounds):
            if self.has(index):
                parts[index] = self._checked(index, self.load(index), *bounds[index])
                last = index
            else:
                last = index  # a run of missing chunks, at most ``group`` long
                while (
                    last + 1 < len(bounds) and last + 1 - index < group and not self.has(last + 1)
                ):
                    last += 1
                start, stop = bounds[index][0], bounds[last][1]
                arrays = {k: np.asarray(v) for k, v in fn(index, slice(start, stop)).items()}
                for j in range(index, last + 1):
                    a, b = bounds[j]
                    sub = {k: self._rows(k, v, a - start, b - start, stop - start, index)
                           for k, v in arrays.items()}  # fmt: skip
                    self.save(j, sub)
                    parts[j] = sub
            if progress is not None:
                progress(bounds[last][1] - bounds[index][0])
            index = last + 1
        keys = list(parts[0])
        for i, p in enumerate(parts):
            if list(p) != keys:
                raise CorruptFileError(
                    f"chunk {i} holds arrays {sorted(p)}, chunk 0 holds {sorted(keys)}; "
                    f"the folder {self.folder} mixes runs: rerun with --restart"
                )
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in keys}

    def _checked(self, index: int, arrays: dict, start: int, stop: int) -> dict:
        m = stop - start
        for k, v in arrays.items():
            if v.ndim == 0 or v.shape[0] != m:
                raise CorruptFileError(
                    f"chunk {index} array {k!r} has shape {v.shape}, expected a leading "
                    f"axis of {m} examples ({self.path(index)}); rerun with --restart"
                )
        return arrays

    @staticmethod
    def _rows(name: str, v: np.ndarray, a: int, b: int, m: int, index: int) -> np.ndarray:
        if v.ndim == 0 or v.shape[0] != m:
            raise ValueError(
                f"the chunk function returned {name!r} with shape {v.shape} for chunks from "
                f"{index} on; expected a leading axis of {m} examples"
            )
        return v[a:b]

    def clear(self) -> None:
        """Delete the chunk files this store wrote (keeps ``store.json`` and other files)."""
        _remove_own_chunks(self.folder)


def _is_own_chunk(p: Path) -> bool:
    """``p`` is a chunk file written by a chunk store: its name ``chunk-NNNNN.npz`` and a
    ``__settings_sha256__`` member (the zip directory is read, not the arrays), or a
    damaged file of that name (not even a zip archive: no data of anyone's is in it). A valid
    archive without the digest (a file of the user's, or of an older geomrobust) is not."""
    if not (_CHUNK.fullmatch(p.name) and p.is_file()):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return f"{_DIGEST}.npy" in z.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError):
        return True
    except OSError:
        return False


def _remove_own_chunks(root: Path) -> None:
    for p in root.glob("chunk-*.npz"):
        if _is_own_chunk(p):
            p.unlink()
    remove_stale_temps(root, _TEMPS)


def _foreign(root: Path) -> list[str]:
    """Names in ``root`` that a chunk store did not write."""
    out = []
    for p in root.iterdir():
        if p.name in (_STORE, LOCK_FILE) or _is_own_chunk(p):
            continue
        if p.name.startswith((".chunk-", f".{_STORE}.")) and p.name.endswith(".tmp"):
            continue
        out.append(p.name)
    return sorted(out)


def open_chunk_store(
    folder: str | os.PathLike,
    settings: Mapping,
    *,
    overwrite: bool = False,
    renamed: Mapping[str, str] | None = None,
) -> ChunkStore:
    """Open (or create) the chunk store in ``folder`` for a run with ``settings``.

    Parameters
    ----------
    folder : the store's folder (created if missing).
    settings : JSON-serializable dict of everything that changes the results: the options,
        the data selection, the checkpoint hash, the PRNG seed and the chunk size.
    overwrite : discard chunks computed with other settings instead of refusing.
    renamed : settings keys renamed since an earlier release, ``{old: new}`` (a settings
        class's ``__renamed__``, :func:`geomrobust._deprecation.renamed`): a folder written
        under the old names with the same values resumes (its chunks keep their digest).

    Raises
    ------
    SettingsMismatchError
        ``folder`` holds chunks of a run with other settings (the message lists them).
    CorruptFileError
        ``store.json`` is damaged or foreign.
    """
    root = Path(folder).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"chunk store {root} exists and is not a folder")
    canon = _canonical(settings)
    digest = settings_hash(canon)
    meta_path = root / _STORE
    record = {"format": _FORMAT, "settings_sha256": digest, "settings": canon}
    if root.is_dir() and not meta_path.is_file():
        foreign = _foreign(root)
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise FileExistsError(
                f"{root} is not empty ({', '.join(foreign[:5])}{more}) and was not created by "
                f"geomrobust (no {_STORE}); refusing to use it, even with --restart: choose "
                "another --out, or move those files"
            )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root, _TEMPS)
    if meta_path.is_file():
        try:
            old = load_json(meta_path)
            if old.get("format") != _FORMAT:
                raise CorruptFileError(f"{meta_path} is not a geomrobust chunk store")
        except CorruptFileError:
            if not overwrite:
                raise
            old = None
        if old is not None and old.get("settings_sha256") != digest:
            if renamed and _same_after_renames(old, canon, renamed):
                return ChunkStore(root, old["settings"], old["settings_sha256"])
            if not overwrite:
                raise SettingsMismatchError(
                    f"{root} holds results computed with other settings "
                    f"({_differences(_as_dict(old.get('settings')), canon)}); rerun with the "
                    "same settings to resume, or pass --restart to discard them"
                )
            old = None
        if old is None:
            _remove_own_chunks(root)
            save_json(meta_path, record)
    else:
        if any(_is_own_chunk(p) for p in root.glob("chunk-*.npz")):
            if not overwrite:
                raise SettingsMismatchError(
                    f"{root} holds chunk files but no {_STORE}, so their settings are unknown; "
                    "pass --restart to discard them"
                )
            _remove_own_chunks(root)
        save_json(meta_path, record)
    return ChunkStore(root, canon, digest)


def _same_after_renames(old: Mapping, canon: Mapping, renamed: Mapping[str, str]) -> bool:
    """Whether ``old`` (a ``store.json`` record) holds ``canon`` under old key names, its
    digest being that of its own settings (so its chunks are what it says)."""
    saved = old.get("settings")
    if not isinstance(saved, dict) or not set(saved) & set(renamed):
        return False
    if old.get("settings_sha256") != settings_hash(saved):
        return False
    return settings_hash(upgrade_record(saved, renamed)) == settings_hash(canon)


def _as_dict(v) -> dict:
    return v if isinstance(v, dict) else {}
