"""The executor: every dataset-level measurement runs its per-chunk program through here.

One mechanism for all of them (docs/methods.md, "one executor"):

* **chunks**: the ``N`` examples are cut into chunks of ``chunk_size`` rows, the last one
  padded by repeating its last row (padding rows are computed and dropped, never returned),
  so a program sees one shape and compiles once for any ``N``;
* **devices**: ``devices=None`` runs every chunk on one device (that of the inputs when they
  are committed JAX arrays, else the default device); ``"all"``, an int or a list of devices
  deal chunk ``i`` to device ``i mod n``, one host thread per device. Inputs, the classifier
  and the other shared arguments are placed with explicit ``jax.device_put`` (no reads of
  the default-device setting inside the workers). Each chunk runs the same compiled program
  on the same padded shapes whatever the device, so results are bit-for-bit those of one
  device;
* **progress**: a callback with the number of examples finished, after each chunk, or
  within a chunk for runners that report their own progress (``chunk.report(n)``);
* **resume**: an optional :class:`geomrobust.io.ChunkStore`: chunks already on disk are read
  back instead of computed, each new chunk is written before the next one is handed out;
* **once**: a call made from inside another call's chunk that fits in one chunk (a
  pipeline of measurements on that chunk's rows) is the chunk's own work: ``fn`` runs on
  the arrays as they are, on their device, without a second chunk loop, progress bar, store
  or process split, so the chunk loop is entered once per pass over the data.

The per-chunk work is either a jitted program ``fn(*shared, *chunk_arrays)`` or a host-driven
runner that also receives the :class:`Chunk` (``with_chunk=True``; the DeepFool driver's
continuous-batching loop is one).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import all_concrete
from ._buffers import aligned_empty
from ._devices import resolve_devices
from ._processes import (
    _INSIDE_CHUNK,
    ProcessFailure,
    agree,
    allgather_blocks,
    inside_chunk,
    process_chunks,
    process_layout,
    splits,
)
from ._progress import track

__all__ = ["Chunk", "chunk_bounds", "home_device", "map_chunks", "put_rows", "run_program"]


class Chunk(NamedTuple):
    """One unit of work: rows ``start:stop`` of the data, padded to ``size`` rows, on
    ``device``. ``report(n)``: ``n`` more of its examples are finished (optional; the rest
    are reported when the chunk returns)."""

    index: int
    start: int
    stop: int
    size: int
    device: Any
    report: Callable[[int], None]


class ChunkBounds(NamedTuple):
    """size: the padded chunk size; bounds: the ``(start, stop)`` of every chunk."""

    size: int
    bounds: list


def chunk_bounds(n: int, chunk_size: int | None) -> ChunkBounds:
    """The padded chunk size and the ``(start, stop)`` of every chunk of ``n`` rows."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"there must be at least one example, got N={n}")
    if chunk_size is None:
        size = int(n)
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        size = min(int(chunk_size), int(n))
    return ChunkBounds(size, [(s, min(s + size, int(n))) for s in range(0, int(n), size)])


def home_device(*trees):
    """The device of the first committed single-device JAX array among ``trees``, else the
    default device (read once, in the calling thread)."""
    for leaf in jax.tree.leaves(trees):
        if isinstance(leaf, jax.Array) and getattr(leaf, "committed", False):
            devs = leaf.devices()
            if len(devs) == 1:
                return next(iter(devs))
    default = jax.config.jax_default_device
    if isinstance(default, jax.Device):
        return default
    return jax.local_devices()[0]  # this process's (with jax.distributed, devices() is global)


@partial(jax.jit, static_argnames="size")
def _take_rows(a, start, last, *, size):
    """Rows ``start, start + 1, ...`` of ``a``, ``size`` of them, repeating row ``last``
    past it (the padding of the last chunk); ``start`` and ``last`` are traced."""
    idx = jnp.minimum(start + jnp.arange(size), last)
    return jnp.take(a, idx, axis=0)


def _on_cpu(a) -> bool:
    return all(d.platform == "cpu" for d in a.devices())


def put_rows(a, start: int, stop: int, size: int, device):
    """Rows ``start:stop`` of ``a``, padded to ``size`` by repeating the last one, on
    ``device``. NumPy (and host-resident JAX) arrays are cut on the host, other JAX arrays on
    their device by one jitted gather (compiled once per shape)."""
    if isinstance(a, jax.Array) and not _on_cpu(a):
        block = _take_rows(a, np.int32(start), np.int32(stop - 1), size=size)
        return jax.device_put(block, device)
    block = np.asarray(a)[start:stop]
    if stop - start < size:
        pad = np.repeat(block[-1:], size - (stop - start), axis=0)
        block = np.concatenate([block, pad], axis=0)
    return jax.device_put(block, device)


