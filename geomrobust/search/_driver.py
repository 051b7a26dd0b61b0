"""Continuous batching for DeepFool over a dataset.

``vmap`` (or a batched ``while_loop``) over examples runs every example for as many steps as
the slowest one. Here a fixed working set of ``B`` slots runs under ONE ``lax.while_loop``:
each loop iteration costs one batched forward + VJP over the ``B`` slots; when a slot's example
finishes, its result is scattered into the output buffers and the next unprocessed example is
loaded into the slot, its clean evaluation sharing the same forward pass as the other slots'
steps. The total cost is about ``(sum of iterations + N) / B`` batched forward+VJPs instead
of ``max iterations × N / B``.

Every example follows exactly the arithmetic of :func:`geomrobust.search.deepfool` (the same
``evaluate`` / ``init_decide`` / ``propose`` / ``step_decide`` functions), so results agree with
the plain driver up to the batch composition of the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._deepfool import (
    MarginResult,
    _as_bounds,
    _select_classes,
    deepfool_result,
    evaluate,
    init_decide,
    propose,
    step_decide,
    validate,
)
from ._norms import as_norm, dual_exponent

__all__ = ["deepfool_dataset"]


def _rows(mask: Array, nd: int) -> Array:
    return mask.reshape(mask.shape + (1,) * (nd - 1))


@partial(
    jax.jit,
    static_argnames=("logits_fn", "p", "has_y", "candidates", "slots", "has_bounds"),
)
def _run(
    logits_fn,
    X,
    Y,
    n_valid,
    overshoot,
    max_iter,
    subspace,
    lo,
    hi,
    *,
    p,
    has_y,
    candidates,
    slots,
    has_bounds,
):
    m = X.shape[0]
    dtype = X.dtype
    q = dual_exponent(p)
    bounds = (lo, hi) if has_bounds else None
    overshoot = jnp.asarray(overshoot, dtype)
    B = slots

    def select_fresh(logits, ids):
        if has_y:
            y = Y[jnp.clip(ids, 0, m - 1)]
        else:
            y = jnp.argmax(logits, -1).astype(jnp.int32)
        return y, _select_classes(logits, y, candidates)

    # initial slots: the first B examples (or empty, -1)
    ids = jnp.arange(B, dtype=jnp.int32)
    ids = jnp.where(ids < n_valid, ids, -1)
    x0 = X[jnp.clip(ids, 0, m - 1)]
    logits, y, classes, grads = evaluate(logits_fn, x0, lambda lg: select_fresh(lg, ids))
    state = init_decide(logits, y, classes, grads, x0, has_y)

    out = MarginResult(
        perturbation=jnp.zeros_like(X),
        margin=jnp.full((m,), jnp.inf, dtype),
        converged=jnp.zeros((m,), bool),
        adv_label=jnp.full((m,), -1, jnp.int32),
        iterations=jnp.zeros((m,), jnp.int32),
    )
    nxt = jnp.minimum(jnp.asarray(B, jnp.int32), n_valid)

    def cond(c):
        ids = c[1]
        return jnp.any(ids >= 0)

    def body(c):
        state, ids, nxt, out = c
        # 1. write back the finished slots and refill them with the next examples
        finished = (ids >= 0) & (state.done | (state.iterations >= max_iter))
        res = deepfool_result(state, p)
        where = jnp.where(finished, ids, m)  # index m is dropped
        out = MarginResult(
            *(o.at[where].set(r, mode="drop") for o, r in zip(out, res, strict=True))
        )
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
        # 2. one evaluation: clean points for fresh slots, DeepFool steps for running ones
        active = ~fresh & ~state.done & (state.iterations < max_iter)
        r, point, info = propose(state, q=q, overshoot=overshoot, subspace=subspace, bounds=bounds)
        point = jnp.where(_rows(fresh, X.ndim), x_slot, point)

        def select(logits):
            y_f, c_f = select_fresh(logits, ids)
            return jnp.where(fresh, y_f, state.y), jnp.where(fresh[:, None], c_f, state.classes)

        logits, y, classes, grads = evaluate(logits_fn, point, select)
        st_fresh = init_decide(logits, y, classes, grads, x_slot, has_y)
        st_step = step_decide(state, r, point, logits, grads, info, active)
        state = jax.tree.map(lambda a, b: jnp.where(_rows(fresh, a.ndim), a, b), st_fresh, st_step)
        return state, ids, nxt, out

    _, _, _, out = jax.lax.while_loop(cond, body, (state, ids, nxt, out))
    return out


def deepfool_dataset(
    logits_fn: Callable[[Array], Array],
    x,
    y=None,
    *,
    norm=2,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int | None = None,
    subspace=None,
    bounds: tuple | None = None,
    slots: int = 32,
    chunk_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> MarginResult:
    """DeepFool over a dataset with continuous batching (see the module docstring).

    Same method, settings and result as :func:`geomrobust.search.deepfool` (read its
    docstring for the definition, the overshoot and the box); the difference is cost. The
    dataset is processed ``chunk_size`` examples at a time (the last chunk padded, never
    computed), each chunk by one jitted ``while_loop`` over ``slots`` working slots, so one
    compilation serves every chunk, and ``overshoot``, ``max_iter``, ``bounds`` values and the
    ``subspace`` matrix are traced: changing them does not recompile (``subspace_margins``
    reuses one compilation for every DCT band).

    Parameters
    ----------
    logits_fn : batched classifier (hashable; the same object reuses the compilation).
    x : ``(N, *s)``; y : ``(N,)`` labels or None (predicted labels).
    slots : working-set size ``B`` (the batch of each forward + VJP); smaller ``B`` wastes
        fewer evaluations at the tail, larger ``B`` uses the hardware better.
    chunk_size : examples per jitted call (bounds memory for the output buffers).
    progress : optional callback with the number of examples finished after each chunk.

    Returns
    -------
    MarginResult with NumPy-convertible JAX arrays of the input dtype, rows in input order.
    """
    x = jnp.asarray(x)
    if y is not None:
        y = jnp.asarray(y)
    validate(logits_fn, x, y, norm, overshoot, max_iter, candidates, subspace, bounds)
    p = as_norm(norm)
    if not isinstance(slots, int | np.integer) or slots < 1:
        raise ValueError(f"slots must be a positive integer, got {slots!r}")
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n = x.shape[0]
    m = min(chunk_size, n)
    slots = min(slots, m)
    dtype = x.dtype
    b = _as_bounds(bounds, dtype)
    lo, hi = b if b is not None else (jnp.zeros((), dtype), jnp.zeros((), dtype))
    sub = None if subspace is None else jnp.asarray(subspace, dtype)
    yy = jnp.zeros((n,), jnp.int32) if y is None else y.astype(jnp.int32)
    outs = []
    for start in range(0, n, m):
        stop = min(start + m, n)
        xc, yc = x[start:stop], yy[start:stop]
        if stop - start < m:
            pad = m - (stop - start)
            xc = jnp.concatenate([xc, jnp.repeat(xc[-1:], pad, 0)])
            yc = jnp.concatenate([yc, jnp.repeat(yc[-1:], pad, 0)])
        res = _run(
            logits_fn,
            xc,
            yc,
            jnp.asarray(stop - start, jnp.int32),
            overshoot,
            jnp.asarray(max_iter, jnp.int32),
            sub,
            lo,
            hi,
            p=p,
            has_y=y is not None,
            candidates=candidates,
            slots=slots,
            has_bounds=bounds is not None,
        )
        outs.append(jax.tree.map(lambda a, k=stop - start: a[:k], res))
        if progress is not None:
            progress(stop - start)
    if len(outs) == 1:
        return outs[0]
    return MarginResult(*(jnp.concatenate(parts) for parts in zip(*outs, strict=True)))
