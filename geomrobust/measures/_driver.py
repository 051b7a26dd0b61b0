"""Shared plumbing for dataset-level measurement entry points: jit once, run in chunks.

An entry point builds a batched function of arrays (closing over the classifier and static
settings), and :func:`run_batched` either

* calls it directly when an argument is traced (the caller is inside ``jit``/``vmap``: stay
  transformable), or
* jits it once and feeds it fixed-size chunks with :func:`geomrobust.ops.map_in_chunks`, so the
  same compiled program serves every chunk and peak memory is that of one chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust._validation import is_concrete
from geomrobust.ops import map_in_chunks
from geomrobust.parallel import map_sharded, resolve_devices

__all__ = ["cached_jit", "default_tol", "run_batched"]


def run_batched(
    fn: Callable,
    *arrays,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    devices=None,
    **static,
):
    """Apply the jitted batched ``fn(*arrays, **static)`` in chunks of the shared leading axis.

    ``static`` holds non-batched array arguments (a PRNG key): traced, not baked in, so one
    compilation serves every call. With traced ``arrays`` ``fn`` is simply called.
    ``devices`` (None, ``"all"``, an int or a list of devices): run one chunk per device at a
    time with :func:`geomrobust.parallel.map_sharded`; results are bit-for-bit identical.
    """
    if not all(is_concrete(a) for a in arrays):
        return fn(*arrays, **static)
    n = arrays[0].shape[0]
    size = n if chunk_size is None else min(int(chunk_size), n)
    if size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    devs = resolve_devices(devices)
    if devs is not None and len(devs) > 1:
        out = map_sharded(
            fn, *arrays, chunk_size=size, devices=devs, replicated=static, progress=progress
        )
        return jax.tree.map(jnp.asarray, out)
    out = map_in_chunks(partial(fn, **static), *arrays, chunk_size=size, progress=progress)
    return jax.tree.map(jnp.asarray, out)


def cached_jit(factory: Callable) -> Callable:
    """Memoise ``factory(*hashable_settings) -> fn`` and jit its result.

    Entry points build their batched program from the classifier and static settings; caching
    it (a few entries, keyed by the classifier object and the settings) means that calling an
    entry point again with the same classifier does not recompile.
    """
    return lru_cache(maxsize=8)(lambda *args: jax.jit(factory(*args)))


def default_tol(dtype, tol: float | None) -> float:
    """Relative residual tolerance of the eigensolvers: 1e-3 in float32, 1e-6 in float64."""
    if tol is not None:
        return float(tol)
    return 1e-6 if np.dtype(dtype) == np.float64 else 1e-3
