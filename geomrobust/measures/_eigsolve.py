"""Extreme eigenpairs of a symmetric operator: thick-restart Lanczos, written for one operator.

The solver is the matrix-free engine behind :func:`principal_curvatures` and
:func:`loss_hessian_eigs`. It works on flat vectors ``(D,)`` and an operator given as a callable
``v -> A v``; it is written for ONE operator and batched over examples with ``jax.vmap``
(``lax.while_loop`` under ``vmap`` keeps finished examples frozen: a per-example done mask).

Algorithm (Wu & Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
SIAM J. Matrix Anal. Appl. 22(2), 2000): build an orthonormal Krylov basis ``V`` of size ``m``
with full (twice-repeated Gram-Schmidt) reorthogonalisation, so that ``A Vᵀ = Vᵀ T + r e_mᵀ``
with ``T = V A Vᵀ`` (``m × m``); take the Ritz pairs ``(θ_i, u_i = Vᵀ y_i)`` of ``T``; the
residual ``||A u_i - θ_i u_i|| = ||r|| |y_{m,i}|``; keep the ``p`` wanted Ritz vectors and ``r``
and extend the basis again. Both ends of the spectrum converge at once, which is what the
largest-magnitude selection (``which="LM"``, curvatures of both signs) needs.

A Krylov space that becomes invariant (``||r|| ≈ 0``, e.g. a multiple eigenvalue as on a
sphere) is continued with a fresh random vector (from the state's key), so multiplicities are
found too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "EigResult",
    "LanczosInfo",
    "LanczosState",
    "arnoldi_step",
    "lanczos_init",
    "lanczos_restart",
    "lanczos_result",
    "lanczos_ritz",
    "lanczos_sizes",
    "lanczos_step",
    "thick_restart_lanczos",
]


class LanczosState(NamedTuple):
    """State of thick-restart Lanczos for one operator.

    basis : ``(m + 1, D)`` orthonormal rows; row ``m`` is the normalised residual direction.
    projected : ``(m, m)`` the projected matrix ``T = V A Vᵀ``.
    beta : ``()`` norm of the residual ``r`` of the last Arnoldi step.
    values, residuals : ``(num,)`` current wanted Ritz values and their residual norms.
    restarts : number of restarts done.
    done : every wanted Ritz pair has converged.
    key : PRNG key for restarts after an invariant subspace.
    """

    basis: Array
    projected: Array
    beta: Array
    values: Array
    residuals: Array
    restarts: Array
    done: Array
    key: Array


class LanczosInfo(NamedTuple):
    """Per-cycle diagnostics of :func:`lanczos_step`: the wanted Ritz values ``(num,)`` and
    their residual norms ``(num,)`` after the cycle."""

    values: Array
    residuals: Array


class EigResult(NamedTuple):
    """values ``(num,)`` (sorted as asked), vectors ``(num, D)``, residual norms ``(num,)``,
    per-value convergence ``(num,)`` and the number of restarts."""

    values: Array
    vectors: Array
    residuals: Array
    converged: Array
    restarts: Array


def _order(theta: Array, which: str) -> Array:
    if which == "LM":
        return jnp.argsort(-jnp.abs(theta), stable=True)
    if which == "LA":
        return jnp.argsort(-theta, stable=True)
    raise ValueError(f"which must be 'LM' or 'LA', got {which!r}")


def _orthogonalize(V: Array, w: Array, mask: Array) -> tuple[Array, Array]:
    """Remove from ``w`` its components on the masked rows of ``V``, twice (CGS2)."""
    h = (V @ w) * mask
    w = w - h @ V
    h2 = (V @ w) * mask
    return w - h2 @ V, h + h2


def _arnoldi_update(project, state: LanczosState, w: Array, j) -> LanczosState:
    """Arnoldi step ``j`` given ``w = A V[j]``: CGS2 against rows ``0..j``, column/row ``j``
    of ``T``, row ``j + 1`` of ``V`` (a fresh random direction orthogonal to ``V`` when the
    Krylov space became invariant), ``beta`` and the split key."""
    V, T = state.basis, state.projected
    m = T.shape[0]
    rows = jnp.arange(m + 1)
    eps = jnp.finfo(V.dtype).eps
    scale = jnp.linalg.norm(w)
    w, h = _orthogonalize(V, w, (rows <= j).astype(V.dtype))
    T = T.at[:, j].set(h[:m]).at[j, :].set(h[:m])
    beta = jnp.linalg.norm(w)
    # invariant subspace: continue with a fresh random direction orthogonal to V
    broke = beta <= 100 * eps * scale
    key, sub = jax.random.split(state.key)
    fresh = project(jax.random.normal(sub, w.shape, w.dtype))
    fresh, _ = _orthogonalize(V, fresh, (rows <= j).astype(V.dtype))
    nxt = jnp.where(broke, fresh, w)
    nxt = nxt / jnp.maximum(jnp.linalg.norm(nxt), jnp.finfo(V.dtype).tiny)
    V = V.at[j + 1].set(nxt)
    beta = jnp.where(broke, jnp.zeros_like(beta), beta)
    return state._replace(basis=V, projected=T, beta=beta, key=key)


def arnoldi_step(
    matvec: Callable[[Array], Array],
    state: LanczosState,
    j,
    *,
    project: Callable[[Array], Array] | None = None,
) -> LanczosState:
    """One Arnoldi step ``j`` (``0 <= j < m``, may be traced) of the current Krylov cycle:
    one operator call ``A V[j]``, orthogonalised twice against rows ``0..j`` of the basis
    (CGS2), filling row ``j + 1`` of ``V`` and column ``j`` of ``T``. A cycle is
    :func:`lanczos_restart`, the steps ``j = start .. m-1`` (``start`` 0 in the first cycle,
    ``keep`` after a restart) and :func:`lanczos_ritz`; :func:`lanczos_step` is that cycle
    under one ``fori_loop``, the host-driven form calls each step as its own program."""
    project = (lambda v: v) if project is None else project
    return _arnoldi_update(project, state, matvec(state.basis[j]), j)


def _extend(matvec, project, state: LanczosState, start, m: int) -> LanczosState:
    """Arnoldi steps ``j = start .. m-1`` (``beta`` of the last one)."""
    state = state._replace(beta=jnp.zeros_like(state.beta))
    return jax.lax.fori_loop(
        start, m, lambda j, s: _arnoldi_update(project, s, matvec(s.basis[j]), j), state
    )


def _ritz(basis, T, beta, which: str, m: int):
    theta, Y = jnp.linalg.eigh(0.5 * (T + T.T))
    order = _order(theta, which)
    theta, Y = theta[order], Y[:, order]
    res = jnp.abs(beta * Y[m - 1])
    return theta, Y, res


def _converged(values: Array, residuals: Array, tol: float) -> Array:
    """``||A u - θ u|| <= tol · max|θ|``: residuals relative to the spectral scale found."""
    scale = jnp.maximum(jnp.max(jnp.abs(values)), jnp.finfo(values.dtype).tiny)
    return residuals <= tol * scale


def lanczos_init(
    v0: Array,
    *,
    num: int,
    krylov_dim: int,
    key: Array,
    project: Callable[[Array], Array] | None = None,
) -> LanczosState:
    """State before the first Krylov cycle, started from ``v0`` (``(D,)``); no operator call."""
    project = (lambda v: v) if project is None else project
    m = krylov_dim
    p0 = project(v0)
    V = jnp.zeros((m + 1, v0.shape[0]), v0.dtype).at[0].set(p0 / jnp.linalg.norm(p0))
    T = jnp.zeros((m, m), v0.dtype)
    nan = jnp.full((num,), jnp.inf, v0.dtype)
    zero = jnp.zeros((), jnp.int32)
    return LanczosState(V, T, jnp.zeros((), v0.dtype), nan, nan, zero - 1, jnp.array(False), key)


def lanczos_step(
    matvec: Callable[[Array], Array],
    state: LanczosState,
    *,
    num: int,
    keep: int,
    which: str = "LM",
    tol: float,
    project: Callable[[Array], Array] | None = None,
) -> tuple[LanczosState, LanczosInfo]:
    """One Krylov cycle: the first extends ``v0`` to ``m`` vectors (``m`` operator calls); each
    later one is a thick restart keeping ``keep`` wanted Ritz vectors and the residual
    direction, then extending to ``m`` again (``m - keep`` operator calls).

    ``state.restarts`` counts restarts (``-1`` before the first cycle). The operator comes
    first, the state second (the kernel signature of docs/api.md); returns
    ``(state, LanczosInfo)``.
    """
    project = (lambda v: v) if project is None else project
    m = state.projected.shape[0]
    state = lanczos_restart(state, keep=keep, which=which)
    start = jnp.where(state.restarts < 0, 0, keep)
    state = _extend(matvec, project, state, start, m)
    return lanczos_ritz(state, num=num, which=which, tol=tol)


def lanczos_restart(state: LanczosState, *, keep: int, which: str = "LM") -> LanczosState:
    """The thick restart opening every cycle but the first (``state.restarts < 0``: returned
    unchanged): the ``keep`` wanted Ritz vectors of ``T`` and the residual direction become
    the first ``keep + 1`` rows of the basis, ``T`` their arrow-shaped projection (no
    operator call)."""
    m = state.projected.shape[0]
    first = state.restarts < 0

    def restart(basis, T, beta):
        theta, Y, _ = _ritz(basis, T, beta, which, m)
        U = Y[:, :keep].T @ basis[:m]  # (keep, D) Ritz vectors
        V = jnp.zeros_like(basis).at[:keep].set(U).at[keep].set(basis[m])
        coupling = beta * Y[m - 1, :keep]
        T = jnp.zeros_like(T).at[jnp.arange(keep), jnp.arange(keep)].set(theta[:keep])
        return V, T.at[keep, :keep].set(coupling).at[:keep, keep].set(coupling)

    V, T = jax.lax.cond(
        first, lambda b, t, _: (b, t), restart, state.basis, state.projected, state.beta
    )
    return state._replace(basis=V, projected=T)


def lanczos_ritz(
    state: LanczosState, *, num: int, which: str = "LM", tol: float
) -> tuple[LanczosState, LanczosInfo]:
    """The close of a cycle (after its Arnoldi steps): the wanted Ritz values and residual
    norms, ``done`` when all ``num`` have converged, ``restarts`` counted (no operator
    call)."""
    m = state.projected.shape[0]
    theta, _, res = _ritz(state.basis, state.projected, state.beta, which, m)
    done = _converged(theta[:num], res[:num], tol).all()
    new = state._replace(
        values=theta[:num], residuals=res[:num], restarts=state.restarts + 1, done=done
    )
    return new, LanczosInfo(theta[:num], res[:num])


def lanczos_result(state: LanczosState, *, num: int, out: int, which: str = "LM",
                   tol: float) -> EigResult:  # fmt: skip
    """The :class:`EigResult` of a state: the first ``out`` of the ``num`` wanted Ritz pairs
    (``num - out`` guard pairs must converge too, see :func:`thick_restart_lanczos`)."""
    m = state.projected.shape[0]
    theta, Y, res = _ritz(state.basis, state.projected, state.beta, which, m)
    vectors = Y[:, :out].T @ state.basis[:m]
    converged = _converged(theta[:num], res[:num], tol)
    return EigResult(theta[:out], vectors, res[:out], converged[:out], state.restarts)


def lanczos_sizes(num: int, krylov_dim: int, keep: int | None, guard: int = 0,
                  which: str = "LM") -> tuple[int, int, int]:  # fmt: skip
    """``(out, num, keep)``: the pairs returned, the pairs that must converge (``num`` plus
    ``guard``, at most ``keep``) and the Ritz vectors kept at a restart (default
    ``(num + krylov_dim) // 2``); raises ``ValueError`` unless ``out <= keep < krylov_dim``."""
    out = num
    num = min(num + guard, krylov_dim - 1)
    keep = (num + krylov_dim) // 2 if keep is None else keep
    num = min(num, keep)
    if not out <= keep < krylov_dim:
        raise ValueError(
            f"need num <= keep < krylov_dim, got num={num}, keep={keep}, krylov_dim={krylov_dim}"
        )
    _order(jnp.zeros(1), which)  # validates ``which``
    return out, num, keep


def thick_restart_lanczos(
    matvec: Callable[[Array], Array],
    v0: Array,
    *,
    num: int,
    krylov_dim: int,
    keep: int | None = None,
    which: str = "LM",
    tol: float,
    restarts: int,
    key: Array,
    project: Callable[[Array], Array] | None = None,
    guard: int = 0,
) -> EigResult:
    """The ``num`` extreme eigenpairs of a symmetric operator on ``(D,)`` vectors.

    Parameters
    ----------
    matvec : ``v -> A v`` on ``(D,)``, symmetric.
    v0 : ``(D,)`` starting vector (any nonzero vector; a random one is usual).
    num : number of eigenpairs wanted; ``num < krylov_dim <= D``.
    krylov_dim : Krylov basis size ``m`` per cycle.
    keep : Ritz vectors kept at a restart (``num <= keep < m``; default ``(num + m) // 2``).
    which : ``"LM"`` largest magnitude (both signs) or ``"LA"`` largest algebraic.
    tol : a pair is converged when ``||A u - θ u|| <= tol · max|θ|``.
    restarts : restarts after the first cycle.
    key : PRNG key (fresh directions after an invariant subspace).
    project : optional projector applied to new random directions (e.g. onto a tangent space
        that ``A`` leaves invariant, so the solver never leaves it).
    guard : extra Ritz pairs, beyond ``num``, that must converge too (not returned). A small
        residual certifies an eigenpair but not that no eigenvalue was skipped; converging a
        few more than wanted keeps an eigenvalue near the edge of a cluster from being missed
        (``num + guard <= keep``).

    Returns
    -------
    EigResult with values in the order of ``which``.
    """
    out, num, keep = lanczos_sizes(num, krylov_dim, keep, guard, which)
    state = lanczos_init(v0, num=num, krylov_dim=krylov_dim, key=key, project=project)

    def cond(s):
        return (~s.done) & (s.restarts < restarts)

    def body(s):
        return lanczos_step(matvec, s, num=num, keep=keep, which=which, tol=tol, project=project)[0]

    state = jax.lax.while_loop(cond, body, state)
    return lanczos_result(state, num=num, out=out, which=which, tol=tol)
