"""Antialiased resizing of NHWC image batches that keeps values in the input range."""

from __future__ import annotations

import operator
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.engine import CHUNK_SIZE

__all__ = ["as_size", "resize_images"]


def as_size(resize, name: str = "resize") -> tuple[int, int]:
    """Normalize ``resize`` (an int ``s`` or a pair ``(H, W)``) to ``(H, W)`` of positive ints."""
    if isinstance(resize, (tuple, list)):
        if len(resize) != 2:
            raise ValueError(f"{name} must be an int or a pair (H, W), got {resize!r}")
        items = tuple(resize)
    else:
        items = (resize, resize)
    try:
        size = tuple(operator.index(s) for s in items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {resize!r}") from None
    if min(size) < 1:
        raise ValueError(f"{name} must be positive, got {resize!r}")
    return size  # type: ignore[return-value]


def resize_images(images, size, *, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """Resize a batch of NHWC images to ``size = (H', W')`` (or an int for a square).

    Bilinear interpolation with antialiasing when downsampling (``jax.image.resize`` with
    ``method="linear"``: a triangle kernel, widened by the scale factor when shrinking).
    The kernel weights are non-negative and sum to one, so every output pixel is a convex
    combination of input pixels and ``[0, 1]`` images stay in ``[0, 1]``; the result is
    clipped to the input's range to remove rounding overshoot.

    Parameters
    ----------
    images
        ``(N, H, W, C)`` floating array (NumPy or JAX).
    size
        ``int`` or ``(H', W')``.
    chunk_size
        Images resized per call, so memory stays bounded for large ``N``.

    Returns
    -------
    np.ndarray
        ``(N, H', W', C)`` in the input's floating dtype.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be NHWC (4-D), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be a floating-point array, got dtype {images.dtype}")
    h, w = as_size(size, "size")
    n, _, _, c = images.shape
    out = np.empty((n, h, w, c), images.dtype)
    if n == 0:
        return out
    lo, hi = images.min(), images.max()
    for start in range(0, n, chunk_size):
        out[start : start + chunk_size] = np.asarray(
            _resize(images[start : start + chunk_size], lo, hi, size=(h, w))
        )
    return out


@partial(jax.jit, static_argnames="size")
def _resize(batch, lo, hi, *, size):
    """Resize ``batch`` to ``size`` and clip to ``[lo, hi]``; compiled once per shape and size
    (the range is an argument), so loading another data set of the same shape reuses it."""
    h, w = size
    y = jax.image.resize(
        batch, (batch.shape[0], h, w, batch.shape[3]), method="linear", antialias=True
    )
    return jnp.clip(y, lo, hi)
