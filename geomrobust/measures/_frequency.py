"""Frequency sensitivity: the Fourier heat map of a classifier and the spectrum of
perturbations (Yin, Gontijo Lopes, Shlens, Cubuk, Gilmer, "A Fourier Perspective on Model
Robustness in Computer Vision", NeurIPS 2019, section 3).

Fourier heat map. For each 2-D frequency ``(i, j)`` of an ``H × W`` image, the Fourier basis
image ``U_ij`` is the real image of unit L2 norm whose DFT is supported on ``(i, j)`` and its
mirror ``(-i, -j)``: ``U_ij[h, w] ∝ cos(2π (i h / H + j w / W) + φ)`` (``φ = 0``: the cosine
atom, a real positive DFT coefficient). Every test example is perturbed as

    x̃ = clip(x + r ε U_ij),    r ∈ {-1, +1} uniformly at random,

with an independent sign per example and per channel (the paper adds the noise "to each
channel independently"), or on one channel only. The heat map is the test error on ``x̃``
per frequency. Its closed form for an affine classifier ``f(x) = <w, x> + b`` whose weight is
one atom ``U_ab``: ``<w, U_ij> = 0`` unless ``(i, j) = ±(a, b)`` (cosines of distinct
frequencies are orthogonal), so the error equals the clean error at every other frequency;
at ``±(a, b)`` the expected error of an example with score ``g`` is
``(err(g + ε) + err(g - ε)) / 2`` (``tests/test_frequency.py``).

Perturbation spectrum. The mean magnitude of the (unit-normalised) 2-D DFT of a set of
perturbations, e.g. DeepFool's or PGD's, with the zero frequency at the centre (the paper's
figure 1, "adversarial perturbations concentrate in high frequencies" for naturally trained
models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import (
    check_batch,
    check_bounds,
    check_classifier,
    check_int,
    check_key,
    check_labels,
    check_positive,
)
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier

__all__ = [
    "FourierHeatMap",
    "fourier_basis",
    "fourier_heat_map",
    "frequency_radius",
    "perturbation_spectrum",
]


class FourierHeatMap(NamedTuple):
    """error ``(F,)`` error rate on the perturbed examples per frequency (over the valid
    examples); frequencies ``(F, 2)`` the ``(i, j)`` (DFT indices, ``0 <= i < H``); grid
    ``(H, W)`` the errors at their frequency, zero frequency at the centre (``fftshift``
    order, as the paper plots them; NaN where not computed); clean_error : error rate of the
    unperturbed valid examples; correct ``(N,)`` bool: the example is classified correctly;
    valid ``(N,)`` bool: finite logits at ``x`` and at every perturbed ``x̃``; n_invalid :
    examples left out; eps : the perturbation norm per channel."""

    error: Array
    frequencies: Array
    grid: Array
    clean_error: float
    correct: Array
    valid: Array
    n_invalid: int
    eps: float


def fourier_basis(shape, i, j, *, phase: float = 0.0, dtype=jnp.float32) -> Array:
    """The Fourier basis image ``U_ij`` of ``shape = (H, W)``: unit L2 norm,
    ``∝ cos(2π (i h / H + j w / W) + phase)``; ``i``, ``j`` may be traced. Its DFT is supported
    on ``(i, j)`` and ``(-i, -j)`` (one coefficient for the self-mirrored frequencies)."""
    h, w = (int(s) for s in shape[:2])
    hh = jnp.arange(h, dtype=dtype)[:, None] / h
    ww = jnp.arange(w, dtype=dtype)[None, :] / w
    v = jnp.cos(2 * jnp.pi * (jnp.asarray(i, dtype) * hh + jnp.asarray(j, dtype) * ww) + phase)
    return v / jnp.sqrt(jnp.sum(v * v))


def frequency_radius(frequencies, shape) -> np.ndarray:
    """Radial frequency ``sqrt(i'² + j'²)`` of DFT indices ``(F, 2)`` on an ``(H, W)`` grid,
    with ``i' = min(i, H - i)`` (the distance to the zero frequency, mirrors alike)."""
    f = np.asarray(frequencies, np.int64).reshape(-1, 2)
    h, w = (int(s) for s in shape[:2])
    fi, fj = f[:, 0] % h, f[:, 1] % w
    return np.hypot(np.minimum(fi, h - fi), np.minimum(fj, w - fj))


