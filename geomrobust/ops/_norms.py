"""Lp norms, their duals, and the dual-norm steps shared by the boundary searches.

For ``p`` in ``(1, inf]`` the dual exponent is ``q = p / (p - 1)`` (``q = 1`` for ``p = inf``).
The minimal-``Lp`` step onto the hyperplane ``{F + <w, r> = 0}`` is (Hölder's equality case)

    r = |F| / ||w||_q^q * |w|^(q-1) * sign(w),    ||r||_p = |F| / ||w||_q,

which is ``|F| w / ||w||²`` for ``p = 2`` and ``|F| sign(w) / ||w||_1`` for ``p = inf``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array

__all__ = [
    "as_norm",
    "dual_exponent",
    "dual_step",
    "lp_norm",
    "mul_pow2",
    "pow2_exponent",
    "project_ball",
]


def as_norm(norm) -> float:
    """Validate ``norm`` (2, ``inf``, or any ``p > 1``) and return it as a float."""
    if isinstance(norm, str):
        norm = norm.strip().lower()
        norm = math.inf if norm in ("inf", "linf", "infinity") else norm
    try:
        p = float(norm)
    except (TypeError, ValueError):
        raise TypeError(f"norm must be a number p > 1 or inf, got {norm!r}") from None
    if math.isnan(p) or p <= 1.0:
        raise ValueError(
            f"norm must be p > 1 (2, inf, or another Lp); got {norm!r}. For L1-sparse "
            "perturbations use geomrobust.search.sparsefool"
        )
    return p


def dual_exponent(p: float) -> float:
    """``q = p / (p - 1)``: 2 for 2, 1 for inf."""
    if math.isinf(p):
        return 1.0
    return p / (p - 1.0)


def pow2_exponent(m: Array) -> Array:
    """The exponent ``e`` with ``m = f 2^e``, ``0.5 <= f < 1`` (``jnp.frexp``), of each
    ``max |v|`` in ``m``; 0 where ``m`` is zero or not finite (nothing to scale)."""
    ok = (m > 0) & jnp.isfinite(m)
    return jnp.where(ok, jnp.frexp(jnp.where(ok, m, 1))[1], 0)


def mul_pow2(a: Array, k: Array) -> Array:
    """``a * 2**k`` for an integer array ``k`` broadcast against ``a`` (a per-row exponent,
    ``(N, 1)`` against ``(N, D)``): two multiplications by powers of two built on ``k``'s
    shape, so the result is exact wherever it is a normal number, as with ``jnp.ldexp``, which
    decomposes every element of ``a`` into bits (the L2 norms of a ``(1000, 1024)`` float32
    batch: 2.4 ms with ``ldexp``, 0.37 ms this way, on 2 CPU cores). ``|k|`` may reach
    twice the dtype's largest exponent (``2**(k // 2)`` and ``2**(k - k // 2)`` each stay
    finite)."""
    k = jnp.asarray(k, jnp.int32)
    half = k // 2
    one = jnp.ones((), a.dtype)
    return a * jnp.ldexp(one, half) * jnp.ldexp(one, k - half)


def lp_norm(v: Array, p: float, axis=-1) -> Array:
    """``||v||_p`` along ``axis``, scaled by ``max |v|`` so that neither large ``p`` nor a
    large or tiny ``v`` (gradients of logits scaled by ``1e±20`` in float32) overflows or
    underflows; exactly 0 for a zero vector. ``p = 2`` scales by a power of two near
    ``max |v|`` (exact: the same bits as the unscaled sum where that does not overflow)."""
    a = jnp.abs(v)
    m = jnp.max(a, axis=axis, keepdims=True)
    if p == 2.0:
        e = pow2_exponent(m)
        u = mul_pow2(v, -e)  # v, not |v|: the same squares
        return jnp.squeeze(jnp.ldexp(jnp.sqrt(jnp.sum(u * u, axis=axis, keepdims=True)), e), axis)
    if math.isinf(p):
        return jnp.squeeze(m, axis)
    if p == 1.0:
        return jnp.sum(a, axis=axis)
    safe = jnp.where(m > 0, m, 1)
    s = jnp.sum((a / safe) ** p, axis=axis, keepdims=True)
    return jnp.squeeze(jnp.where(m > 0, safe * s ** (1.0 / p), 0), axis)


def dual_step(F: Array, w: Array, q: float) -> Array:
    """The minimal step ``r`` (rows of ``w``, shape ``(N, D)``) with ``<w, r> = |F|``.

    ``F`` ``(N,)``, ``w`` ``(N, D)``; rows with ``w = 0`` get ``r = 0`` (callers flag them).
    """
    a = jnp.abs(w)
    m = jnp.max(a, axis=-1, keepdims=True)
    ok = m > 0
    safe_m = jnp.where(ok, m, 1)
    Fa = jnp.abs(F)[:, None]
    if q == 2.0:
        n2 = jnp.sum(w * w, axis=-1, keepdims=True)
        r = Fa * w / jnp.where(ok, n2, 1)
    elif q == 1.0:
        r = Fa * jnp.sign(w) / jnp.where(ok, jnp.sum(a, axis=-1, keepdims=True), 1)
    else:
        u = a / safe_m
        r = Fa * u ** (q - 1.0) * jnp.sign(w) / (safe_m * jnp.sum(u**q, axis=-1, keepdims=True))
    return jnp.where(ok, r, 0)


def project_ball(v: Array, radius, p: float) -> Array:
    """Project the rows of ``v`` ``(N, D)`` onto the Lp ball of ``radius`` (L2 / Linf exactly;
    other ``p`` by radial scaling, which is feasible but not the Euclidean projection)."""
    if math.isinf(p):
        return jnp.clip(v, -radius, radius)
    n = lp_norm(v, p)[:, None]
    scale = jnp.where(n > radius, radius / jnp.where(n > 0, n, 1), 1)
    return v * scale
