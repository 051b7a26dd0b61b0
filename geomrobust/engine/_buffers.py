"""Host buffers that become JAX arrays without a copy.

XLA's CPU client aliases a NumPy array whose data is aligned to 64 bytes instead of copying
it (``jax.device_put`` then costs no memory; tested in ``tests/test_engine.py``). NumPy's
own allocations are aligned to 16 bytes only, so a dataset-sized result assembled on the host
and handed back as a JAX array was copied once more at the end: about one more copy of the
largest output (``N × D`` perturbations) in the peak memory of DeepFool margins.
:func:`aligned_empty` allocates the host buffers of results 64-byte aligned.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGNMENT", "aligned_empty", "aligned_zeros"]

#: bytes; XLA's CPU minimum alignment for zero-copy host buffers
ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` with its data aligned to :data:`ALIGNMENT` bytes."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` with its data aligned to :data:`ALIGNMENT` bytes."""
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out
