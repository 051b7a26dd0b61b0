"""One driver for every iterative search: a host loop of jitted steps with continuous
batching (on the CPU), or one ``lax.while_loop`` (under ``jit``/``vmap``, on accelerators).

A search is described by a :class:`Method`, four pure functions of the kernel modules:

* ``init(clf, settings, batch, static) -> state`` (``batch``: the per-example arrays),
* ``step(clf, settings, state, static) -> (state, info)``,
* ``done(state, static) -> (N,) bool``: the example will not change any more,
* ``result(clf, settings, state, static) -> pytree of (N, ...)`` arrays,

with ``settings`` a pytree of traced values (step sizes, the box, ...) and ``static`` a
hashable tuple of the structural settings (norm, step budget). Every kernel treats the rows
of its batch independently and leaves a done row unchanged, so the two forms below compute
the same per-example arithmetic.

**"device"**: :func:`while_loop_program`, ``init``, then ``step`` under one
``lax.while_loop`` until every row is done, then ``result``: transformable, one program
per chunk.

**"host"**: on XLA's CPU backend the same model pass costs 1.6-3.5x more inside a
``while_loop`` body than as a top-level jitted program (docs/performance.md), so
:func:`drive` runs each ``step`` as one jitted call and tests ``done`` on the host. The chunk
is worked on by ``slots`` rows at a time (continuous batching, as the DeepFool driver
:mod:`geomrobust.search._driver`): a finished row's result is read back and its slot is
given the next example of the chunk (its ``init`` shares one call with the other fresh
slots); once the queue is empty and at most a quarter of the slots are busy, the busy rows
are compacted into a quarter as many slots (``B, B/4, B/16, ...``), so the examples that
need many steps do not keep ``B`` rows busy. Each program is a module-level ``jax.jit``
with the classifier as a pytree argument (its weights traced): it compiles once per
architecture, shapes and ``static``, and a second model of the same architecture
compiles nothing. No state is kept between calls beyond JAX's own jit cache.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import all_concrete
from ..engine import map_chunks, track

__all__ = [
    "LOOPS",
    "Method",
    "drive",
    "loop_form",
    "resolve_loop",
    "run_while",
    "while_loop_program",
]

LOOPS = ("auto", "host", "device")


class Method(NamedTuple):
    """The kernel functions of one iterative search (module-level functions: hashable, so a
    :class:`Method` is a static argument of the driver's programs)."""

    name: str
    init: Callable
    step: Callable
    done: Callable
    result: Callable


def resolve_loop(loop: str) -> str:
    """``"auto"`` -> ``"host"`` on the CPU backend, ``"device"`` elsewhere (docs/performance.md:
    XLA's CPU backend runs ``while_loop`` bodies markedly slower than top-level programs)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be 'auto', 'host' or 'device', got {loop!r}")
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "device"
    return loop


def loop_form(loop: str, *trees) -> str:
    """The form a call runs in: ``"device"`` when any leaf of ``trees`` is traced (inside
    ``jit``/``vmap``/``grad``), else :func:`resolve_loop` ``(loop)``."""
    form = resolve_loop(loop)
    return form if all_concrete(*trees) else "device"


def _rows(mask, nd: int):
    return mask.reshape(mask.shape + (1,) * (nd - 1))


def run_while(method: Method, clf, settings, batch, static):
    """The device form, unjitted: ``init``, ``step`` under ``lax.while_loop``, ``result``."""
    state = method.init(clf, settings, batch, static)

    def cond(s):
        return jnp.any(~method.done(s, static))

    def body(s):
        return method.step(clf, settings, s, static)[0]

    return method.result(clf, settings, jax.lax.while_loop(cond, body, state), static)


@partial(jax.jit, static_argnames=("method", "static"))
def while_loop_program(clf, settings, *batch, method: Method, static):
    """The device form on one chunk: one compilation per method, architecture, shapes and
    ``static``."""
    return run_while(method, clf, settings, batch, static)


@partial(jax.jit, static_argnames=("method", "static", "slots"))
def _start(clf, settings, batch, n_valid, *, method, static, slots):
    """The first ``slots`` examples of the chunk (``-1`` where ``n_valid < slots``), set up."""
    ids = jnp.arange(slots, dtype=jnp.int32)
    ids = jnp.where(ids < n_valid, ids, -1)
    rows = jax.tree.map(lambda a: a[jnp.clip(ids, 0, a.shape[0] - 1)], batch)
    return method.init(clf, settings, rows, static), ids


@partial(jax.jit, static_argnames=("method", "static"))
def _step(clf, settings, state, *, method, static):
    """One step of every slot; ``-> (state, done)``."""
    state, _ = method.step(clf, settings, state, static)
    return state, method.done(state, static)


@partial(jax.jit, static_argnames=("method", "static"))
def _result(clf, settings, state, *, method, static):
    return method.result(clf, settings, state, static)


@partial(jax.jit, static_argnames=("method", "static"))
def _refill(clf, settings, state, batch, ids, load, *, method, static):
    """Slots where ``load``: the examples ``ids`` of the chunk, freshly set up (one ``init``
    call for all slots, its rows kept where ``load``); other slots unchanged."""
    rows = jax.tree.map(lambda a: a[jnp.clip(ids, 0, a.shape[0] - 1)], batch)
    fresh = method.init(clf, settings, rows, static)
    new = jax.tree.map(lambda a, b: jnp.where(_rows(load, a.ndim), a, b), fresh, state)
    return new, method.done(new, static)


@jax.jit
def _take(state, rows):
    """The slot state compacted to the slots ``rows``."""
    return jax.tree.map(lambda a: a[rows] if a.ndim else a, state)


MIN_SLOTS = 4
"""The smallest working set the shrinking tail compacts to. Each size of the ladder is one
more set of programs to compile (step, result, the compactions), while a step on fewer than 4
rows costs about what it costs on 4 (the per-call overhead and the weights dominate): a chunk
of fewer than ``4 * MIN_SLOTS`` slots therefore never shrinks, and one compiles one size."""


def _tail_sizes(b: int) -> list[int]:
    """The working-set sizes a chunk of ``b`` slots can shrink to: ``b, b/4, b/16, ...``
    down to :data:`MIN_SLOTS`."""
    sizes = [b]
    while sizes[-1] // 4 >= MIN_SLOTS:
        sizes.append(sizes[-1] // 4)
    return sizes


def _ladder(n_active: int, b: int) -> int:
    """The next working-set size for ``n_active`` busy rows: a quarter of ``b`` each time
    while that is at least :data:`MIN_SLOTS` (few shapes to compile); also DeepFool's
    driver's rule."""
    while b // 4 >= MIN_SLOTS and n_active <= b // 4:
        b //= 4
    return b


def _tail_programs(sizes: list[int], kinds: tuple[str, ...], ran: set) -> list[tuple]:
    """The programs of the tail ``sizes`` a chunk did not run (``ran``): every compaction
    ``("take", from, to)`` (the compaction may skip sizes: every pair), then
    ``(kind, size)`` for each of ``kinds`` and size."""
    takes = [("take", a, c) for i, a in enumerate(sizes) for c in sizes[i + 1 :]]
    return [p for p in takes + [(kind, n) for n in sizes for kind in kinds] if p not in ran]


def _run_tail_programs(state0, b: int, device, missing: list[tuple], run) -> None:
    """Run the programs ``missing`` (:func:`_tail_programs`) on copies of the first slot of
    ``state0`` (``b`` slots), discarding the results: the compactions here, the others as
    ``run(kind, n, state)`` with ``state`` of ``n`` slots."""
    at = {b: state0}

    def state_at(n):  # n slots, copies of slot 0 (the take (b, n) is one of the programs)
        if n not in at:
            at[n] = _take(state0, jax.device_put(np.zeros(n, np.int32), device))
        return at[n]

    for kind, *n in missing:
        if kind == "take":
            _take(state_at(n[0]), jax.device_put(np.zeros(n[1], np.int32), device))
        else:
            run(kind, n[0], state_at(n[0]))


def _compile_rest(clf, settings, state0, b, device, ran, *, method, static):
    """Run once, on copies of the chunk's first slot, every program of the tail sizes
    ``_tail_sizes(b)`` that this chunk did not run (``ran``: the ``("step", size)``,
    ``("result", size)`` and ``("take", from, to)`` it did), discarding the results.

    Which sizes a chunk reaches depends on its data, so without this a second model of the
    same architecture, or a later chunk, would compile a program the first did not need (a
    compile in the middle of a measured run). Every chunk thus runs the same set of programs;
    the extra work is the steps of sizes the chunk skipped (mostly the small tail ones), and
    nothing is compiled that JAX's cache already holds, so no state is kept here."""

    def run(kind, n, state):
        program = _step if kind == "step" else _result
        program(clf, settings, state, method=method, static=static)

    missing = _tail_programs(_tail_sizes(b), ("step", "result"), ran)
    _run_tail_programs(state0, b, device, missing, run)


def _run_chunk(clf, settings, *batch, chunk, method, static, slots):
    """The host form on one chunk (``batch`` padded to ``chunk.size`` rows on
    ``chunk.device``); returns the chunk's result pytree as NumPy arrays."""
    m = chunk.size
    n_valid = chunk.stop - chunk.start
    b = min(slots, m)
    state, ids = _start(clf, settings, batch, np.int32(n_valid), method=method, static=static,
                        slots=b)  # fmt: skip
    ids = np.asarray(jax.device_get(ids))
    state0, ran = state, set()
    nxt = min(b, n_valid)
    done = np.asarray(jax.device_get(method_done(state, method, static)))
    bufs = None
    while True:
        finished = (ids >= 0) & done
        busy = int(np.sum((ids >= 0) & ~done))
        queue = n_valid - nxt
        free = int(np.sum(ids < 0)) + int(finished.sum())
        retire = finished.any() and (busy == 0 or (queue > 0 and 4 * free >= b) or queue == 0)
        if retire:  # read the finished rows back, free their slots
            res = jax.device_get(_result(clf, settings, state, method=method, static=static))
            ran.add(("result", b))
            leaves, treedef = jax.tree.flatten(res)
            if bufs is None:
                bufs = [np.zeros((m, *np.shape(v)[1:]), np.asarray(v).dtype) for v in leaves]
            for buf, v in zip(bufs, leaves, strict=True):
                buf[ids[finished]] = np.asarray(v)[finished]
            chunk.report(int(finished.sum()))
            ids = np.where(finished, -1, ids)
            if busy == 0 and queue == 0:
                break
            if queue > 0:  # load the next examples into the free slots
                freed = ids < 0
                rank = np.cumsum(freed) - 1
                load = freed & (rank < queue)
                ids = np.where(load, nxt + rank, ids).astype(np.int32)
                nxt += int(load.sum())
                state, done_d = _refill(clf, settings, state, batch,
                                        jax.device_put(ids, chunk.device),
                                        jax.device_put(load, chunk.device), method=method,
                                        static=static)  # fmt: skip
                done = np.asarray(jax.device_get(done_d))
                continue
            if 4 * busy <= b and b // 4 >= MIN_SLOTS:  # shrinking tail: compact the busy rows
                active = np.flatnonzero((ids >= 0) & ~done)
                b_from, b = b, _ladder(active.size, b)
                take = np.concatenate([active, np.full(b - active.size, active[0])])
                state = _take(state, jax.device_put(take.astype(np.int32), chunk.device))
                ran.add(("take", b_from, b))
                ids = np.where(np.arange(b) < active.size, ids[take], -1).astype(np.int32)
                done = done[take] | (ids < 0)
                continue
        state, done_d = _step(clf, settings, state, method=method, static=static)
        ran.add(("step", b))
        done = np.asarray(jax.device_get(done_d))
    _compile_rest(clf, settings, state0, min(slots, m), chunk.device, ran, method=method,
                  static=static)  # fmt: skip
    return jax.tree.unflatten(treedef, bufs)


@partial(jax.jit, static_argnames=("method", "static"))
def _done(state, *, method, static):
    return method.done(state, static)


def method_done(state, method, static):
    return _done(state, method=method, static=static)


def drive(
    method: Method,
    clf,
    settings,
    batch: tuple,
    static,
    *,
    loop: str = "auto",
    slots: int | None = None,
    chunk_size: int | None,
    devices=None,
    progress=None,
) -> Any:
    """Run ``method`` over the per-example arrays ``batch`` (leading axis ``N``).

    Under ``jit``/``vmap``/``grad`` (any traced leaf) the device form runs inline on the
    whole batch. Otherwise the data is cut into chunks of ``chunk_size``
    (:func:`geomrobust.engine.map_chunks`, ``devices`` and ``progress`` as there), each run
    in the form ``loop`` selects (:func:`resolve_loop`): the host loop with ``slots`` working
    rows (default: the whole chunk) or one ``while_loop`` program. Returns the result pytree
    with JAX arrays of ``N`` rows.
    """
    batch = tuple(batch)
    if not all_concrete(clf, settings, batch):
        return run_while(method, clf, settings, batch, static)
    loop = resolve_loop(loop)
    n = int(np.shape(batch[0])[0])
    m = n if chunk_size is None else min(int(chunk_size), n)
    if loop == "device":
        fn = partial(while_loop_program, method=method, static=static)
        kw = {}
    else:
        b = m if slots is None else max(1, min(int(slots), m))
        fn = partial(_run_chunk, method=method, static=static, slots=b)
        kw = dict(with_chunk=True)
    with track(progress, n, method.name) as report:
        out = map_chunks(fn, batch, (clf, settings), chunk_size=m, devices=devices,
                         progress=report, **kw)  # fmt: skip
    return jax.tree.map(jnp.asarray, out)
