"""A resumable chunk store: long runs write their results one chunk at a time.

A dataset-level run splits its ``N`` examples into chunks of ``chunk_size`` and writes each
chunk's arrays to ``<folder>/chunk-00000.npz, chunk-00001.npz, ...`` atomically, next to
``<folder>/store.json``, which records the run's **settings** (every option that changes the
numbers, the data and the checkpoint hash) and their SHA-256. After an interruption (Ctrl-C,
SIGKILL, a lost node) the same command opens the same folder, finds the chunks already done
and computes only the rest; since each chunk is a pure function of the inputs, the settings
and the PRNG key, the resumed result is bit-identical to an uninterrupted run.

Opening a folder whose ``store.json`` holds different settings refuses with a
:class:`SettingsMismatchError` that lists the differences, unless ``overwrite=True`` (the
CLI's ``--restart``), which discards the old chunks.

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
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._files import CorruptFileError, load_json, load_npz, remove_stale_temps, save_json, save_npz

__all__ = ["ChunkStore", "SettingsMismatchError", "open_chunk_store", "settings_hash"]

_FORMAT = "geomrobust-chunk-store/1"
_STORE = "store.json"


class SettingsMismatchError(ValueError):
    """A resumable folder holds results computed with other settings."""


def _canonical(settings: Mapping) -> Any:
    """``settings`` as plain JSON values (tuples -> lists, NumPy scalars -> Python)."""
    from ._files import to_json_text

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
    """

    def __init__(self, folder: Path, settings: dict, digest: str):
        self.folder = folder
        self.settings = settings
        self.digest = digest

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
        """Write chunk ``index`` atomically (a flat dict of numeric arrays)."""
        return save_npz(self.path(index), arrays)

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Read chunk ``index`` (without pickle; a damaged file raises ``CorruptFileError``)."""
        return load_npz(self.path(index))

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
        """Delete every chunk (keeps ``store.json``)."""
        for p in self.folder.glob("chunk-*.npz"):
            p.unlink()


def open_chunk_store(
    folder: str | os.PathLike, settings: Mapping, *, overwrite: bool = False
) -> ChunkStore:
    """Open (or create) the chunk store in ``folder`` for a run with ``settings``.

    Parameters
    ----------
    folder : the store's folder (created if missing).
    settings : JSON-serializable dict of everything that changes the results: the options,
        the data selection, the checkpoint hash, the PRNG seed and the chunk size.
    overwrite : discard chunks computed with other settings instead of refusing.

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
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    canon = _canonical(settings)
    digest = settings_hash(canon)
    meta_path = root / _STORE
    record = {"format": _FORMAT, "settings_sha256": digest, "settings": canon}
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
            if not overwrite:
                raise SettingsMismatchError(
                    f"{root} holds results computed with other settings "
                    f"({_differences(old.get('settings', {}), canon)}); rerun with the same "
                    "settings to resume, or pass --restart to discard them"
                )
            old = None
        if old is None:
            shutil.rmtree(root)
            root.mkdir(parents=True)
            save_json(meta_path, record)
    else:
        if any(root.glob("chunk-*.npz")):
            if not overwrite:
                raise SettingsMismatchError(
                    f"{root} holds chunk files but no {_STORE}, so their settings are unknown; "
                    "pass --restart to discard them"
                )
            for p in root.glob("chunk-*.npz"):
                p.unlink()
        save_json(meta_path, record)
    return ChunkStore(root, canon, digest)
