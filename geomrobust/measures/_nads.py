"""Neural anisotropy directions (NADs) and the Fourier accuracy map of an architecture.

NADs of an architecture (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural Anisotropy
Directions", NeurIPS 2020, docs/methods.md) are the eigenvectors of the gradient covariance over
random initialisations ``θ`` at a fixed input ``x_0 ~ N(0, I)``:

    Σ = E_θ[∇_x f_θ(x_0) ∇_x f_θ(x_0)ᵀ],

for a scalar output ``f_θ``. Networks learn a directional dataset ``D(v)`` easily only when
``v`` is aligned with the leading NADs; the test accuracy on ``D(v)`` for every 2-D Fourier
direction ``v`` is the architecture's "Fourier accuracy map".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._validation import check_positive
from ..engine import CHUNK_SIZE
from ..models import StaticFunction, as_classifier

__all__ = ["NADs", "fourier_magnitude", "nads", "scalar_output"]


class NADs(NamedTuple):
    """eigenvalues ``(r,)`` of ``Σ`` descending; eigenvectors ``(r, *s)`` unit (sign arbitrary);
    x0 ``(*s,)`` the input; num_networks the number of initialisations averaged."""

    eigenvalues: Array
    eigenvectors: Array
    x0: Array
    num_networks: int


def scalar_output(logits: Array, output: str) -> Array:
    """The scalar network output of NADs from logits ``(K,)``.

    ``"first"``: ``f_0`` (a ``K = 1`` network's only output); ``"difference"``: ``f_1 - f_0``
    (a two-class network's logit difference, the quantity whose sign is the decision).
    """
    if output == "first":
        return logits[0]
    if output == "difference":
        return logits[1] - logits[0]
    raise ValueError(f"output must be 'first' or 'difference', got {output!r}")


@renamed(batch="chunk_size")
def nads(
    init_fn: Callable[[Array], Callable[[Array], Array]],
    input_shape: tuple[int, ...],
    *,
    num_networks: int,
    key: Array,
    x0: Array | None = None,
    num: int | None = None,
    output: str = "first",
    method: str = "auto",
    dtype=jnp.float32,
    fd_scale: float | None = None,
    center: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> NADs:
    """Neural anisotropy directions of an architecture.

    Parameters
    ----------
    init_fn : ``key -> logits_fn``: a freshly initialised network (batched
        ``(N, *s) -> (N, K)``). It is called under ``jax.vmap`` over keys, so it must be
        traceable (plain JAX initialisers; for Flax NNX, split the module into a pure apply).
    input_shape : ``s``, the input shape.
    num_networks : number ``M`` of random initialisations.
    key : PRNG key; splits into the ``x_0`` key (unless ``x0`` is given) and network keys.
    x0 : optional fixed input ``(*s,)``; default ``x_0 ~ N(0, I)`` from ``key``, of ``dtype``.
    num : number of NADs returned (default ``min(D, M)``).
    output : scalar output, see :func:`scalar_output`.
    method : ``"covariance"`` streams ``Σ_θ g gᵀ`` (a ``(D, D)`` accumulator, never all
        gradients) then ``eigh``; ``"gram"`` keeps the ``(M, D)`` gradients and diagonalises the
        ``(M, M)`` Gram matrix ``G Gᵀ`` (less memory when ``M < D``: eigenvectors
        ``Gᵀ u / sqrt(λ)``); ``"auto"`` picks ``"gram"`` when ``M < D``.
    dtype : floating dtype of the default ``x0``.
    fd_scale : None (default): ``g`` is the gradient ``∇_x f_θ(x_0)`` of the paper's
        definition. A step ``s``: ``g`` is the central secant along each coordinate,
        ``g_i = (f(x_0 + s e_i) - f(x_0 - s e_i)) / (2 s)`` (``2 D`` forward passes per
        network), the estimator of the authors' code, which used ``s = 100`` for its
        published NADs. For a smooth network the two agree as ``s -> 0``; for a ReLU
        network at ``s = 100`` they do not (the secant spans many linear pieces; on the
        LeNet their NADs differ, median cosine about 0.1), so use ``fd_scale=100,
        center=True`` to reproduce the published figures and the default for the definition.
    center : subtract the mean ``g`` over networks before the covariance (a PCA, as the
        authors' code does with scikit-learn's ``PCA``); default False: the second moment
        ``E[g gᵀ]`` of the paper's definition.
    chunk_size : networks per jitted call (default :data:`geomrobust.engine.CHUNK_SIZE`;
        memory ``chunk_size · D`` for the gradients, ``chunk_size · 2 D · D`` inputs with
        ``fd_scale``: lower it there for large inputs). The sum over networks runs chunk
        by chunk, so another ``chunk_size`` changes the last bits of the covariance.

    Returns
    -------
    NADs with ``Σ ≈ (1/M) Σ_m g_m g_mᵀ``: eigenvalues ``(r,)``, eigenvectors ``(r, *s)``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    d = int(np.prod(input_shape))
    if not isinstance(num_networks, int | np.integer) or num_networks < 1:
        raise ValueError(f"num_networks must be a positive integer, got {num_networks!r}")
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if method not in ("auto", "covariance", "gram"):
        raise ValueError(f"method must be 'auto', 'covariance' or 'gram', got {method!r}")
    scalar_output(jnp.zeros(2), output)  # validates ``output``
    k_x, k_net = jax.random.split(key)
    if x0 is None:
        x0 = jax.random.normal(k_x, input_shape, dtype)
    x0 = jnp.asarray(x0)
    if x0.shape != input_shape or not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(
            f"x0 must be a floating array of shape {input_shape}, got {x0.dtype}{tuple(x0.shape)}"
        )
    r = min(d, num_networks) if num is None else int(num)
    if not 1 <= r <= min(d, num_networks):
        raise ValueError(f"num must lie in [1, min(D, M)] = [1, {min(d, num_networks)}], got {r}")
    if method == "auto":
        method = "gram" if num_networks < d else "covariance"
    if fd_scale is not None:
        fd_scale = check_positive(fd_scale, "fd_scale")

    keys = jax.random.split(k_net, num_networks)
    grads = _gradient_batches(init_fn, x0, output, fd_scale)
    if method == "covariance":
        cov = jnp.zeros((d, d), x0.dtype)
        total = jnp.zeros((d,), x0.dtype)
        for keys_b, w in _batches(keys, chunk_size, x0.dtype):
            g = grads(keys_b)
            cov = _accumulate(cov, g, w)
            total = total + (g * w[:, None]).sum(0)
        cov = cov / num_networks
        if center:
            mu = total / num_networks
            cov = cov - jnp.outer(mu, mu)
        vals, vecs = jnp.linalg.eigh(cov)
        vals, vecs = vals[::-1][:r], vecs[:, ::-1][:, :r].T
    else:
        G = jnp.concatenate(
            [grads(keys_b)[: int(w.sum())] for keys_b, w in _batches(keys, chunk_size, x0.dtype)]
        )
        if center:
            G = G - G.mean(axis=0, keepdims=True)
        lam, U = jnp.linalg.eigh(G @ G.T)
        lam, U = lam[::-1][:r], U[:, ::-1][:, :r]
        vecs = (G.T @ U) / jnp.sqrt(jnp.maximum(lam, jnp.finfo(lam.dtype).tiny))
        vecs = vecs.T / jnp.linalg.norm(vecs.T, axis=1, keepdims=True)
        vals = lam / num_networks
    return NADs(vals, vecs.reshape(r, *input_shape), x0, int(num_networks))


@partial(jax.jit, static_argnames=("init", "output", "secant"))
def _gradient_program(keys, x0, step, *, init, output, secant):
    """``(keys (B,), x0) -> (B, D)`` gradients (or central secants of step ``step``) of freshly
    initialised networks: compiled once per architecture builder (a
    :class:`~geomrobust.models.StaticFunction`: the same code over equal settings is the
    same program), output and estimator."""

    def one(k):
        f = as_classifier(init(k))
        if not secant:
            return jax.grad(lambda x: scalar_output(f(x[None])[0], output))(x0).ravel()
        d = x0.size
        e = jnp.eye(d, dtype=x0.dtype).reshape(d, *x0.shape) * step
        out = jax.vmap(lambda z: scalar_output(z, output))(f(jnp.concatenate([x0 + e, x0 - e])))
        return (out[:d] - out[d:]) / (2 * step)

    return jax.vmap(one)(keys)


def _gradient_batches(init_fn, x0, output, fd_scale=None):
    init = StaticFunction(init_fn)
    step = jnp.asarray(1.0 if fd_scale is None else fd_scale, x0.dtype)
    secant = fd_scale is not None
    return lambda keys: _gradient_program(keys, x0, step, init=init, output=output, secant=secant)


@jax.jit
def _accumulate(cov, g, w):
    return cov + (g * w[:, None]).T @ g


def _batches(keys, batch, dtype):
    """Fixed-size key batches (the last padded by repetition) and 0/1 weights for padding."""
    m = keys.shape[0]
    size = min(batch, m)
    for start in range(0, m, size):
        kb = keys[start : start + size]
        n = kb.shape[0]
        if n < size:
            kb = jnp.concatenate([kb, jnp.repeat(kb[-1:], size - n, axis=0)])
        yield kb, (jnp.arange(size) < n).astype(dtype)


def fourier_magnitude(images: Array) -> Array:
    """Centred 2-D DFT magnitude of images ``(N, H, W[, C])`` averaged over channels, ``(N, H, W)``.

    ``|F(v)|`` of the NADs: the published figures show it to read off which frequencies an
    architecture is sensitive to (zero frequency at the centre after ``fftshift``).
    """
    images = jnp.asarray(images)
    if images.ndim == 4:
        mag = jnp.abs(jnp.fft.fft2(images, axes=(1, 2))).mean(-1)
    elif images.ndim == 3:
        mag = jnp.abs(jnp.fft.fft2(images, axes=(1, 2)))
    else:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {images.shape}")
    return jnp.fft.fftshift(mag, axes=(1, 2)).astype(images.dtype)
