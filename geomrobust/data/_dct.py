"""Orthonormal 2-D DCT-II transforms of images and the frequency-domain edits built on them.

The 1-D orthonormal DCT-II matrix ``C`` (``n x n``) has rows
``C[k, i] = a_k cos(pi (2 i + 1) k / (2 n))`` with ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``;
it equals ``scipy.fft.dct(np.eye(n), norm="ortho", axis=0)``. The 2-D DCT of an ``H x W``
image ``X`` is ``C_H X C_Wᵀ`` and its inverse ``C_Hᵀ Y C_W``. Images are NHWC (or HWC / HW);
the transform acts on the two spatial axes and leaves channels alone.

``dct_flip`` is the "flipped" data of Ortiz-Jimenez et al., "Hold me tight! Influence of
discriminative features on deep network boundaries", NeurIPS 2020: ``IDCT(flip(DCT(x)))``,
which moves low-frequency content to high frequencies and back.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["dct2", "dct_flip", "dct_matrix", "high_pass", "idct2", "low_pass"]


def dct_matrix(n: int, dtype=np.float64) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(n, n)``: row ``k`` is the ``k``-th cosine atom."""
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    i = np.arange(n)
    k = i[:, None]
    c = np.cos(np.pi * (2 * i[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c.astype(dtype)


def _spatial_axes(x) -> tuple[int, int]:
    if x.ndim == 2:
        return 0, 1
    if x.ndim in (3, 4):  # HWC or NHWC
        return x.ndim - 3, x.ndim - 2
    raise ValueError(f"expected an image HW, HWC or a batch NHWC, got shape {tuple(x.shape)}")


def _apply(x, left: bool):
    ah, aw = _spatial_axes(x)
    h, w = x.shape[ah], x.shape[aw]
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    ch = jnp.asarray(dct_matrix(h), dtype)
    cw = jnp.asarray(dct_matrix(w), dtype)
    if not left:  # inverse: transpose of an orthonormal matrix
        ch, cw = ch.T, cw.T
    x = jnp.asarray(x, dtype)
    x = jnp.moveaxis(jnp.tensordot(ch, x, axes=(1, ah)), 0, ah)
    x = jnp.moveaxis(jnp.tensordot(cw, x, axes=(1, aw)), 0, aw)
    return x


def dct2(x):
    """Orthonormal 2-D DCT-II over the spatial axes of ``x`` (HW, HWC or NHWC)."""
    return _apply(x, left=True)


def idct2(x):
    """Inverse of :func:`dct2` (the orthonormal DCT-III)."""
    return _apply(x, left=False)


def dct_flip(x):
    """``IDCT(flip(DCT(x)))``: reverse both frequency axes (Hold me tight!, section 4)."""
    ah, aw = _spatial_axes(x)
    return idct2(jnp.flip(dct2(x), axis=(ah, aw)))


def _frequency_mask(x, cutoff: int, keep_low: bool):
    ah, aw = _spatial_axes(x)
    h, w = x.shape[ah], x.shape[aw]
    if not 0 <= cutoff <= max(h, w):
        raise ValueError(f"cutoff must lie in [0, {max(h, w)}], got {cutoff}")
    low = (np.arange(h)[:, None] < cutoff) & (np.arange(w)[None, :] < cutoff)
    mask = low if keep_low else ~low
    shape = [1] * x.ndim
    shape[ah], shape[aw] = h, w
    return jnp.asarray(mask.reshape(shape))


def low_pass(x, cutoff: int):
    """Keep the DCT coefficients with both frequency indices ``< cutoff`` (a square band)."""
    return idct2(jnp.where(_frequency_mask(x, cutoff, True), dct2(x), 0))


def high_pass(x, cutoff: int):
    """Remove the square low-frequency band kept by :func:`low_pass`; ``low + high = x``."""
    return idct2(jnp.where(_frequency_mask(x, cutoff, False), dct2(x), 0))
