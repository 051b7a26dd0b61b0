"""Continuous batching for DeepFool over a dataset.

``vmap`` (or a batched ``while_loop``) over examples runs every example for as many steps as
the slowest one. Here a fixed working set of ``B`` slots runs under ONE ``lax.while_loop``:
each loop iteration costs one batched forward + VJP over the ``B`` slots; when a slot's example
finishes, its result is scattered into the output buffers and the next unprocessed example is
loaded into the slot, its clean evaluation sharing the same forward pass as the other slots'
steps. The total cost is about ``(sum of iterations + N) / B`` batched forward+VJPs instead
of ``max iterations × N / B``. At the end of the queue, the stragglers (examples that need
many steps, up to ``steps``) would keep ``B`` slots busy for a few examples: the loop then
returns to the host, which compacts the remaining examples into ``B / 4`` slots (then
``B / 16``, ...), each size compiled once, so the tail costs ``steps`` small evaluations.

Every example follows exactly the arithmetic of the transformable DeepFool loop (the same
evaluation, decision and proposal functions as ``deepfool_init`` / ``deepfool_step``), so
results agree with it up to the batch composition of the forward pass.

Three module-level programs, each compiled once per classifier architecture, shapes and static
settings (the classifier is a pytree argument, its weights traced): ``_slots_start`` (the
first slots' clean evaluation), ``_slots_step`` (one refill + evaluation; the host tests
when to stop) and ``_slots_loop`` (the same steps under one ``lax.while_loop``). A chunk's
runner (:func:`_run_chunk`) drives them; :func:`geomrobust.engine.map_chunks` deals the
chunks to devices, reports progress and assembles the results. Every chunk runs every tail
size's programs (:func:`_compile_rest` runs the ones its data did not reach on idle slots),
so all of them compile in the first chunk whatever ``N``, then come from JAX's jit cache (no
module-level state); with a box, each chunk's results are box-finalized by its runner.
The generic form of this driver, for the other iterative searches, is
:mod:`geomrobust.search._loop`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._status import STATUS_DTYPE, Status
from .._validation import all_concrete
from ..engine import CHUNK_SIZE, map_chunks, track
from ..models import as_classifier
from ..ops._norms import as_norm, dual_exponent
from ._deepfool import (
    MarginResult,
    _as_bounds,
    _box_finalize,
    _deepfool_loop,
    _evaluate,
    _init_decide,
    _propose,
    _select_classes,
    _step_decide,
    _validate,
    deepfool_result,
)
from ._loop import (
    MIN_SLOTS,
    _ladder,
    _run_tail_programs,
    _tail_programs,
    _tail_sizes,
    _take,
)

__all__ = ["deepfool", "deepfool_dataset"]

_STATIC = ("p", "has_y", "candidates", "has_bounds")


def _rows(mask: Array, nd: int) -> Array:
    return mask.reshape(mask.shape + (1,) * (nd - 1))


def _select_fresh(logits, ids, Y, *, has_y, candidates):
    """Labels and candidate classes of freshly loaded slots (example ids ``ids``)."""
    m = Y.shape[0]
    if has_y:
        y = Y[jnp.clip(ids, 0, m - 1)]
    else:
        y = jnp.argmax(logits, -1).astype(jnp.int32)
    return y, _select_classes(logits, y, candidates)


@partial(jax.jit, static_argnames=("slots", "has_y", "candidates", "with_out"))
def _slots_start(clf, X, Y, n_valid, *, slots, has_y, candidates, with_out):
    """The first carry ``(state, ids, next)``: slots ``0..B-1`` hold the first examples
    (``-1`` where ``n_valid < B``), evaluated once; ``with_out``: also the ``(m, ...)`` result
    buffers of the device loop."""
    m = X.shape[0]
    ids = jnp.arange(slots, dtype=jnp.int32)
    ids = jnp.where(ids < n_valid, ids, -1)
    x0 = X[jnp.clip(ids, 0, m - 1)]
    select = partial(_select_fresh, ids=ids, Y=Y, has_y=has_y, candidates=candidates)
    logits, y, classes, grads = _evaluate(clf, x0, select)
    state = _init_decide(logits, y, classes, grads, x0, has_y)
    nxt = jnp.minimum(jnp.asarray(slots, jnp.int32), n_valid)
    carry = (state, ids, nxt)
    if with_out:
        out = MarginResult(
            perturbation=jnp.zeros_like(X),
            margin=jnp.full((m,), jnp.inf, X.dtype),
            converged=jnp.zeros((m,), bool),
            adv_label=jnp.full((m,), -1, jnp.int32),
            iterations=jnp.zeros((m,), jnp.int32),
            status=jnp.full((m,), Status.MAX_STEPS, STATUS_DTYPE),
        )
        carry = (*carry, out)
    return carry


def _advance(clf, state, ids, nxt, X, Y, n_valid, overshoot, steps, subspace, lo, hi, *,
             p, has_y, candidates, has_bounds):  # fmt: skip
    """Hand out the finished slots (``where``: their example index, ``m`` elsewhere) and
    their results, refill the free slots with the next examples, and evaluate once."""
    m = X.shape[0]
    q = dual_exponent(p)
    bounds = (lo, hi) if has_bounds else None
    overshoot = jnp.asarray(overshoot, X.dtype)
    finished = (ids >= 0) & (state.done | (state.iterations >= steps))
    res = deepfool_result(state, p)
    where = jnp.where(finished, ids, m)
    free = finished | (ids < 0)
    rank = jnp.cumsum(free, dtype=jnp.int32) - 1
    new = nxt + rank
    load = free & (new < n_valid)
    ids = jnp.where(free, jnp.where(load, new, -1), ids)
    nxt = jnp.minimum(nxt + jnp.sum(load, dtype=jnp.int32), n_valid)
    fresh = free
    x_new = X[jnp.clip(ids, 0, m - 1)]
    x_slot = jnp.where(_rows(load, X.ndim), x_new, state.x)
    state = state._replace(x=x_slot)
    # one evaluation: clean points for fresh slots, DeepFool steps for running ones
    active = ~fresh & ~state.done & (state.iterations < steps)
    r, point, info = _propose(state, q=q, overshoot=overshoot, subspace=subspace, bounds=bounds)
    point = jnp.where(_rows(fresh, X.ndim), x_slot, point)

    def select(logits):
        y_f, c_f = _select_fresh(logits, ids, Y, has_y=has_y, candidates=candidates)
        return jnp.where(fresh, y_f, state.y), jnp.where(fresh[:, None], c_f, state.classes)

    logits, y, classes, grads = _evaluate(clf, point, select)
    st_fresh = _init_decide(logits, y, classes, grads, x_slot, has_y)
    st_step = _step_decide(state, r, point, logits, grads, info, active)
    state = jax.tree.map(lambda a, b: jnp.where(_rows(fresh, a.ndim), a, b), st_fresh, st_step)
    return (state, ids, nxt), (where, res)


@partial(jax.jit, static_argnames=_STATIC)
def _slots_step(clf, carry, X, Y, n_valid, overshoot, steps, subspace, lo, hi, **static):
    """One step of the slot loop: ``carry -> (carry, (where, results))``; the host writes the
    finished slots' results and decides when to stop."""
    return _advance(clf, *carry, X, Y, n_valid, overshoot, steps, subspace, lo, hi, **static)