class _Outputs:
    """Host buffers ``(N, ...)`` for a pytree of per-chunk outputs, allocated from the first
    chunk that finishes (under a lock: device threads finish in any order)."""

    def __init__(self, n: int):
        self.n = n
        self.lock = threading.Lock()
        self.treedef = None
        self.bufs = None

    def write(self, tree, start: int, stop: int) -> None:
        leaves, treedef = jax.tree.flatten(tree)
        with self.lock:
            if self.bufs is None:
                for v in leaves:
                    if np.ndim(v) == 0:
                        raise ValueError(
                            "every per-chunk output must have a leading axis of examples; got "
                            f"a scalar {type(v).__name__}"
                        )
                self.treedef = treedef
                # 64-byte aligned: the final device_put aliases them (no copy on the CPU)
                self.bufs = [aligned_empty((self.n, *np.shape(v)[1:]), np.asarray(v).dtype)
                             for v in leaves]  # fmt: skip
            elif treedef != self.treedef:
                raise ValueError(f"chunk outputs differ in structure: {treedef} vs {self.treedef}")
        for buf, v in zip(self.bufs, leaves, strict=True):
            buf[start:stop] = np.asarray(v)[: stop - start]

    def result(self):
        return jax.tree.unflatten(self.treedef, self.bufs)


def map_chunks(
    fn: Callable,
    batched: Sequence,
    shared: Sequence = (),
    *,
    store=None,
    with_chunk: bool = False,
    processes: bool = True,
    chunk_size: int | None,
    devices=None,
    progress: Callable[[int], None] | None = None,
):
    """Run ``fn`` over fixed-size chunks of ``batched`` and join the outputs.

    Parameters
    ----------
    fn : ``fn(*shared, *chunks)`` (``with_chunk``: also ``chunk=Chunk``) returning a pytree of
        arrays with a leading axis of ``chunk.size`` rows (the padded chunk); usually a
        module-level ``jax.jit`` program, whose compilation then serves every chunk.
    batched : arrays (NumPy or JAX) sharing the leading axis ``N``.
    shared : arguments every chunk receives whole (the classifier, keys, settings):
        placed once on each device with ``jax.device_put``.
    chunk_size : rows per chunk (None: all ``N`` in one chunk).
    devices : None (one device, see the module docstring), ``"all"``, an int or a list of
        devices.
    progress : callback with the number of examples finished.
    store : optional :class:`geomrobust.io.ChunkStore` for resuming (``fn`` must then return
        a flat dict of arrays); its chunks must be cut with the same ``chunk_size``.
    with_chunk : pass the :class:`Chunk` to ``fn`` as ``chunk=``.
    processes : with several JAX processes (``jax.distributed``), deal the chunks out over
        them and gather the outputs through collectives (:mod:`geomrobust.engine._processes`);
        every process must then make the same calls. False: this process computes every
        chunk (work whose calls may differ between processes, e.g. training).

    Returns
    -------
    The pytree of ``fn``'s outputs with NumPy arrays of ``N`` rows (padding dropped), on
    every process.

    Raises
    ------
    ProcessFailure
        Another process of a multi-process run failed or was lost (this process's own
        errors are raised as they are, after the others have been told).
    """
    batched = tuple(batched)
    if not batched:
        raise ValueError("map_chunks needs at least one batched array")
    n = int(np.shape(batched[0])[0]) if np.ndim(batched[0]) else 0
    for a in batched:
        if np.ndim(a) == 0 or np.shape(a)[0] != n:
            raise ValueError(
                "all batched arrays must share the leading axis; got shapes "
                f"{[tuple(np.shape(b)) for b in batched]}"
            )
    size, bounds = chunk_bounds(n, chunk_size)
    if _INSIDE_CHUNK.get() and len(bounds) == 1 and store is None and devices is None:
        return _chunk_work(fn, batched, shared, n, with_chunk, progress)
    devs = resolve_devices(devices) or [home_device(batched, shared)]
    out = _Outputs(n)
    placed: dict = {}
    place_lock = threading.Lock()
    stop_flag = threading.Event()
    report_lock = threading.Lock()

    def on_device(dev):
        with place_lock:
            if dev.id not in placed:
                placed[dev.id] = jax.device_put(tuple(shared), dev)
            return placed[dev.id]

    def report(k: int) -> None:
        if progress is not None and k > 0:
            with report_lock:
                progress(int(k))

    split = processes and splits(len(bounds))
    mine = process_chunks(len(bounds)) if split else range(len(bounds))

    def one(index: int, dev) -> None:
        token = inside_chunk()  # calls made by fn are one chunk's own work: never split
        try:
            _one(index, dev)
        finally:
            _INSIDE_CHUNK.reset(token)

    def _one(index: int, dev) -> None:
        start, stop = bounds[index]
        if store is not None and store.has(index):
            arrays = store._checked(index, store.load(index), start, stop)
            out.write(arrays, start, stop)
            report(stop - start)
            return
        done = [0]

        def chunk_report(k: int) -> None:
            k = max(0, min(int(k), (stop - start) - done[0]))
            done[0] += k
            report(k)

        args = on_device(dev)
        rows = [put_rows(a, start, stop, size, dev) for a in batched]
        if with_chunk:
            chunk = Chunk(index, start, stop, size, dev, chunk_report)
            res = fn(*args, *rows, chunk=chunk)
        else:
            res = fn(*args, *rows)
        host = jax.device_get(res)
        if store is not None:
            if not isinstance(host, Mapping):
                raise TypeError("with a store, the chunk function must return a dict of arrays")
            host = {k: np.asarray(v)[: stop - start] for k, v in host.items()}
            store.save(index, host)
        out.write(host, start, stop)
        chunk_report(stop - start)

    if not split:
        _run_local(one, list(mine), devs, stop_flag)
        return out.result()
    try:
        _run_local(one, list(mine), devs, stop_flag)
    except BaseException:
        with contextlib.suppress(ProcessFailure):  # tell the others, then raise our own error
            agree(False, "the chunked computation")
        raise
    agree(True, "the chunked computation")
    _gather(out, bounds, size)
    return out.result()


