"""Curvature at a scale: the Gaussian-smoothed function's Hessian from gradient samples.

The exact Hessian of a piecewise-linear network (ReLU, max pooling) is zero almost
everywhere, so its exact curvature says nothing. At a scale ``σ`` we use instead the
Gaussian-smoothed function (the view of randomized smoothing: Cohen, Rosenfeld, Kolter, ICML
2019; and of the finite-difference curvature of CURE, Moosavi-Dezfooli et al., CVPR 2019)

    F_σ(x) = E_ε[F(x + σ ε)],   ε ~ N(0, I),

whose gradient and Hessian follow from gradients of ``F`` alone (Gaussian integration by
parts, Stein's lemma), valid for any ``F`` with integrable gradient, kinks included:

    ∇F_σ(z)  = E[∇F(z + σ ε)],
    ∇²F_σ(z) = E[∇F(z + σ ε) εᵀ] / σ = E[(∇F(z + σ ε) - ∇F(z - σ ε)) εᵀ] / (2 σ).

With ``m`` antithetic samples the estimator of the Hessian is the symmetric, rank ``<= 2m``
matrix ``Ĥ = (Dᵀ E + Eᵀ D) / (2 m)`` (rows ``d_i = (∇F(z + σ ε_i) - ∇F(z - σ ε_i)) / (2σ)``,
``e_i = ε_i``): unbiased, a linear operator, and diagonalized exactly through a QR of
``[Dᵀ, Eᵀ]`` (or densely when ``D <= 2m``), never formed.

The curvature at scale ``σ`` at a boundary point ``z`` is that of the level set of ``F_σ``
through ``z``: principal curvatures = eigenvalues of ``P Ĥ P / ||ĝ||`` on ``ĝ⊥``, with the
same sign convention as the exact curvature (positive bends towards the reference class).
For a quadratic ``F`` the smoothing only shifts ``F`` by ``σ² tr(A) / 2``, so the curvature at
every scale is the exact curvature; for a C² network it tends to the exact curvature as
``σ -> 0``; for a ReLU network it is finite and falls as ``σ`` grows.

Honest values (cross-fitting): the samples are split in two halves. The principal
directions are the top eigenvectors of the first half's estimate; the values reported are the
normal curvatures along those directions estimated from the second half, which are unbiased
given the directions (the top eigenvalues of one noisy estimate are biased away from zero),
with their standard errors (``std / sqrt(m / 2)`` of the per-sample terms).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from ._shape_operator import householder_tangent_basis, tangent_to_ambient

__all__ = ["cross_fitted", "gradient_samples", "smoothed_eigs", "smoothed_quadratic_form"]


def gradient_samples(
    grad_batch: Callable[[Array], Array], z: Array, key: Array, sigma, num_samples: int
) -> tuple[Array, Array, Array]:
    """Antithetic gradient samples at ONE point ``z``.

    ``grad_batch`` maps ``(B, *s)`` points to ``(B, *s)`` gradients (one forward + VJP for
    the batch). Returns ``ĝ (D,)`` (the smoothed gradient), ``d (m, D)`` rows
    ``(∇F(z + σ ε_i) - ∇F(z - σ ε_i)) / (2 σ)`` and ``e (m, D)`` the ``ε_i``.
    """
    d = z.size
    m = int(num_samples)
    eps = jax.random.normal(key, (m, d), z.dtype)
    flat = z.reshape(1, d)
    pts = jnp.concatenate([flat + sigma * eps, flat - sigma * eps]).reshape(2 * m, *z.shape)
    g = grad_batch(pts).reshape(2 * m, d)
    gp, gm = g[:m], g[m:]
    return 0.5 * jnp.mean(gp + gm, axis=0), (gp - gm) / (2 * sigma), eps


def _project_rows(a: Array, n: Array | None) -> Array:
    return a if n is None else a - (a @ n)[:, None] * n[None, :]


def smoothed_eigs(d: Array, e: Array, n: Array | None, num: int, which: str):
    """Eigenpairs of ``P Ĥ P`` (``P = I - n nᵀ``, or ``I`` when ``n`` is None) with
    ``Ĥ = (dᵀ e + eᵀ d) / (2 m)``: the ``num`` of largest magnitude (``which="LM"``) or
    largest value (``"LA"``). Returns ``values (num,)`` and unit ``vectors (num, D)``."""
    m, dim = d.shape
    pd, pe = _project_rows(d, n), _project_rows(e, n)
    if dim <= 2 * m:  # small input: the dense (D, D) estimate
        h = (pd.T @ pe + pe.T @ pd) / (2 * m)
        if n is None:
            vals, vecs = jnp.linalg.eigh(h)
            vecs = vecs.T
        else:  # on n⊥ only (an orthonormal tangent basis), so n's zero is not in the spectrum
            w, c = householder_tangent_basis(n)
            qh = h - (2.0 / c) * jnp.outer(w, w @ h)
            qhq = qh - (2.0 / c) * jnp.outer(qh @ w, w)
            vals, u = jnp.linalg.eigh(qhq[1:, 1:])
            vecs = tangent_to_ambient(u, w, c).T
    else:  # rank <= 2m: P Ĥ P = B C Bᵀ with B = [P dᵀ, P eᵀ], C = [[0, I], [I, 0]] / (2m)
        q, r = jnp.linalg.qr(jnp.concatenate([pd, pe]).T)  # (D, 2m), (2m, 2m)
        c = jnp.block(
            [[jnp.zeros((m, m), d.dtype), jnp.eye(m, dtype=d.dtype)],
             [jnp.eye(m, dtype=d.dtype), jnp.zeros((m, m), d.dtype)]]
        ) / (2 * m)  # fmt: skip
        small = r @ c @ r.T
        vals, w = jnp.linalg.eigh(0.5 * (small + small.T))
        vecs = (q @ w).T
    order = jnp.argsort(-jnp.abs(vals) if which == "LM" else -vals, stable=True)[:num]
    vecs = vecs[order]
    vecs = vecs / jnp.maximum(jnp.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
    return vals[order], vecs


def smoothed_quadratic_form(d: Array, e: Array, u: Array) -> tuple[Array, Array]:
    """``uᵀ Ĥ u`` for unit rows ``u (M, D)`` and its standard error, each ``(M,)``: the mean
    and ``std / sqrt(m)`` of the per-sample terms ``(d_i·u)(e_i·u)``."""
    t = (d @ u.T) * (e @ u.T)  # (m, M)
    m = d.shape[0]
    return jnp.mean(t, axis=0), jnp.std(t, axis=0, ddof=1) / jnp.sqrt(jnp.asarray(m, d.dtype))


def cross_fitted(d: Array, e: Array, n: Array | None, num: int, which: str):
    """Directions from the first half of the samples, values and standard errors along them
    from the second half (see the module docstring). Returns ``values, stderr (num,)`` and
    ``vectors (num, D)``."""
    half = d.shape[0] // 2
    _, vecs = smoothed_eigs(d[:half], e[:half], n, num, which)
    vals, se = smoothed_quadratic_form(d[half:], e[half:], vecs)
    return vals, se, vecs
