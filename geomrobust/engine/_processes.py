"""The process axis of the executor: several JAX processes (hosts) share one dataset.

After ``jax.distributed.initialize`` (JAX's multi-controller runtime: one process per host,
or several on one machine) every process runs the same program. :func:`map_chunks` then
cuts the chunks exactly as one process would, deals each process a contiguous block of
them (:func:`process_chunks`: earlier processes take one more when they do not divide),
computes its block with its local devices, and the blocks meet through JAX collectives
(:func:`jax.experimental.multihost_utils.process_allgather`; gloo on the CPU, the
interconnect elsewhere), so every process ends with the whole result, bit-for-bit that of
one process (a chunk's numbers never depend on who computed it).

What is exchanged, per :func:`map_chunks` call: one ``int32`` per process (did its block
succeed?) and then the outputs, each process's block padded to the longest block
(collectives need equal shapes on every process). Nested calls (a driver's own chunking
inside a chunk of an outer call) run locally: only the outermost call of a thread splits
(:data:`_INSIDE_CHUNK`).

Faults never hang: a Python error in one process's block still reaches the status exchange,
so every process raises :class:`ProcessFailure` at the same point; a process that dies
(killed, out of memory) closes its connections, and the collectives of the others fail at
once (or, on a lost host, JAX's coordination service ends them after its heartbeat
timeout). See docs/performance.md, "Several hosts".
"""

from __future__ import annotations

import contextvars
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = [
    "ProcessFailure",
    "ProcessLayout",
    "agree",
    "allgather_blocks",
    "inside_chunk",
    "process_chunks",
    "process_layout",
]

#: True while a thread runs the chunk function of a :func:`map_chunks` call: a call made from
#: there is nested (one chunk's own work) and never splits over processes.
_INSIDE_CHUNK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "geomrobust_inside_chunk", default=False
)


class ProcessFailure(RuntimeError):
    """Another process of a multi-process run failed or was lost; this one stops too."""


class ProcessLayout(NamedTuple):
    """This process's place in a multi-process run: ``index`` in ``[0, count)``."""

    index: int
    count: int


def process_layout() -> ProcessLayout:
    """``(jax.process_index(), jax.process_count())``: ``(0, 1)`` without
    ``jax.distributed``."""
    return ProcessLayout(int(jax.process_index()), int(jax.process_count()))


def process_chunks(
    n_chunks: int, *, process_index: int | None = None, process_count: int | None = None
) -> range:
    """The contiguous chunk indices of ``range(n_chunks)`` that one process computes.

    Blocks are as even as possible, earlier processes taking one more chunk when
    ``process_count`` does not divide ``n_chunks``; a process gets an empty range when there
    are fewer chunks than processes. Defaults: :func:`process_layout`.
    """
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int | np.integer) or n_chunks < 0:
        raise ValueError(f"n_chunks must be a non-negative integer, got {n_chunks!r}")
    i, p = process_layout()
    i = i if process_index is None else int(process_index)
    p = p if process_count is None else int(process_count)
    if p < 1 or not 0 <= i < p:
        raise ValueError(f"process_index must lie in [0, process_count={p}), got {i}")
    base, extra = divmod(int(n_chunks), p)
    first = i * base + min(i, extra)
    return range(first, first + base + (1 if i < extra else 0))


def inside_chunk() -> contextvars.Token:
    """Mark the calling thread as running a chunk function (reset with the returned token)."""
    return _INSIDE_CHUNK.set(True)


def splits(n_chunks: int) -> bool:
    """Whether a :func:`map_chunks` call of ``n_chunks`` chunks splits over processes: more
    than one process, at least one chunk each, and not nested in another call's chunk.
    (With fewer chunks than processes every process computes every chunk: no exchange.)"""
    return jax.process_count() > 1 and n_chunks >= jax.process_count() and not _INSIDE_CHUNK.get()


def _collective(fn, what: str):
    """Run a collective; a lost peer (closed connection, failed barrier) becomes a
    :class:`ProcessFailure` that says so in one line."""
    try:
        return fn()
    except ProcessFailure:
        raise
    except Exception as e:  # XlaRuntimeError / ValueError raised by the runtime
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProcessFailure(
            f"lost contact with another process during {what} ({first[:200]}): it crashed or "
            "was killed; rerun the same command to resume from the finished chunks"
        ) from e


def agree(ok: bool, what: str, *, detail: str = "") -> None:
    """Every process says whether its part of ``what`` succeeded; unless all did, every
    process raises :class:`ProcessFailure` naming the failed ones (this process's own error
    is raised by the caller with its message; ``detail`` is appended)."""
    i, p = process_layout()
    flags = _collective(
        lambda: np.asarray(multihost_utils.process_allgather(np.asarray([int(not ok)], np.int32))),
        what,
    ).reshape(p)
    failed = [j for j in range(p) if flags[j]]
    if failed and ok:
        who = ", ".join(map(str, failed))
        raise ProcessFailure(
            f"process {who} of {p} failed during {what} (its own error line says why); "
            f"process {i} stops too{detail}"
        )


def allgather_blocks(leaves: list[np.ndarray], rows: int) -> list[np.ndarray]:
    """Every process's ``leaves`` (arrays of ``rows`` rows each, the same shapes and dtypes
    on every process), stacked ``(process_count, rows, ...)``.

    The leaves travel as their raw bytes in ONE ``uint8`` matrix ``(rows, total bytes)``:
    one collective, and no dtype conversion on the way (``float64`` stays ``float64`` even
    without ``jax_enable_x64``), so what arrives is bit-for-bit what was sent.
    """
    _, p = process_layout()
    flat = [np.ascontiguousarray(a).reshape(rows, -1).view(np.uint8) for a in leaves]
    widths = [f.shape[1] for f in flat]
    send = np.concatenate(flat, axis=1) if flat else np.zeros((rows, 0), np.uint8)
    got = _collective(
        lambda: np.asarray(multihost_utils.process_allgather(send)), "the exchange of results"
    ).reshape(p, rows, -1)
    out, at = [], 0
    for a, w in zip(leaves, widths, strict=True):
        part = np.ascontiguousarray(got[:, :, at : at + w])
        out.append(part.view(a.dtype).reshape(p, rows, *a.shape[1:]))
        at += w
    return out