@partial(jax.jit, static_argnames=_STATIC)
def _slots_loop(clf, carry, X, Y, n_valid, overshoot, steps, subspace, lo, hi, min_active,
                **static):  # fmt: skip
    """The slot loop under one ``lax.while_loop``, results written into the carry's
    ``(m, ...)`` buffers; it stops when every slot is idle, or when the queue is empty and at
    most ``min_active`` slots are busy (for the host to shrink the working set)."""

    def cond(c):
        ids, nxt = c[1], c[2]
        n_active = jnp.sum(ids >= 0)
        return (n_active > 0) & ~((nxt >= n_valid) & (n_active <= min_active))

    def body(c):
        (state, ids, nxt), (where, res) = _advance(
            clf, *c[:3], X, Y, n_valid, overshoot, steps, subspace, lo, hi, **static
        )
        out = MarginResult(  # index m is dropped
            *(o.at[where].set(r, mode="drop") for o, r in zip(c[3], res, strict=True))
        )
        return state, ids, nxt, out

    return jax.lax.while_loop(cond, body, carry)


def _tail(b: int) -> int:
    """Leave the loop when at most this many slots are busy and the queue is empty (0: the
    working set cannot shrink below :data:`MIN_SLOTS`, so run it to the end)."""
    return b // 4 if b // 4 >= MIN_SLOTS else 0


