"""The shape operator of a decision boundary at one point, matrix-free and (for tests) dense.

At a point ``z`` of the boundary ``{F_k = 0}`` between classes ``y`` and ``k``
(``F_k = f_k - f_y``, docs/methods.md): ``g = ∇F_k(z)``, unit normal ``n = g/||g||`` (pointing to
the adversarial side ``F_k > 0``), tangent projector ``P = I - n nᵀ``, ``H = ∇²F_k(z)``, and the
shape operator

    S = P H P / ||g||,

whose eigenvalues on the tangent space ``n⊥`` are the principal curvatures. With this sign a
ball-shaped class-``y`` region of radius ``r`` (``F_k = ||x|| - r``) has every principal curvature
``+1/r``: positive curvature bends the boundary towards the ``y`` side.

Reference: Fawzi, Moosavi-Dezfooli, Frossard, Soatto, "Empirical study of the topology and
geometry of deep networks", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from geomrobust.ops import logit_difference
from geomrobust.ops._norms import lp_norm

__all__ = [
    "ShapeOperator",
    "householder_tangent_basis",
    "shape_operator",
    "tangent_shape_matrix",
]


def _linearized_gradient(logits_fn, z, y, k):
    F = logit_difference(logits_fn, y, k)
    g, hvp_op = jax.linearize(jax.grad(F), z)
    return F, g, hvp_op


class ShapeOperator(NamedTuple):
    """The shape operator at one boundary point (:func:`shape_operator`).

    matvec : ``v -> S v`` on arrays of shape ``s``; ``S n = 0`` and ``S v ⊥ n``.
    grad : ``(*s,)`` the gradient ``g = ∇F_k(z)``.
    normal : ``(*s,)`` the unit normal ``n = g / ||g||``.
    grad_norm : ``()`` ``||g||``.
    """

    matvec: Callable[[Array], Array]
    grad: Array
    normal: Array
    grad_norm: Array


def shape_operator(logits_fn: Callable[[Array], Array], z: Array, y, k) -> ShapeOperator:
    """Matrix-free shape operator ``v -> P H P v / ||g||`` at ONE boundary point.

    The gradient of ``F_k`` is linearized once (forward-over-reverse), so each application
    costs one Jacobian-vector product through the gradient, never a Hessian.

    Parameters
    ----------
    logits_fn : batched classifier ``(N, *s) -> (N, K)``.
    z : ``(*s,)`` a point (on the boundary for a geometric meaning).
    y, k : integer classes (may be traced).

    Returns
    -------
    ShapeOperator (``matvec``, ``grad``, ``normal``, ``grad_norm``).
    """
    _, g, hvp_op = _linearized_gradient(logits_fn, z, y, k)
    gnorm = lp_norm(g.ravel(), 2)
    n = g / gnorm

    def operator(v: Array) -> Array:
        pv = v - n * jnp.vdot(n, v)
        hv = hvp_op(pv)
        return (hv - n * jnp.vdot(n, hv)) / gnorm

    return ShapeOperator(operator, g, n, gnorm)


def householder_tangent_basis(n: Array) -> tuple[Array, Array]:
    """Householder vector ``w`` with ``Q = I - 2 w wᵀ/(wᵀw)``, ``Q n = ∓e_1``, for unit ``n (D,)``.

    The columns ``1..D-1`` of ``Q`` are an orthonormal basis of ``n⊥``. Returns ``(w, c = wᵀw)``.
    """
    s = jnp.where(n[0] >= 0, 1.0, -1.0).astype(n.dtype)
    w = n.at[0].add(s)
    return w, jnp.vdot(w, w)


def tangent_shape_matrix(
    logits_fn: Callable[[Array], Array], z: Array, y, k, *, hessian_batch: int = 256
) -> tuple[Array, Array, Array, Array]:
    """Dense shape operator restricted to the tangent space, for small ``D`` (and tests).

    Forms ``H = ∇²F_k(z)`` (``D`` Hessian-vector products, as ``jax.hessian`` does), and the
    matrix ``Bᵀ H B / ||g||`` of size ``(D-1, D-1)`` where ``B`` (``(D, D-1)``) is an orthonormal
    basis of ``n⊥`` from a Householder reflection. The Hessian columns are computed
    ``hessian_batch`` at a time. Restricting to ``n⊥`` (rather than taking
    ``P H P``) keeps the normal direction's zero eigenvalue out of the spectrum.

    Returns
    -------
    S_t : ``(D-1, D-1)``; w, c : the Householder vector and ``wᵀw`` (see
    :func:`householder_tangent_basis`); g : ``(*s,)`` the gradient.
    """
    shape = z.shape
    _, g, hvp_op = _linearized_gradient(logits_fn, z, y, k)
    d = g.size
    eye = jnp.eye(d, dtype=z.dtype)
    # columns in batches: memory of ``hessian_batch`` HVPs at a time, not of D
    H = jax.lax.map(lambda e: hvp_op(e.reshape(shape)).ravel(), eye, batch_size=hessian_batch)
    H = 0.5 * (H + H.T)
    gf = g.ravel()
    gnorm = lp_norm(gf.ravel(), 2)
    w, c = householder_tangent_basis(gf / gnorm)
    QH = H - (2.0 / c) * jnp.outer(w, w @ H)
    QHQ = QH - (2.0 / c) * jnp.outer(QH @ w, w)
    return QHQ[1:, 1:] / gnorm, w, c, g


def tangent_to_ambient(U: Array, w: Array, c: Array) -> Array:
    """Map tangent coordinates ``U`` (``(D-1, m)``) to ambient vectors ``B U`` (``(D, m)``)."""
    Ut = jnp.concatenate([jnp.zeros((1, U.shape[1]), U.dtype), U], axis=0)
    return Ut - (2.0 / c) * jnp.outer(w, w @ Ut)
