"""Batching over examples in fixed-size chunks.

Two levels, for the two places where batching happens:

* :func:`chunked_vmap` is a transformable building block: ``vmap`` over chunks of the leading
  axis inside one traced program (``lax.map`` with ``batch_size``), so peak memory is that of
  one chunk, not of ``N`` examples.
* :func:`map_in_chunks` (deprecated) was the host-side driver of dataset-level measurements;
  there is now one host chunker, :func:`geomrobust.engine.map_chunks` (docs/api.md, section
  4), which it calls.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._deprecation import deprecated_alias
from ..engine import CHUNK_SIZE, map_chunks

_POSITIONAL = object()  # no positional chunk_size given (the old form, deprecated)

__all__ = ["chunked_vmap", "map_in_chunks", "pad_to_multiple"]


def chunked_vmap(
    fn: Callable, _chunk_size=_POSITIONAL, /, *, chunk_size: int | None = CHUNK_SIZE
) -> Callable:
    """``vmap(fn)`` over the leading axis of every argument, ``chunk_size`` examples at a time.

    Parameters
    ----------
    fn : the per-example function.
    chunk_size : examples per ``lax.map`` batch (default :data:`geomrobust.engine.CHUNK_SIZE`,
        docs/api.md); None is a plain ``vmap``. A positional ``chunk_size`` (the old form)
        works for one release with a ``DeprecationWarning``.

    Returns
    -------
    The mapped function; its results are identical to ``vmap(fn)``'s.
    """
    if _chunk_size is not _POSITIONAL:
        deprecated_alias("a positional chunk_size", "chunked_vmap(fn, chunk_size=...)")
        chunk_size = _chunk_size
    if chunk_size is None:
        return jax.vmap(fn)
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")

    def mapped(*args):
        return jax.lax.map(lambda a: fn(*a), args, batch_size=int(chunk_size))

    return mapped


def pad_to_multiple(x, size: int):
    """Pad the leading axis of ``x`` up to ``size`` by repeating the last row.

    Repeating a real row (rather than zeros) keeps padded entries finite for any classifier.
    """
    n = x.shape[0]
    if n == size:
        return x
    if n == 0:
        raise ValueError("cannot pad an empty chunk")
    reps = jnp.repeat(x[-1:], size - n, axis=0) if isinstance(x, jax.Array) else None
    if reps is None:
        return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)], axis=0)
    return jnp.concatenate([x, reps], axis=0)


def map_in_chunks(
    fn: Callable,
    *arrays,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
):
    """Deprecated: use ``geomrobust.engine.map_chunks(fn, arrays, chunk_size=...)``.

    Apply a (jitted) batched ``fn`` to ``arrays`` in chunks of exactly ``chunk_size``.

    Every call sees the same shapes (the last chunk is padded by repeating its last row,
    then trimmed), so a jitted ``fn`` compiles once. Outputs (any pytree of arrays with a
    leading batch axis) are brought to the host and joined as NumPy arrays; the device holds
    one chunk at a time. The chunking is :func:`geomrobust.engine.map_chunks` on one device.

    Parameters
    ----------
    fn : callable taking ``len(arrays)`` arrays with leading axis ``chunk_size``.
    arrays : arrays sharing the leading axis ``N``.
    chunk_size : examples per call.
    progress : optional callback called with the number of examples done after each chunk.
    """
    deprecated_alias(
        "geomrobust.ops.map_in_chunks", "geomrobust.engine.map_chunks(fn, arrays, chunk_size=...)"
    )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise TypeError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not arrays or np.ndim(arrays[0]) == 0 or np.shape(arrays[0])[0] < 1:
        raise ValueError("map_in_chunks needs at least one example")
    return map_chunks(fn, arrays, chunk_size=chunk_size, progress=progress)
