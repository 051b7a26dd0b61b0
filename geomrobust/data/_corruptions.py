"""Common corruptions of small images, in JAX (after Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019, with their
CIFAR-10-C severities where the corruption applies to small images).

Every corruption maps NHWC images in ``[0, 1]`` to images of the same shape and dtype in
``[0, 1]``, at severity 1 (mild) to 5 (strong). The random ones draw the noise of example ``n``
from ``fold_in(key, ids[n])`` (``ids`` default ``arange(N)``), so a corrupted data set does not
depend on how it is cut into chunks, and the same key gives the same images.

==============  =====================================================  =======================
name            definition                                             severities 1..5
==============  =====================================================  =======================
gaussian_noise  ``x + c z``, ``z ~ N(0, I)``                           c = .04 .06 .08 .09 .10
shot_noise      ``Poisson(c x) / c``                                   c = 500 250 100 75 50
impulse_noise   salt and pepper: each value set to 0 or 1 w.p. ``c``   c = .01 .02 .03 .05 .07
gaussian_blur   Gaussian filter of std ``c`` pixels (edge padding)     c = .4 .6 .7 .8 1
contrast        ``(x - m) c + m``, ``m`` the image mean                c = .75 .5 .4 .3 .15
brightness      HSV value ``v + c`` (grey: ``x + c``), clipped         c = .05 .1 .15 .2 .3
jpeg            8×8 DCT quantization with the JPEG luminance table at  q = 80 65 58 50 40
                quality ``q`` (IJG scaling), on every channel
==============  =====================================================  =======================

The JPEG corruption is "JPEG-like": it keeps JPEG's lossy step (block DCT + quantization) but
applies the luminance table to every channel of the RGB image rather than converting to YCbCr
with chroma subsampling, and does no entropy coding (lossless anyway).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._dct import dct_matrix

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "jpeg_table"]

SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "jpeg": (80, 65, 58, 50, 40),
}
CORRUPTIONS = tuple(SEVERITIES)
_RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise")

#: the JPEG standard's luminance quantization table (ITU-T T.81, annex K, table K.1)
_JPEG_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], np.float64)  # fmt: skip


def jpeg_table(quality: int) -> np.ndarray:
    """The luminance table scaled to ``quality`` in ``[1, 100]`` (the IJG formula)."""
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality!r}")
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((_JPEG_LUMA * scale + 50) / 100), 1, 255)


def _check(x, name, severity):
    if name not in SEVERITIES:
        raise ValueError(f"unknown corruption {name!r}; choose one of {CORRUPTIONS}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
        raise TypeError(f"severity must be an integer 1..5, got {severity!r}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity!r}")
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be NHWC (N, H, W, C), got shape {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"images must be floating point in [0, 1], got dtype {x.dtype}")
    if not isinstance(x, jax.core.Tracer):
        lo, hi = float(jnp.min(x)), float(jnp.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"images must lie in [0, 1] (found values in [{lo:.3g}, {hi:.3g}]): scale "
                "uint8 images by 1/255 first"
            )


def corrupt(x: Array, name: str, severity: int, *, key: Array | None = None, ids=None) -> Array:
    """Corrupt NHWC images ``x`` in ``[0, 1]`` with ``name`` at ``severity`` (1..5).

    ``key``: required by the random corruptions (``gaussian_noise``, ``shot_noise``,
    ``impulse_noise``); ``ids``: ``(N,)`` example indices for the per-example noise
    (default ``arange(N)``). Returns an array of the shape and dtype of ``x`` in ``[0, 1]``.
    """
    _check(x, name, severity)
    x = jnp.asarray(x)
    if ids is not None:
        shape, dtype = np.shape(ids), getattr(ids, "dtype", np.asarray(ids).dtype)
        if shape != (x.shape[0],) or not np.issubdtype(dtype, np.integer):
            raise ValueError(
                f"ids must be ({x.shape[0]},) integers, one example index per image, got "
                f"shape {shape} dtype {dtype}; pass ids=None for arange(N)"
            )
    if name in _RANDOM:
        if key is None:
            raise ValueError(f"corruption {name!r} is random: pass key=jax.random.key(...)")
        ids = jnp.arange(x.shape[0], dtype=jnp.int32) if ids is None else jnp.asarray(ids)
    else:
        key = jax.random.key(0) if key is None else key
        ids = jnp.zeros(x.shape[0], jnp.int32) if ids is None else jnp.asarray(ids)
    c = SEVERITIES[name][int(severity) - 1]
    table = jpeg_table(int(c)) if name == "jpeg" else np.ones((8, 8))
    return _corrupt(x, key, ids, jnp.asarray(c, x.dtype), jnp.asarray(table, x.dtype), name=name)


#: the blur's kernel radius: 4 σ for the largest σ (the kernel is an argument, not a constant)
_BLUR_RADIUS = 4


@partial(jax.jit, static_argnames="name")
def _corrupt(x, key, ids, c, table, *, name):
    """One program per corruption and shape: the severity's parameter is an argument."""
    dtype = x.dtype
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
    if name == "gaussian_noise":
        z = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], dtype))(keys)
        out = x + c * z
    elif name == "shot_noise":
        lam = jnp.clip(x, 0, 1) * c
        out = jax.vmap(lambda k, v: jax.random.poisson(k, v, v.shape))(keys, lam).astype(dtype) / c
    elif name == "impulse_noise":
        u = jax.vmap(lambda k: jax.random.uniform(k, (2, *x.shape[1:]), dtype))(keys)
        hit, salt = u[:, 0] < c, u[:, 1] < 0.5
        out = jnp.where(hit, salt.astype(dtype), x)
    elif name == "gaussian_blur":
        out = _blur(x, c)
    elif name == "contrast":
        m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        out = (x - m) * c + m
    elif name == "brightness":
        if x.shape[-1] == 3:  # HSV: same hue and saturation, value + c (rgb scales with v)
            v = jnp.max(x, axis=-1, keepdims=True)
            v2 = jnp.clip(v + c, 0, 1)
            out = jnp.where(v > 0, x * v2 / jnp.where(v > 0, v, 1), v2)
        else:
            out = x + c
    else:  # jpeg
        out = _jpeg(x, table)
    return jnp.clip(out, 0, 1).astype(dtype)


def _blur(x, sigma):
    radius = _BLUR_RADIUS
    t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / jnp.sum(k)
    pad = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    n = 2 * radius + 1
    h, w = x.shape[1], x.shape[2]
    rows = sum(k[i] * pad[:, i : i + h] for i in range(n))
    return sum(k[j] * rows[:, :, j : j + w] for j in range(n))


def _jpeg(x, q):
    n, h, w, c = x.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    img = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge") * 255 - 128
    blocks = img.reshape(n, hp // 8, 8, wp // 8, 8, c)
    m = jnp.asarray(dct_matrix(8), x.dtype)  # orthonormal DCT-II
    coef = jnp.einsum("ij,nbjckd,lk->nbicld", m, blocks, m)
    coef = jnp.round(coef / q[None, None, :, None, :, None]) * q[None, None, :, None, :, None]
    back = jnp.einsum("ji,nbjckd,kl->nbicld", m, coef, m)
    return ((back.reshape(n, hp, wp, c) + 128) / 255)[:, :h, :w]
