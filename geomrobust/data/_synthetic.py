"""Synthetic datasets with known geometry: directional sets ``D(v)``, DCT-band data, spheres.

* Directional dataset (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural Anisotropy
  Directions", NeurIPS 2020, section 2): ``x = y (ε/2) v + (I - v vᵀ) n`` with
  ``n ~ N(0, σ² I)``, ``y = ±1`` equiprobable; linearly separable along the unit ``v`` with
  margin ``ε/2``, isotropic noise in the orthogonal complement.
* DCT-band data (Ortiz-Jimenez et al., "Hold me tight! Influence of discriminative features on
  deep network boundaries", NeurIPS 2020, section 3): the same construction with ``v`` spread
  uniformly over a square band ``[a, b)²`` of 2-D DCT coefficients (all channels), so the only
  discriminative information lies in that band and everything else is class-independent noise.
* Concentric spheres: two classes uniform on the spheres of radii ``r1 < r2``; the Bayes
  boundary is curved (any sphere between them), a test bed for curvature estimates.

All generators are pure: the same ``key`` gives the same data. Images keep the requested
floating dtype; labels are int32 in ``{0, 1}`` (label 1 is the ``+v`` side / the outer sphere).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust._deprecation import renamed

from ._dct import dct_matrix
from ._load import ArrayDataset

__all__ = [
    "concentric_spheres",
    "dct_band_dataset",
    "dct_band_direction",
    "dct_direction",
    "directional_dataset",
    "fourier_direction",
]


def _image_shape(shape, name: str = "shape") -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of ints (H, W) or (H, W, C), got {shape!r}"
        ) from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"{name} must be (H, W) or (H, W, C) with positive sizes, got {shape}")
    return shape


def _float_dtype(dtype, name: str = "dtype") -> np.dtype:
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dtype}")
    return dtype


def _count(n, name: str = "n") -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _channels(atom: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat an ``(H, W)`` atom over the channels of ``shape`` and renormalize."""
    if len(shape) == 3:
        atom = np.repeat(atom[..., None], shape[2], axis=-1)
    return atom / np.linalg.norm(atom)


def fourier_direction(shape, i: int, j: int, *, phase: float = np.pi / 4, dtype=np.float32):
    """Unit-norm real 2-D Fourier atom ``v[h, w] ∝ cos(2π (i h / H + j w / W) + phase)``.

    The same atom is repeated over the channels of ``(H, W, C)``. The default phase ``π/4``
    mixes the cosine and sine atoms of frequency ``(i, j)``, so the atom is non-zero for every
    frequency (including 0 and Nyquist). Frequencies are taken modulo ``(H, W)``; ``(i, j)`` and
    ``(-i, -j)`` give atoms that differ only in the sign of the sine part. These are the
    directions ``v`` of the Fourier accuracy maps of the NADs paper (section 2).

    Returns
    -------
    np.ndarray
        ``shape``, unit Euclidean norm, ``dtype``.
    """
    shape = _image_shape(shape)
    h, w = shape[:2]
    theta = 2 * np.pi * (i * np.arange(h)[:, None] / h + j * np.arange(w)[None, :] / w)
    return _channels(np.cos(theta + phase), shape).astype(_float_dtype(dtype))


def dct_direction(shape, i: int, j: int, *, dtype=np.float32):
    """Unit-norm 2-D DCT-II atom ``C_H[i] ⊗ C_W[j]`` (repeated over channels): ``dct2`` of it
    is supported on the single coefficient ``(i, j)`` of every channel."""
    shape = _image_shape(shape)
    h, w = shape[:2]
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(f"DCT frequency (i, j) must lie in [0, {h}) x [0, {w}), got ({i}, {j})")
    atom = np.outer(dct_matrix(h)[i], dct_matrix(w)[j])
    return _channels(atom, shape).astype(_float_dtype(dtype))


def dct_band_direction(shape, band: tuple[int, int], *, dtype=np.float32):
    """Unit vector whose 2-D DCT is constant on the square band ``[a, b)²`` (all channels)
    and zero elsewhere: ``v = IDCT(1_band) / sqrt(C (b - a)²)``."""
    shape = _image_shape(shape)
    h, w = shape[:2]
    a, b = (operator.index(t) for t in band)
    if not 0 <= a < b <= min(h, w):
        raise ValueError(f"band must be (a, b) with 0 <= a < b <= {min(h, w)}, got {band}")
    ch, cw = dct_matrix(h)[a:b], dct_matrix(w)[a:b]
    atom = ch.T @ np.ones((b - a, b - a)) @ cw  # IDCT of the band indicator
    return _channels(atom, shape).astype(_float_dtype(dtype))