def frequency_pairs(frequencies, name: str = "frequencies") -> np.ndarray:
    """``frequencies`` as an ``(F, 2)`` int64 array of ``(i, j)`` pairs (one pair ``(i, j)``
    is accepted too); anything else (a flat list of 3 or 4 numbers, fractions, an empty
    list) is refused with a ``ValueError`` that says the expected form."""
    try:
        f = np.asarray(frequencies)
    except ValueError:  # ragged
        f = np.asarray([], object)
    if f.ndim == 1 and f.shape[0] == 2:
        f = f[None]
    if f.ndim != 2 or f.shape[1] != 2 or f.shape[0] == 0 or f.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must be a non-empty sequence of (i, j) integer pairs, e.g. [(0, 1), "
            f"(2, 3)], got {frequencies!r}"
        )
    if f.dtype.kind == "f" and not np.all(np.isfinite(f) & (f == np.round(f))):
        raise ValueError(f"{name} must hold integer (i, j) pairs, got {frequencies!r}")
    return f.astype(np.int64)


def _frequencies(h, w, frequencies, stride):
    if frequencies is None:
        s = check_int(stride, "stride")
        return np.asarray([(i, j) for i in range(0, h, s) for j in range(0, w, s)], np.int32)
    f = frequency_pairs(frequencies)
    return (f % np.array([h, w])).astype(np.int32)


