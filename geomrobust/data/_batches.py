"""Minibatches over in-memory arrays with explicit-key shuffling."""

from __future__ import annotations

import operator
from collections.abc import Iterator

import jax
import numpy as np

from geomrobust._deprecation import positional_key

__all__ = ["iterate_batches"]


@positional_key(0)
def iterate_batches(
    images,
    labels,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over ``(images[idx], labels[idx])`` minibatches of one epoch.

    The order is the permutation ``jax.random.permutation(key, N)`` when ``shuffle`` (the same
    key gives the same batches), else ``0, 1, ..., N-1``. Every example appears at most once
    per epoch; with ``drop_remainder=False`` every example appears exactly once and the last
    batch may be smaller, with ``drop_remainder=True`` all batches have ``batch_size`` rows
    and the last ``N % batch_size`` examples of the order are skipped.

    Parameters
    ----------
    images, labels
        Arrays with the same leading length ``N`` (NumPy or JAX; batches are NumPy).
    batch_size
        Rows per batch, ``>= 1``.
    key
        Keyword-only PRNG key for the shuffle (new-style ``jax.random.key`` or raw
        ``PRNGKey``); may be ``None`` only when ``shuffle=False``. Split it per epoch for
        fresh orders. (The old positional form ``iterate_batches(key, images, labels,
        batch_size)`` works for one release with a ``DeprecationWarning``.)

    Yields
    ------
    (images_batch, labels_batch)
        NumPy arrays ``(B, *images.shape[1:])`` and ``(B, *labels.shape[1:])``.

    Raises
    ------
    ValueError, TypeError
        Mismatched lengths, a non-positive batch size, or a missing key with ``shuffle``.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 1 or labels.ndim < 1:
        raise ValueError(
            f"images and labels must be arrays with a leading example axis, got shapes "
            f"{images.shape} and {labels.shape}"
        )
    n = images.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"labels must have the same length as images ({n}), got {labels.shape[0]}")
    try:
        batch_size = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}") from None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        if key is None:
            raise TypeError("key must be a PRNG key when shuffle=True, got None")
        order = np.asarray(jax.random.permutation(key, n))
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_remainder else n

    def batches():
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield images[idx], labels[idx]

    return batches()
