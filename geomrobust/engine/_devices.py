"""The ``devices=`` option of every dataset-level entry point."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

__all__ = ["resolve_devices"]


def resolve_devices(devices) -> list | None:
    """Normalise a ``devices=`` option.

    ``None`` (one device, no spreading) -> ``None``; ``"all"`` -> every local device;
    an integer ``n`` -> the first ``n`` local devices; a sequence of :class:`jax.Device`
    -> that list. A single device also returns a one-element list.
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
    if isinstance(devices, jax.Device):
        return [devices]
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