def fourier_heat_map(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    eps: float,
    key: Array,
    frequencies: Sequence[tuple[int, int]] | None = None,
    stride: int = 1,
    channel: int | None = None,
    bounds: tuple | None = None,
    phase: float = 0.0,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> FourierHeatMap:
    """Error rate under additive Fourier-basis noise ``x + r ε U_ij`` for every frequency.

    Parameters
    ----------
    logits_fn : the classifier (any form :func:`geomrobust.as_classifier` accepts) on NHWC
        images ``(N, H, W, C)`` (or ``(N, H, W)``).
    x, y : ``(N, H, W[, C])`` examples and ``(N,)`` labels.
    eps : L2 norm of the perturbation of each perturbed channel, in the units of ``x``
        (``U_ij`` has unit norm over ``H × W``; with every channel perturbed the total norm
        is ``ε √C``).
    key : PRNG key of the random signs; the sign of example ``n`` at frequency ``f`` is drawn
        from ``fold_in(fold_in(key, f), n)``, so the map does not depend on ``chunk_size``.
    frequencies : ``(i, j)`` pairs (taken modulo ``(H, W)``); default every ``stride``-th
        frequency on each axis.
    channel : None (default): every channel perturbed, each with its own sign; an int: only
        that channel.
    bounds : ``(lo, hi)`` to clip ``x̃`` to (the paper clips to the image range), or None.
    phase : the atom's phase ``φ`` (0: cosine).
    chunk_size, devices, progress : the executor's options (chunks of examples; each chunk
        runs every frequency in one compiled ``lax.map``).

    Returns
    -------
    FourierHeatMap.
    """
    if not np.isfinite(float(phase)):
        raise ValueError(f"phase must be a finite number (radians), got {phase!r}")
    clf = as_classifier(logits_fn)
    check_batch(x, "x", min_ndim=3)
    x = jnp.asarray(x)
    n = x.shape[0]
    freqs = _frequencies(x.shape[1], x.shape[2], frequencies, stride)
    k = check_classifier(clf, x)
    y = jnp.asarray(y)
    check_labels(y, k, n, "y")
    check_positive(eps, "eps")
    check_key(key, "key")
    h, w = x.shape[1], x.shape[2]
    c = x.shape[3] if x.ndim == 4 else 1
    if channel is not None and not (0 <= int(channel) < c):
        raise ValueError(
            f"channel must be in [0, {c}) for inputs with {c} channels, got {channel!r}"
        )
    bounds = check_bounds(bounds)
    lo, hi = (-jnp.inf, jnp.inf) if bounds is None else bounds
    mask = np.ones(c, bool) if channel is None else np.arange(c) == int(channel)
    wrong, valid = run_program(
        partial(_heat_program, phase=float(phase)),
        (clf, key, jnp.asarray(freqs), jnp.asarray(mask, x.dtype), jnp.asarray(eps, x.dtype),
         jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype)),
        (x, y, jnp.arange(n, dtype=jnp.int32)),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="Fourier heat map",
    )  # fmt: skip
    clean_wrong, pert_wrong = wrong[:, 0], wrong[:, 1:]
    v = np.asarray(valid)
    err = np.asarray(pert_wrong)[v].mean(axis=0) if v.any() else np.full(len(freqs), np.nan)
    grid = np.full((h, w), np.nan, err.dtype)
    grid[(freqs[:, 0] + h // 2) % h, (freqs[:, 1] + w // 2) % w] = err
    clean = float(np.asarray(clean_wrong)[v].mean()) if v.any() else float("nan")
    return FourierHeatMap(
        jnp.asarray(err), jnp.asarray(freqs), jnp.asarray(grid), clean,
        ~jnp.asarray(clean_wrong), jnp.asarray(valid), int((~v).sum()), float(eps),
    )  # fmt: skip


@partial(jax.jit, static_argnames="phase")
def _heat_program(clf, key, freqs, mask, eps, lo, hi, xc, yc, ids, *, phase):
    """A chunk of examples at every frequency: ``(C, 1 + F)`` misclassified flags (clean
    first) and ``(C,)`` validity. One program per architecture and shapes."""
    image = xc if xc.ndim == 4 else xc[..., None]
    nch = image.shape[-1]

    def predict(z):
        logits = clf(z if xc.ndim == 4 else z[..., 0])
        ok = jnp.all(jnp.isfinite(logits), axis=-1)
        return jnp.argmax(logits, axis=-1) != yc, ok

    def one(args):
        f, ij = args
        u = fourier_basis(image.shape[1:3], ij[0], ij[1], phase=phase, dtype=image.dtype)
        fkey = jax.random.fold_in(key, f)
        signs = jax.vmap(
            lambda i: jax.random.rademacher(jax.random.fold_in(fkey, i), (nch,), image.dtype)
        )(ids)
        delta = eps * signs[:, None, None, :] * mask * u[None, :, :, None]
        return predict(jnp.clip(image + delta, lo, hi))

    wrong0, ok0 = predict(image)
    wrong, ok = jax.lax.map(one, (jnp.arange(freqs.shape[0]), freqs))
    return (
        jnp.concatenate([wrong0[:, None], wrong.T], axis=1),
        ok0 & jnp.all(ok, axis=0),
    )


def perturbation_spectrum(perturbations: Array, *, normalize: bool = True) -> Array:
    """Mean magnitude of the 2-D DFT of perturbations ``(N, H, W[, C])``, averaged over
    examples and channels, zero frequency at the centre (``fftshift``): ``(H, W)``.

    ``normalize``: each perturbation is scaled to unit L2 norm first (examples weigh equally;
    all-zero perturbations are left out). Yin et al. 2019, figure 1.
    """
    r = jnp.asarray(perturbations)
    if r.ndim not in (3, 4):
        raise ValueError(f"perturbations must be (N, H, W) or (N, H, W, C), got {r.shape}")
    if r.ndim == 3:
        r = r[..., None]
    norms = jnp.sqrt(jnp.sum(r * r, axis=(1, 2, 3)))
    keep = norms > 0 if normalize else jnp.ones(r.shape[0], bool)
    if normalize:
        r = r / jnp.where(keep, norms, 1.0)[:, None, None, None]
    mag = jnp.abs(jnp.fft.fft2(r, axes=(1, 2)))  # (N, H, W, C)
    mag = jnp.mean(mag, axis=-1)
    mean = jnp.sum(jnp.where(keep[:, None, None], mag, 0), axis=0) / jnp.maximum(keep.sum(), 1)
    return jnp.fft.fftshift(mean, axes=(0, 1))
