"""Several hosts: each process measures its shard of the dataset, results gather into one file.

Launch (one command per host, or per process on one machine; see docs/performance.md)::

    import jax, geomrobust as gr
    from geomrobust.parallel import process_shard, gather_to_file

    jax.distributed.initialize(coordinator_address="10.0.0.1:1234",
                               num_processes=P, process_id=i)   # or auto-detected (SLURM)
    sl = process_shard(len(x), align=chunk_size)      # this process's rows
    res = gr.deepfool_dataset(logits_fn, x[sl], chunk_size=chunk_size, devices="all")
    gather_to_file("margins.npz", res, sl, n=len(x))  # process 0 writes the merged file

Every process computes with its local devices only (no cross-host collectives), so the only
requirement on the cluster is a filesystem shared by the processes (the part files). With
``align=chunk_size`` the shard boundaries fall on chunk boundaries, so each process cuts the
same chunks as a single-process run and the merged file is bit-for-bit the single-process
result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np

__all__ = ["gather_to_file", "process_shard"]


def process_shard(
    n: int,
    *,
    align: int = 1,
    process_index: int | None = None,
    process_count: int | None = None,
) -> slice:
    """The contiguous rows ``[start, stop)`` of ``n`` that this process measures.

    Rows are split into blocks of ``align`` (use the measurement's ``chunk_size``) and the
    blocks dealt out as evenly as possible, earlier processes taking one more block when they
    do not divide; a process may get an empty slice when there are fewer blocks than processes.
    Defaults: ``jax.process_index()`` and ``jax.process_count()`` (after
    ``jax.distributed.initialize()``; one process otherwise, the whole range).
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(align, int | np.integer) or align < 1:
        raise ValueError(f"align must be a positive integer, got {align!r}")
    p = jax.process_count() if process_count is None else int(process_count)
    i = jax.process_index() if process_index is None else int(process_index)
    if p < 1 or not 0 <= i < p:
        raise ValueError(f"process_index must lie in [0, process_count={p}), got {i}")
    blocks = -(-int(n) // int(align))
    base, extra = divmod(blocks, p)
    first = i * base + min(i, extra)
    count = base + (1 if i < extra else 0)
    return slice(min(first * align, n), min((first + count) * align, n))


def _part_path(path: Path, i: int) -> Path:
    return path.with_name(f"{path.name}.part{i:05d}.npz")


def _as_dict(result) -> dict:
    if hasattr(result, "_asdict"):
        return {k: np.asarray(v) for k, v in result._asdict().items()}
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    raise TypeError(f"result must be a NamedTuple or a dict of arrays, got {type(result).__name__}")


def gather_to_file(
    path,
    result,
    rows: slice,
    *,
    n: int,
    process_index: int | None = None,
    process_count: int | None = None,
    timeout: float = 600.0,
    poll: float = 0.05,
) -> Path | None:
    """Write this process's ``result`` rows; process 0 merges every part into ``path`` (.npz).

    Each process atomically writes ``PATH.partIIIII.npz`` (its fields, rows ``rows`` of the
    dataset); process 0 waits for all ``process_count`` parts (``timeout`` seconds at most,
    then ``TimeoutError`` naming the missing ones), checks that their row ranges tile
    ``[0, n)``, writes the fields concatenated in row order to ``path`` (atomically) and
    removes the parts. Fields are NumPy arrays with the leading axis ``N`` (a NamedTuple
    result such as ``MarginResult`` or ``Curvatures``, or a dict).

    Returns the merged path on process 0, None on the others.
    """
    path = Path(path)
    p = jax.process_count() if process_count is None else int(process_count)
    i = jax.process_index() if process_index is None else int(process_index)
    fields = _as_dict(result)
    start, stop = int(rows.start or 0), int(rows.stop)
    for k, v in fields.items():
        if v.shape[:1] != (stop - start,):
            raise ValueError(
                f"result field {k!r} must have leading axis {stop - start} (rows {start}:{stop}),"
                f" got shape {v.shape}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(path, i)
    tmp = part.with_name(part.name + ".tmp.npz")
    np.savez(tmp, __rows__=np.asarray([start, stop]), **fields)
    os.replace(tmp, part)
    if i != 0:
        return None
    parts = [_part_path(path, j) for j in range(p)]
    deadline = time.monotonic() + timeout
    while not all(q.exists() for q in parts):
        if time.monotonic() > deadline:
            missing = [str(q) for q in parts if not q.exists()]
            raise TimeoutError(f"gather_to_file: parts still missing after {timeout}s: {missing}")
        time.sleep(poll)
    loaded = []
    for q in parts:
        with np.load(q, allow_pickle=False) as z:
            loaded.append({k: z[k] for k in z.files})
    loaded.sort(key=lambda d: int(d["__rows__"][0]))
    edge = 0
    for d in loaded:
        a, b = (int(v) for v in d["__rows__"])
        if a != edge:
            raise ValueError(
                f"gather_to_file: parts do not tile [0, {n}): gap or overlap at {edge}"
            )
        edge = b
    if edge != n:
        raise ValueError(f"gather_to_file: parts cover [0, {edge}), expected [0, {n})")
    merged = {k: np.concatenate([d[k] for d in loaded], axis=0) for k in fields}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **merged)
    os.replace(tmp, path)
    for q in parts:
        q.unlink()
    return path
