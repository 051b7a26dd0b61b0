"""Sharding the example axis across devices, with results identical to one device.

Every dataset-level measurement already runs a jitted function on fixed-size chunks of
``chunk_size`` examples (the last one padded, see :func:`geomrobust.ops.map_in_chunks`). On
several devices the unit of work stays the chunk: a "super-chunk" of ``n_devices`` chunks is
placed on a one-axis :class:`jax.sharding.Mesh` (axis ``"batch"``) with
``NamedSharding(mesh, P("batch"))``, and :func:`jax.shard_map` runs the SAME per-chunk program
on every device, each on one chunk. Each device therefore computes exactly what the
single-device run computes for that chunk (same shapes, same batch composition, same padding),
so results are bit-for-bit identical to ``devices=None``, whatever the number of devices.
(Splitting one chunk across devices would not be: XLA's per-row results can depend on the
batch size of a matmul or convolution.)

Consequence for users: with ``N <= chunk_size`` there is a single chunk and one device works;
pick ``chunk_size <= N / n_devices`` to keep every device busy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXIS",
    "batch_mesh",
    "batch_sharding",
    "map_on_devices",
    "map_sharded",
    "resolve_devices",
]

BATCH_AXIS = "batch"


def resolve_devices(devices) -> list | None:
    """Normalise a ``devices=`` option.

    ``None`` (the default device, no sharding) -> ``None``; ``"all"`` -> every local device;
    an integer ``n`` -> the first ``n`` local devices; a sequence of :class:`jax.Device`
    -> that list. A single device also returns a one-element list (the caller may treat it
    as unsharded).
    """
    if devices is None:
        return None
    local = jax.local_devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(
                f"devices must be None, 'all', an int or a list of devices, got {devices!r}"
            )
        return list(local)
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(local):
            raise ValueError(
                f"devices must lie in [1, {len(local)}] (the local devices: {len(local)}), "
                f"got {int(devices)}; on the CPU, simulate more with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts"
            )
        return list(local[: int(devices)])
    if isinstance(devices, Sequence) and len(devices) > 0:
        out = list(devices)
        for d in out:
            if not isinstance(d, jax.Device):
                raise TypeError(f"devices must hold jax.Device objects, got {type(d).__name__}")
        if len({d.id for d in out}) != len(out):
            raise ValueError(f"devices must be distinct, got {out}")
        return out
    raise TypeError(
        f"devices must be None, 'all', an int or a non-empty list of jax devices, got {devices!r}"
    )


def batch_mesh(devices=None) -> Mesh:
    """A one-axis mesh ``("batch",)`` over ``devices`` (default: all local devices)."""
    devs = resolve_devices("all" if devices is None else devices)
    return Mesh(np.asarray(devs), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P("batch"))``: the leading (example) axis split across devices."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


@lru_cache(maxsize=16)
def _sharded_program(fn: Callable, device_ids: tuple, n_batched: int, names: tuple):
    by_id = {d.id: d for d in jax.devices()}
    mesh = Mesh(np.asarray([by_id[i] for i in device_ids]), (BATCH_AXIS,))
    batch, rep = PartitionSpec(BATCH_AXIS), PartitionSpec()

    def call(*a):
        return fn(*a[:n_batched], **dict(zip(names, a[n_batched:], strict=True)))

    body = jax.shard_map(
        call,
        mesh=mesh,
        in_specs=(batch,) * n_batched + (rep,) * len(names),
        out_specs=batch,
        check_vma=False,
    )
    return mesh, jax.jit(body)


def map_sharded(
    fn: Callable,
    *arrays,
    chunk_size: int,
    devices,
    replicated: dict | None = None,
    progress: Callable[[int], None] | None = None,
    spmd: bool | None = None,
):
    """:func:`geomrobust.ops.map_in_chunks` with one chunk per device at a time.

    ``fn(*chunks, **replicated)`` is a batched function of arrays with leading axis
    ``chunk_size`` (jitted or not; keep the same object between calls so that the sharded
    program is reused); ``replicated`` holds non-batched keyword array arguments (a PRNG key,
    shared directions), copied to every device. Rows are cut into chunks exactly as
    ``map_in_chunks`` cuts them (the last partial chunk padded by repeating its last row;
    chunks past the end are filled the same way and dropped), ``len(devices)`` chunks run
    concurrently under :func:`jax.shard_map`, and the outputs (a pytree with leading axis
    ``chunk_size``) come back to the host trimmed to ``N`` rows, as NumPy arrays.

    Results are bit-for-bit those of ``map_in_chunks(fn, ...)`` on one device.

    On the CPU backend the chunks run instead as single-device programs, one host thread per
    device (:func:`map_on_devices`): with simulated CPU devices
    (``--xla_force_host_platform_device_count``) a ``shard_map`` program whose per-device
    computations are float32 convolutions stalled in XLA's CPU runtime (idle, never
    returning; reproduced with a LeNet's curvatures), while the threaded form runs. Results
    are the same either way. ``spmd=True`` / ``False`` forces one form (default None: the
    threaded form on the CPU, ``shard_map`` elsewhere).
    """
    devs = resolve_devices(devices)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n = arrays[0].shape[0]
    if n < 1:
        raise ValueError("map_sharded needs at least one example")
    for a in arrays[1:]:
        if a.shape[0] != n:
            raise ValueError(
                f"all arrays must share the leading axis; got {[a.shape[0] for a in arrays]}"
            )
    nd = len(devs)
    replicated = {} if replicated is None else dict(replicated)
    if not (spmd if spmd is not None else devs[0].platform != "cpu"):
        return _map_threaded(fn, arrays, chunk_size, devs, replicated, progress)
    names = tuple(sorted(replicated))
    mesh, program = _sharded_program(fn, tuple(d.id for d in devs), len(arrays), names)
    sharding = batch_sharding(mesh)
    rep_sharding = NamedSharding(mesh, PartitionSpec())
    rep = [jax.device_put(replicated[k], rep_sharding) for k in names]
    span = nd * chunk_size
    outs = []
    for start in range(0, n, span):
        stop = min(start + span, n)
        parts = []
        for a in arrays:
            block = np.asarray(a[start:stop])
            if stop - start < span:  # pad exactly like map_in_chunks: repeat the last row
                block = np.concatenate(
                    [block, np.repeat(block[-1:], span - (stop - start), axis=0)], axis=0
                )
            parts.append(jax.device_put(block, sharding))
        out = program(*parts, *rep)
        outs.append(jax.tree.map(lambda o, m=stop - start: np.asarray(o)[:m], out))
        if progress is not None:
            progress(stop - start)
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outs)


def _map_threaded(fn, arrays, chunk_size, devs, replicated, progress):
    """``map_sharded`` as per-device single-device programs (see its docstring)."""
    n = arrays[0].shape[0]

    def one(start):
        stop = min(start + chunk_size, n)
        dev = jax.config.jax_default_device
        blocks = []
        for a in arrays:
            block = np.asarray(a[start:stop])
            if stop - start < chunk_size:  # pad exactly like map_in_chunks
                pad = np.repeat(block[-1:], chunk_size - (stop - start), axis=0)
                block = np.concatenate([block, pad], axis=0)
            blocks.append(jax.device_put(block, dev))
        rep = {k: jax.device_put(v, dev) for k, v in replicated.items()}
        out = jax.tree.map(lambda o: np.asarray(o)[: stop - start], fn(*blocks, **rep))
        if progress is not None:
            progress(stop - start)
        return out

    outs = map_on_devices(one, range(0, n, chunk_size), devs)
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outs)


def map_on_devices(fn: Callable, items, devices) -> list:
    """``[fn(item) for item in items]`` with item ``i`` computed on device ``i mod n``.

    For host-driven per-chunk work that cannot be one SPMD program (the DeepFool driver's
    shrinking tail: each chunk decides its own working-set sizes on the host). Each device has
    a host thread that runs its items in order inside ``jax.default_device(device)``; ``fn``
    must place its inputs with :func:`jax.device_put` onto ``jax.config.jax_default_device``
    or create them inside that context. Each chunk runs the same compiled program as on one
    device, so results are bit-for-bit identical; results come back in ``items`` order.
    """
    from concurrent.futures import ThreadPoolExecutor

    devs = resolve_devices(devices)
    items = list(items)
    lanes = [items[i :: len(devs)] for i in range(len(devs))]

    def lane(dev, work):
        with jax.default_device(dev):
            return [fn(item) for item in work]

    with ThreadPoolExecutor(max_workers=len(devs)) as pool:
        done = list(pool.map(lane, devs, lanes))
    out = [None] * len(items)
    for i, res in enumerate(done):
        out[i :: len(devs)] = res
    return out