def _stage(clf, data, settings, n_valid: int, loop: str, carry, b: int, sink, dev, static,
           ran=None):  # fmt: skip
    """Run the slot loop with ``b`` slots until the queue is empty and at most ``_tail(b)``
    slots are busy (or all are idle): one ``while_loop`` ("device", results written into the
    carry's chunk buffers) or one jitted call per iteration with the test on the host
    ("host", each step's finished slots handed to ``sink(where, res)``). ``ran``: a set
    that records the working-set size whose program ran."""
    X, Y, nv = data
    if ran is not None:
        ran.add(("stage", b))
    if carry is None:
        carry = _slots_start(
            clf, X, Y, nv, slots=b, has_y=static["has_y"], candidates=static["candidates"],
            with_out=loop == "device",
        )  # fmt: skip
    if loop == "device":
        tail = jax.device_put(np.int32(_tail(b)), dev)
        return _slots_loop(clf, carry, X, Y, nv, *settings, tail, **static)
    while True:
        ids, nxt = jax.device_get((carry[1], carry[2]))
        busy = int(np.sum(ids >= 0))
        if busy == 0 or (int(nxt) >= n_valid and busy <= _tail(b)):
            return carry
        carry, (where, res) = _slots_step(clf, carry, X, Y, nv, *settings, **static)
        sink(where, res)


def _run_chunk(clf, overshoot, steps, subspace, lo, hi, X, Y, *, chunk, slots, loop,
               static):  # fmt: skip
    """DeepFool on one chunk (``X``, ``Y`` padded to ``chunk.size`` rows, on ``chunk.device``)
    with the slot loop and its shrinking tail, then, with a box, the box finalization of
    its results; returns the chunk's :class:`MarginResult` as NumPy arrays (rows past
    ``chunk.stop - chunk.start`` are padding: unset, or with a box copies of the last
    example's)."""
    dev = chunk.device
    m = chunk.size
    n_valid = chunk.stop - chunk.start
    data = (X, Y, jax.device_put(np.int32(n_valid), dev))
    settings = (overshoot, steps, subspace, lo, hi)
    bufs = MarginResult(
        perturbation=np.zeros(X.shape, X.dtype),
        margin=np.full((m,), np.inf, X.dtype),
        converged=np.zeros((m,), bool),
        adv_label=np.full((m,), -1, np.int32),
        iterations=np.zeros((m,), np.int32),
        status=np.full((m,), Status.MAX_STEPS, STATUS_DTYPE),
    )

    def sink(where, res):  # where: example index within the chunk, m where not finished
        where, res = jax.device_get((where, res))  # one transfer
        done = where < m
        if done.any():
            rows = where[done]
            for buf, r in zip(bufs, res, strict=True):
                buf[rows] = r[done]
            chunk.report(int(done.sum()))

    b, ran = slots, set()
    carry = _stage(clf, data, settings, n_valid, loop, None, b, sink, dev, static, ran)
    state0 = carry[0]  # the state at the full working-set size (for _compile_rest)
    while True:  # shrinking tail: compact the remaining examples into fewer slots
        ids = np.asarray(jax.device_get(carry[1]))
        active = np.flatnonzero(ids >= 0)
        if active.size == 0:
            break
        b_from, b = b, _ladder(active.size, b)
        take = np.concatenate([active, np.full(b - active.size, active[0])]).astype(np.int32)
        state = _take(carry[0], jax.device_put(take, dev))
        ran.add(("take", b_from, b))
        new_ids = np.where(np.arange(b) < active.size, ids[take], -1).astype(np.int32)
        carry = (state, jax.device_put(new_ids, dev), *carry[2:])
        carry = _stage(clf, data, settings, n_valid, loop, carry, b, sink, dev, static, ran)
    _compile_rest(clf, data, settings, state0, carry, slots, ran, loop, dev, static)
    if loop == "device":  # the chunk's results are in the carry's (m, ...) buffers
        bufs = MarginResult(*(np.array(a) for a in jax.device_get(carry[3])))  # writable
    if not static["has_bounds"]:
        return bufs
    # the box finalization of the chunk (see _box_finalize), here rather than in a second
    # pass over the dataset: a second pass held two (N, ...) sets of results at its end
    for buf in bufs:  # padding rows: copies of the last example, as the executor pads
        buf[n_valid:] = buf[n_valid - 1]
    fin = _finalize_program(
        clf, overshoot, lo, hi, X, Y, *(jax.device_put(a, dev) for a in bufs),
        p=static["p"], has_y=static["has_y"],
    )  # fmt: skip
    return MarginResult(*jax.device_get(fin))


