"""The ``devices=`` option of every dataset-level entry point."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import numpy as np

__all__ = ["CPUDevicesWarning", "resolve_devices"]


class CPUDevicesWarning(UserWarning):
    """Several CPU devices of one host were asked for: they share the host's cores, so
    spreading chunks over them is not faster (docs/performance.md, section 3)."""


def resolve_devices(devices) -> list | None:
    """Normalise a ``devices=`` option.

    ``None`` (one device, no spreading) -> ``None``; ``"all"`` -> every local device;
    an integer ``n`` -> the first ``n`` local devices; a sequence of :class:`jax.Device`
    -> that list. A single device also returns a one-element list.

    Several CPU devices of one process (``XLA_FLAGS=--xla_force_host_platform_device_count``)
    warn with a :class:`CPUDevicesWarning` (once per place and count, Python's default
    warning filter): one XLA CPU device already uses every core, so on 2 cores a second
    device ran at 0.81-0.90x the speed of one (docs/performance.md). The results stay
    identical; the option is meant for accelerators and for testing the sharding.
    """
    out = _resolve(devices)
    if out is not None and len(out) > 1 and all(d.platform == "cpu" for d in out):
        warnings.warn(
            f"devices= asks for {len(out)} CPU devices of one host: they share its cores (one "
            "XLA CPU device already uses all of them), so this is not faster than one device "
            "(0.81-0.90x measured on 2 cores); use devices=None on the CPU (docs/performance.md)",
            CPUDevicesWarning,
            stacklevel=3,
        )
    return out


def _resolve(devices) -> list | None:
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
