"""The example axis over several local devices, with results identical to one device.

Every dataset-level measurement runs a jitted program on fixed-size chunks of ``chunk_size``
examples through :func:`geomrobust.engine.map_chunks`. With ``devices=`` the unit of work
stays the chunk: chunk ``i`` goes to device ``i mod n_devices``, placed there with explicit
``jax.device_put`` (inputs, classifier weights, shared arguments) and run by the SAME
single-device program, one host thread per device. Each device therefore computes exactly
what the single-device run computes for that chunk (same shapes, same batch composition, same
padding), so results are bit-for-bit identical to ``devices=None``, whatever the number of
devices. (Splitting one chunk across devices would not be: XLA's per-row results can depend
on the batch size of a matmul or convolution.)

Consequence for users: with ``N <= chunk_size`` there is a single chunk and one device works;
pick ``chunk_size <= N / n_devices`` to keep every device busy.

Why not one SPMD program (``jax.shard_map`` over a super-chunk of ``n_devices`` chunks)?
Both give the same numbers; on simulated CPU devices a ``shard_map`` program of float32
convolutions stalled in XLA's CPU runtime, and per-device programs let host-driven drivers
(the DeepFool slot loop with its shrinking tail) run unchanged. :func:`batch_mesh` and
:func:`batch_sharding` remain for users who shard their own arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._deprecation import deprecated_alias
from ..engine import map_chunks, resolve_devices

__all__ = ["BATCH_AXIS", "batch_mesh", "batch_sharding", "map_sharded", "resolve_devices"]

BATCH_AXIS = "batch"


def batch_mesh(devices=None) -> Mesh:
    """A one-axis mesh ``("batch",)`` over ``devices`` (default: all local devices)."""
    devs = resolve_devices("all" if devices is None else devices)
    return Mesh(np.asarray(devs), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P("batch"))``: the leading (example) axis split across devices."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def map_sharded(
    fn: Callable,
    *arrays,
    replicated: dict | None = None,
    chunk_size: int,
    devices,
    progress: Callable[[int], None] | None = None,
):
    """Deprecated: use ``geomrobust.engine.map_chunks(fn, arrays, shared, chunk_size=...,
    devices=...)``, the one host chunker (docs/api.md, section 4).

    ``fn(*chunks, **replicated)`` over fixed-size chunks of ``arrays`` on ``devices``.

    A keyword front end to :func:`geomrobust.engine.map_chunks` (which see): rows are cut
    into chunks of ``chunk_size`` (the last one padded by repeating its last row), chunk
    ``i`` runs on device ``i mod n``, ``replicated`` (non-batched keyword arguments: a PRNG
    key, shared directions) is copied once to every device, and the outputs come back to the
    host trimmed to ``N`` rows, as NumPy arrays, bit-for-bit those of one device.
    """
    deprecated_alias(
        "geomrobust.parallel.map_sharded",
        "geomrobust.engine.map_chunks(fn, arrays, shared, chunk_size=..., devices=...)",
    )
    replicated = {} if replicated is None else dict(replicated)
    names = tuple(sorted(replicated))

    def call(*a):
        return fn(*a[len(names) :], **dict(zip(names, a[: len(names)], strict=True)))

    if not arrays or np.shape(arrays[0])[0] < 1:
        raise ValueError("map_sharded needs at least one example")
    return map_chunks(
        call,
        arrays,
        tuple(replicated[k] for k in names),
        chunk_size=chunk_size,
        devices=devices,
        progress=progress,
    )