@renamed(epsilon="eps")
def directional_dataset(
    v, n: int, *, key: jax.Array, eps: float = 1.0, sigma: float = 3.0
) -> ArrayDataset:
    """Directional dataset ``D(v)``: ``x = y (ε/2) v + (I - v vᵀ) n``, ``n ~ N(0, σ² I)``.

    Parameters
    ----------
    v
        Unit vector of any shape (the input shape), e.g. :func:`fourier_direction`; its
        floating dtype is the dtype of the images.
    n
        Number of examples.
    key
        PRNG key (labels and noise).
    eps, sigma
        Class separation ``ε`` (``<x, v> = ±ε/2`` exactly) and noise level ``σ``.

    Returns
    -------
    ArrayDataset
        ``images (n, *v.shape)``, ``labels (n,)`` int32 with ``1 ⇔ y = +1``, ``num_classes=2``.

    References
    ----------
    Ortiz-Jimenez et al., "Neural Anisotropy Directions", NeurIPS 2020, eq. (1).
    """
    v = np.asarray(v)
    dtype = _float_dtype(v.dtype, "v.dtype")
    norm = float(np.linalg.norm(v.astype(np.float64)))
    if v.size < 2 or abs(norm - 1.0) > (1e-4 if dtype == np.float64 else 1e-3):
        raise ValueError(f"v must be a unit vector with at least 2 entries, got norm {norm:.6g}")
    images, labels = _directional(v, _count(n), key, eps, sigma)
    return ArrayDataset(images, labels, 2, "directional")


def _directional(v: np.ndarray, n: int, key, eps: float, sigma: float):
    dtype = v.dtype
    vf = jnp.asarray(v.reshape(-1), dtype)
    k_y, k_n = jax.random.split(key)
    y = jnp.where(jax.random.bernoulli(k_y, 0.5, (n,)), 1, -1).astype(dtype)
    noise = jnp.asarray(sigma, dtype) * jax.random.normal(k_n, (n, vf.size), dtype)
    noise = noise - (noise @ vf)[:, None] * vf[None, :]
    x = (y * jnp.asarray(eps / 2, dtype))[:, None] * vf[None, :] + noise
    images = np.asarray(x, dtype).reshape(n, *v.shape)
    return images, np.asarray(y > 0, np.int32)


@renamed(epsilon="eps")
def dct_band_dataset(
    n: int,
    input_shape,
    band: tuple[int, int],
    *,
    key: jax.Array,
    eps: float = 1.0,
    sigma: float = 3.0,
    dtype=np.float32,
) -> ArrayDataset:
    """Binary data whose only discriminative information lies in the DCT band ``[a, b)²``.

    ``x = y (ε/2) v + (I - v vᵀ) n`` with ``v = dct_band_direction(input_shape, band)``: in
    the DCT domain the class signal ``y (ε/2) dct2(v)`` is supported on the band (all
    channels), and the noise ``n ~ N(0, σ² I)`` (isotropic, hence also in the DCT domain) is
    independent of the class. Training on it with a low- versus high-frequency band shows
    where a network can place its boundary ("Hold me tight!", section 3).

    Returns
    -------
    ArrayDataset
        ``images (n, *input_shape)`` of ``dtype``, ``labels`` int32 in ``{0, 1}``,
        ``num_classes=2``, ``name="dct_band"``.
    """
    v = dct_band_direction(input_shape, band, dtype=dtype)
    images, labels = _directional(v, _count(n), key, eps, sigma)
    return ArrayDataset(images, labels, 2, "dct_band")


def concentric_spheres(
    n: int,
    shape,
    *,
    key: jax.Array,
    radii: tuple[float, float] = (1.0, 2.0),
    dtype=np.float32,
) -> ArrayDataset:
    """Two classes uniform on concentric spheres: ``x = r_y u``, ``u`` uniform on ``S^{D-1}``.

    Parameters
    ----------
    n
        Number of examples; labels are drawn equiprobably (label 0: radius ``r1``, 1: ``r2``).
    shape
        Per-example shape: an int ``D`` or a tuple (e.g. an image shape).
    radii
        ``(r1, r2)`` with ``0 < r1 < r2``.

    Returns
    -------
    ArrayDataset
        ``images (n, *shape)`` with ``||x|| = r_label``, ``labels`` int32, ``num_classes=2``.
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    d = int(np.prod(shape)) if shape else 0
    if d < 2 or min(shape) < 1:
        raise ValueError(f"shape must have at least 2 entries in total, got {shape}")
    r1, r2 = (float(r) for r in radii)
    if not 0 < r1 < r2 or not np.isfinite(r2):
        raise ValueError(f"radii must satisfy 0 < r1 < r2 < inf, got {radii}")
    dtype = _float_dtype(dtype)
    n = _count(n)
    k_y, k_u = jax.random.split(key)
    labels = jax.random.bernoulli(k_y, 0.5, (n,))
    u = jax.random.normal(k_u, (n, d), dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    r = jnp.where(labels, jnp.asarray(r2, dtype), jnp.asarray(r1, dtype))
    images = np.asarray(r[:, None] * u, dtype).reshape(n, *shape)
    return ArrayDataset(images, np.asarray(labels, np.int32), 2, "spheres")