def _compile_rest(clf, data, settings, state0, carry, slots, ran, loop, dev, static):
    """Run once, on idle slots holding copies of the chunk's first slot, every program of
    the tail sizes ``_tail_sizes(slots)`` that this chunk did not run (``ran``: the
    ``("stage", size)`` and ``("take", from, to)`` it did), discarding the results.

    Which sizes a chunk reaches depends on its data; without this a later chunk compiles
    the programs the first did not need, at a time when more of the ``(N, ...)`` results
    are resident, so the peak memory of a run grew with ``N``. Every chunk thus runs the
    same set of programs (their compilations happen in the first chunk, for any ``N``);
    the extra work is a step of each skipped size on idle slots, and nothing is compiled
    that JAX's cache already holds, so no state is kept here."""
    X, Y, nv = data

    def run(kind, n, state):  # one stage of n idle slots
        idle = (state, jax.device_put(np.full(n, -1, np.int32), dev), carry[2])
        if loop == "device":
            tail = jax.device_put(np.int32(_tail(n)), dev)
            _slots_loop(clf, (*idle, carry[3]), X, Y, nv, *settings, tail, **static)
        else:
            _slots_step(clf, idle, X, Y, nv, *settings, **static)

    missing = _tail_programs(_tail_sizes(slots), ("stage",), ran)
    _run_tail_programs(state0, slots, dev, missing, run)


def _quiet(k: int) -> None:
    return None


def _run_subspaces(clf, overshoot, steps, subspaces, lo, hi, X, Y, *, chunk, slots, loop,
                   static, collect):  # fmt: skip
    """DeepFool on one chunk inside each of ``subspaces`` (``None``: the whole space; each
    search box-finalized by :func:`_run_chunk`), and ``collect(results)``: the chunk's
    output (one :class:`MarginResult` of NumPy arrays per subspace, padding rows
    included)."""
    one = chunk if len(subspaces) == 1 else chunk._replace(report=_quiet)
    results = []
    for sub in subspaces:
        r = _run_chunk(clf, overshoot, steps, sub, lo, hi, X, Y, chunk=one, slots=slots,
                       loop=loop, static=static)  # fmt: skip
        results.append(r)
    return collect(results)


def _first_as_dict(results: list) -> dict:
    return results[0]._asdict()