def _chunk_work(fn: Callable, batched: tuple, shared: Sequence, n: int, with_chunk: bool,
                progress) -> Any:  # fmt: skip
    """A call made from inside another call's chunk that fits in one chunk (a composite
    measurement's pipeline: DeepFool, then the bisection, then the curvature solve, on that
    chunk's rows): ``fn`` on the whole arrays, on their device, in the calling thread. It is
    that chunk's own work, so the chunk loop is not entered again: no second cut, no
    progress bar, no store, no split over processes. The arrays are placed exactly as a
    chunk's are, so the result is the one :func:`map_chunks` gives on one chunk."""
    dev = home_device(batched, shared)
    args = jax.device_put(tuple(shared), dev)
    rows = [put_rows(a, 0, n, n, dev) for a in batched]
    if with_chunk:
        report = (lambda k: progress(int(k)) if k > 0 else None) if progress else _no_report
        return jax.device_get(fn(*args, *rows, chunk=Chunk(0, 0, n, n, dev, report)))
    return jax.device_get(fn(*args, *rows))


def _no_report(k: int) -> None:
    return None


def _run_local(one: Callable, items: list[int], devs: list, stop_flag) -> None:
    """``one(index, device)`` for the chunk ``items``: in order on one device, else dealt
    round-robin to the devices, one host thread each."""
    if len(devs) == 1:
        for i in items:
            one(i, devs[0])
    else:
        lanes = [items[d :: len(devs)] for d in range(len(devs))]

        def lane(dev, items):
            for i in items:
                if stop_flag.is_set():
                    return
                try:
                    one(i, dev)
                except BaseException:
                    stop_flag.set()
                    raise

        with ThreadPoolExecutor(max_workers=len(devs)) as pool:
            futures = [pool.submit(lane, d, items) for d, items in zip(devs, lanes, strict=True)]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                stop_flag.set()
                raise


def _gather(out: _Outputs, bounds: list[tuple[int, int]], size: int) -> None:
    """Fill ``out`` with every process's block of chunks (this process's block is there
    already): each sends its rows padded to the longest block, one collective per call."""
    _, p = process_layout()
    blocks = [process_chunks(len(bounds), process_index=j, process_count=p) for j in range(p)]
    rows = max(len(b) for b in blocks) * size
    me = process_chunks(len(bounds))
    start, stop = bounds[me[0]][0], bounds[me[-1]][1]
    mine = []
    for buf in out.bufs:
        block = buf[start:stop]
        pad = np.zeros((rows - (stop - start), *buf.shape[1:]), buf.dtype)
        mine.append(np.concatenate([block, pad], axis=0))
    gathered = allgather_blocks(mine, rows)
    for j, b in enumerate(blocks):
        a, z = bounds[b[0]][0], bounds[b[-1]][1]
        for buf, g in zip(out.bufs, gathered, strict=True):
            buf[a:z] = g[j, : z - a]


def run_program(
    program: Callable,
    shared: Sequence,
    batched: Sequence,
    *,
    desc: str = "",
    chunk_size: int | None,
    devices=None,
    progress=None,
):
    """A measurement's jitted ``program(*shared, *batched)`` over a dataset.

    Inside ``jit``/``vmap``/``grad`` (any traced leaf, the classifier's weights included) the
    program is simply called on the whole arrays, so entry points stay transformable.
    Otherwise it runs over chunks with :func:`map_chunks` (``progress`` as accepted by
    :func:`geomrobust.engine.track`, described by ``desc``) and the outputs are returned as
    JAX arrays.
    """
    shared, batched = tuple(shared), tuple(batched)
    if not all_concrete(shared, batched):
        return program(*shared, *batched)
    n = int(np.shape(batched[0])[0])
    with track(progress, n, desc) as report:
        out = map_chunks(
            program, batched, shared, chunk_size=chunk_size, devices=devices, progress=report
        )
    # device_put, not jnp.asarray: the aligned host buffers become the arrays without a copy on
    # the CPU (jnp.asarray copied them: one more N x D copy in the peak memory)
    return jax.tree.map(jax.device_put, out)