@renamed(max_iter="steps")
def deepfool_runs(
    clf,
    x,
    y,
    subspaces: tuple,
    *,
    collect: Callable,
    norm=2,
    overshoot: float = 0.02,
    steps: int = 50,
    candidates: int | None = None,
    bounds: tuple | None = None,
    slots: int = 32,
    loop: str = "auto",
    store=None,
    desc: str = "deepfool",
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
):
    """DeepFool over a dataset inside each of ``subspaces`` (``None``: no subspace), in ONE
    pass of the engine: every chunk runs all the searches and returns
    ``collect([MarginResult per subspace])`` (NumPy arrays of the padded chunk's rows; a
    flat dict of arrays with a leading axis of examples when there is a ``store``, see
    :func:`geomrobust.engine.map_chunks`). The driver behind :func:`deepfool_dataset`,
    :func:`geomrobust.subspace_margins` and :func:`geomrobust.random_subspace_margins`;
    returns the joined ``collect`` outputs (NumPy, ``N`` rows)."""
    if not all_concrete(clf, x, y):
        raise TypeError(
            "deepfool_dataset is a dataset-level driver that jits internally (host loop and "
            "chunking); call it outside jit/vmap, or use geomrobust.search.deepfool there"
        )
    if not subspaces:
        raise ValueError("subspaces must hold at least one entry (None: the whole space)")
    # a NumPy input stays on the host and is put on the device one chunk at a time (the
    # device then holds one chunk of the inputs, not all N: measured at N = 10,000, D = 1024,
    # a whole-input device_put cost 40 MiB more peak memory on the CPU, jnp.asarray ~100 MiB)
    if not isinstance(x, np.ndarray):
        x = jnp.asarray(x)
    if y is not None:
        y = jnp.asarray(y)
    for sub in subspaces:
        x = _validate(clf, x, y, norm, overshoot, steps, candidates, sub, bounds)
    p = as_norm(norm)
    if not isinstance(slots, int | np.integer) or slots < 1:
        raise ValueError(f"slots must be a positive integer, got {slots!r}")
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if loop == "auto":
        loop = "host" if jax.default_backend() == "cpu" else "device"
    if loop not in ("host", "device"):
        raise ValueError(f"loop must be 'auto', 'host' or 'device', got {loop!r}")
    n = x.shape[0]
    m = min(chunk_size, n)
    slots = min(int(slots), m)
    dtype = jax.dtypes.canonicalize_dtype(x.dtype)  # float64 NumPy -> float32 without x64
    if x.dtype != dtype:
        x = x.astype(dtype)
    b = _as_bounds(bounds, dtype)
    lo, hi = (np.zeros((), dtype), np.zeros((), dtype)) if b is None else b
    subs = tuple(None if s is None else np.asarray(s, dtype) for s in subspaces)
    yy = np.zeros((n,), np.int32) if y is None else np.asarray(y).astype(np.int32)
    static = dict(p=p, has_y=y is not None, candidates=candidates, has_bounds=bounds is not None)
    shared = (clf, np.asarray(overshoot, dtype), np.int32(steps), subs, lo, hi)
    run = partial(_run_subspaces, slots=slots, loop=loop, static=static, collect=collect)
    with track(progress, n, desc) as report:
        return map_chunks(
            run, (x, yy), shared, chunk_size=m, devices=devices, progress=report,
            with_chunk=True, store=store,
        )  # fmt: skip


@renamed(max_iter="steps")
def deepfool_dataset(
    logits_fn: Callable[[Array], Array],
    x,
    y=None,
    *,
    norm=2,
    overshoot: float = 0.02,
    steps: int = 50,
    candidates: int | None = None,
    subspace=None,
    bounds: tuple | None = None,
    slots: int = 32,
    loop: str = "auto",
    store=None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MarginResult:
    """DeepFool over a dataset with continuous batching (see the module docstring).

    Same method, settings and result as :func:`geomrobust.search.deepfool` (read its
    docstring for the definition, the overshoot and the box; ``gr.deepfool`` on concrete
    inputs runs this driver with its defaults). The dataset is processed ``chunk_size``
    examples at a time (the last chunk padded, never computed), each chunk by ``slots``
    working slots; the classifier's weights, ``overshoot``, ``steps``, ``bounds`` values
    and the ``subspace`` matrix are traced arguments, so one compilation serves every chunk,
    every call, every model of the same architecture, and every DCT band of
    ``subspace_margins``.

    Parameters
    ----------
    logits_fn : the classifier (a function, :class:`geomrobust.Classifier`, NNX or Equinox
        module; see :func:`geomrobust.as_classifier`).
    x : ``(N, *s)``; y : ``(N,)`` labels or None (predicted labels).
    slots : working-set size ``B`` (the batch of each forward + VJP); smaller ``B`` wastes
        fewer evaluations at the tail, larger ``B`` uses the hardware better.
    chunk_size : examples per chunk (default :data:`geomrobust.engine.CHUNK_SIZE`): the
        device holds one chunk's ``(chunk_size, *s)`` working buffers at a time, so memory beyond
        the inputs and the
        outputs does not grow with ``N`` (each chunk also pays its start-up evaluation and
        shrinking tail, about 0.3 s for a LeNet on 2 CPU cores).
    loop : ``"device"``: the slot loop is one ``lax.while_loop`` per tail stage (no host
        round trip; best on accelerators); ``"host"``: one jitted call per iteration with the
        stop test on the host (on CPU, XLA runs while-loop bodies markedly slower than the
        same computation as a top-level program: 1.3-1.8x measured on a LeNet, so this is
        faster there); ``"auto"``: ``"host"`` on the CPU backend, else ``"device"``. Both
        modes run the same per-example arithmetic, but XLA compiles a loop body and a
        top-level program separately, so results can differ in the last bits, and an example
        sitting right at a stopping threshold can take a different number of steps (on the
        500-digit benchmark one example ran to ``steps`` in one mode only). Use one mode
        for results you compare bit for bit.
    progress : None, True (a progress bar counting examples as they finish) or a callable
        ``progress(n)`` called with the number of examples finished since the last call
        (after every step of the host loop).
    devices : None (one device: that of ``x`` when it is a committed JAX array, else the
        default), ``"all"``, an int or a list of devices: chunks are dealt round-robin to the
        devices (:func:`geomrobust.engine.map_chunks`), each running the single-device
        programs on its chunk, so results are bit-for-bit identical to one device; set
        ``chunk_size <= N / n_devices`` to keep every device busy.
    store : optional :class:`geomrobust.io.ChunkStore` cut with ``chunk_size``: chunks
        already there are read back (the fields of :class:`MarginResult`), the others
        computed and written as they finish, so an interrupted run resumes
        (:func:`geomrobust.engine.map_chunks`).

    Returns
    -------
    MarginResult with JAX arrays of the input dtype, rows in input order.
    """
    clf = as_classifier(logits_fn)
    out = deepfool_runs(
        clf, x, y, (subspace,), collect=_first_as_dict, norm=norm, overshoot=overshoot,
        steps=steps, candidates=candidates, bounds=bounds, slots=slots, loop=loop,
        chunk_size=chunk_size, devices=devices, progress=progress, store=store,
    )  # fmt: skip
    return MarginResult(**{f: jax.device_put(out[f]) for f in MarginResult._fields})


@partial(jax.jit, static_argnames=("p", "has_y"))
def _finalize_program(clf, overshoot, lo, hi, x, y, *res, p, has_y):
    """The box finalization of a chunk of results (one forward pass per candidate point)."""
    return _box_finalize(clf, x, y if has_y else None, MarginResult(*res), overshoot, (lo, hi), p)


@renamed(max_iter="steps")
def deepfool(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    norm=2,
    overshoot: float = 0.02,
    steps: int = 50,
    candidates: int | None = None,
    subspace: Array | None = None,
    bounds: tuple | None = None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MarginResult:
    """Minimal Lp perturbations of a batch by DeepFool.

    From ``x_0 = x`` with ``r = 0``: at the iterate ``x_i``, for the candidate classes
    ``k != y`` take ``F_k = f_k - f_y`` and ``w_k = ∇F_k(x_i)`` (projected, ``w_k ← S Sᵀ w_k``,
    when ``subspace`` is given), pick ``l = argmin_k |F_k| / ||w_k||_q`` with the dual exponent
    ``q = p / (p - 1)``, and accumulate the minimal linearized step

        r ← r + |F_l| / ||w_l||_q^q · |w_l|^(q-1) ⊙ sign(w_l)

    (``|F_l| w_l / ||w_l||²`` for ``p = 2``, ``|F_l| sign(w_l) / ||w_l||_1`` for ``p = inf``).
    The next iterate is ``x_{i+1} = clip(x + (1 + η) r)``; stop when its label differs from
    ``y``.

    **Overshoot** (the reference implementations differ): applied to the *accumulated*
    perturbation, as in the authors' PyTorch DeepFool code: the label is tested at, and the
    gradients re-linearized at, ``x + (1 + η) r``, and the returned perturbation is
    ``(1 + η) r``, so ``margin = (1 + η) ||r||_p``. On an affine classifier one step is exact:
    ``margin = (1 + η) |F(x)| / ||w||_q``. Unlike the reference code, no ``1e-4`` is added to
    ``|F_l|``. The subspace code of "Hold me tight!" linearizes at ``x + r`` instead (and
    tests at ``x + (1 + η) r``); every difference from each reference implementation, and how
    to reproduce it: docs/conventions.md.

    **Box** ``bounds = (lo, hi)``: coordinates of the iterate that sit on a face of the box
    and whose gradient component points out of it are frozen (set to 0 in every ``w_k``, an
    active set, so the step moves along the free coordinates instead of stalling against the
    box); the iterate is then clipped, and ``r`` is replaced by ``(x_{i+1} - x) / (1 + η)``
    so state and iterate agree. The overshoot then acts on the last step only, so at the end
    every converged point is re-tested, and where it crosses by less than
    ``64 eps (min(1, max |f(x)|) + max |f|)`` in logits the total perturbation is extended,
    ``r' = clip(x + (1 + η) r) - x`` (not converged if that does not cross either): every
    returned point crosses by a margin that survives rounding (another batch size, another
    precision). The returned
    perturbation is always feasible; when no feasible step flips the label the example is
    not converged.

    **Execution.** On concrete inputs (a call from Python) this runs the continuous-batching
    driver :func:`geomrobust.search.deepfool_dataset` with its defaults (fixed working slots
    refilled as examples finish; one compilation per architecture and shape, reused by every
    call and every model of the same architecture). Under ``jit``/``vmap``/``grad`` (traced
    inputs or classifier) it is one transformable ``lax.while_loop`` over the batch. Both
    follow the same per-example arithmetic; they agree up to the rounding of batched forward
    passes (a different batch composition).

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, a
        :class:`geomrobust.Classifier`, a Flax NNX module or an Equinox module (see
        :func:`geomrobust.as_classifier`); rows must not interact.
    x : ``(N, *s)`` floating. The search runs, and returns, in one dtype (the rule of every
        search, docs/conventions.md "Input checks"): float32 for float16 / bfloat16 inputs,
        otherwise the wider of ``x``'s and the logits' dtype (a float32 ``x`` with a float64
        model runs in float64). ``x`` and the classifier's weights may sit on different
        devices: the executor runs on ``x``'s (see ``devices``) and places the weights there.
    y : ``(N,)`` integer reference labels, or None for the predicted labels.
    norm : ``p`` in ``(1, inf]`` (2 and ``jnp.inf`` the usual ones).
    overshoot : ``η >= 0``.
    steps : DeepFool steps per example (formerly ``max_iter``); examples not flipped by
        then are not converged.
    candidates : ``C``: search only the ``C`` classes ``k != y`` with the largest clean
        logits (the reference code's top-``C``, where its ``num_classes = C + 1`` counts the
        label), or None for all ``K - 1``.
    subspace : ``(D, s)`` orthonormal basis (``D = prod(s)``, flattened in ``x``'s order),
        restricting the search to ``x + span(S)`` (Hold me tight!); norm 2 only.
    bounds : ``(lo, hi)`` scalars or arrays broadcastable to ``x``, or None. ``x`` must lie
        in the box: an example outside it by more than ``max(1e-6 (hi - lo),
        8 eps max(|lo|, |hi|))`` raises ``ValueError`` (naming how many; clip ``x`` or pass
        ``bounds=None``), since the search would otherwise report the distance to the box.
    chunk_size, devices, progress : the executor's options (concrete inputs only), see
        :func:`geomrobust.search.deepfool_dataset`.

    Returns
    -------
    MarginResult
        ``perturbation (N, *s)``, ``margin (N,)`` (``inf`` where not converged),
        ``converged (N,)``, ``adv_label (N,)`` (``-1`` where not converged), ``iterations``.
        An example already misclassified (``argmax f(x) != y``), or exactly ON the boundary
        (tied top logits ``max_{k != y} f_k(x) = f_y(x)``: adv_label the tied class), has
        margin 0, converged True and 0 iterations. Margins are invariant to the logits'
        scale: the step arithmetic is normalized by a power of two near ``max |∇F_k|``, so
        logits scaled by ``1e±20`` in float32 give the unscaled margins. Zero gradients
        (no reachable boundary) or non-finite logits give converged False without affecting
        the other examples. ``status`` (int8 :class:`geomrobust.Status`) says why per
        example: ``SUCCESS`` (``== converged``), ``NONFINITE``, ``MAX_STEPS`` (``steps`` ran
        out) or ``NOT_FOUND`` (zero gradients; with ``bounds``, no crossing with room).
    """
    clf = as_classifier(logits_fn)
    if all_concrete(clf, x, y, subspace, bounds, overshoot):
        return deepfool_dataset(
            clf, x, y, norm=norm, overshoot=overshoot, steps=steps,
            candidates=candidates, subspace=subspace, bounds=bounds, chunk_size=chunk_size,
            devices=devices, progress=progress,
        )  # fmt: skip
    if y is not None:
        y = jnp.asarray(y) if not hasattr(y, "dtype") else y
    x = _validate(clf, jnp.asarray(x), y, norm, overshoot, steps, candidates, subspace,
                  bounds)  # fmt: skip
    return _deepfool_loop(clf, x, y, norm, overshoot, steps, candidates, subspace, bounds)
