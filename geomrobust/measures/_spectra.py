"""Input-space spectra of the loss: top Hessian eigenvalues, SLQ densities, Hutchinson traces, CURE.

For a classifier ``f`` and label ``y``, ``ℓ(x) = -log softmax(f(x))_y`` (cross-entropy) and
``H_ℓ(x) = ∇²_x ℓ(x)``. Adversarially robust models have a much flatter ``H_ℓ`` (smaller top
eigenvalues); the CURE regularizer penalises the finite-difference curvature along the sign of
the gradient,

    c(x) = ||∇ℓ(x + h z) - ∇ℓ(x)||,    z = sign(∇ℓ(x)) / ||sign(∇ℓ(x))||,

and uses ``λ c(x)²``.

References
----------
Moosavi-Dezfooli, Fawzi, Uesato, Frossard, "Robustness via curvature regularization, and vice
versa" (CURE), CVPR 2019. Stochastic Lanczos quadrature: Ubaru, Chen, Saad, SIAM J. Matrix
Anal. Appl. 38(4), 2017; Ghorbani, Krishnan, Xiao, ICML 2019. Hutchinson, "A stochastic
estimator of the trace of the influence matrix", 1989.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from matfree import decomp, stochtrace

from geomrobust._deprecation import deprecated_alias, renamed
from geomrobust._status import STATUS_DTYPE, Status
from geomrobust._validation import (
    check_batch,
    check_classifier,
    check_labels,
    check_positive,
    is_concrete,
)
from geomrobust.engine import CHUNK_SIZE, run_program
from geomrobust.models import as_classifier
from geomrobust.ops import hvp_operator, input_hessian
from geomrobust.search._loop import loop_form

from ._curvature import AUTO_DENSE_MAX_DIM, _check_scale, _guard
from ._driver import default_tol
from ._eigsolve import lanczos_init, lanczos_result, lanczos_sizes, thick_restart_lanczos
from ._lanczos_host import LanczosProblem, host_lanczos
from ._smoothed import cross_fitted, gradient_samples

__all__ = [
    "HessianEigs",
    "SpectralQuadrature",
    "cross_entropy_at",
    "cure_curvature",
    "hutchinson_trace",
    "loss_hessian_eigs",
    "loss_hessian_slq",
    "loss_hessian_trace",
    "slq",
    "spectral_density",
]


class HessianEigs(NamedTuple):
    """values ``(N, num)`` descending, ``nan`` where a value did not converge; vectors
    ``(N, num, *s)`` unit eigenvectors; converged ``(N,)`` (``status == Status.SUCCESS``);
    residuals ``(N, num)`` (0 when dense); stderr ``(N, num)`` standard errors at a scale
    (0 when exact); status ``(N,)`` int8 :class:`geomrobust.Status`: ``NONFINITE`` (a
    non-finite value), ``MAX_STEPS`` (a Lanczos value unconverged after ``restarts``) or
    ``SUCCESS``. ``value_converged`` (``isfinite(values)``) is a deprecated property."""

    values: Array
    vectors: Array
    converged: Array
    residuals: Array
    stderr: Array
    status: Array

    @property
    def value_converged(self) -> Array:
        """Deprecated: ``isfinite(values)`` (unconverged values are ``nan``)."""
        deprecated_alias("HessianEigs.value_converged", "isfinite(HessianEigs.values)")
        return jnp.isfinite(self.values)


def _eigs(values, vectors, value_converged, residuals, stderr) -> HessianEigs:
    """One example's :class:`HessianEigs` from its kernel's output."""
    finite = jnp.all(jnp.isfinite(values) & jnp.isfinite(stderr))
    converged = jnp.all(value_converged)
    status = jnp.where(
        ~finite, Status.NONFINITE, jnp.where(converged, Status.SUCCESS, Status.MAX_STEPS)
    ).astype(STATUS_DTYPE)
    return HessianEigs(
        jnp.where(value_converged, values, jnp.nan), vectors, converged, residuals, stderr,
        status,
    )  # fmt: skip


class SpectralQuadrature(NamedTuple):
    """Gauss quadrature of the spectral measure ``(1/D) Σ_i δ(t - λ_i)`` from Lanczos.

    nodes, weights : ``(..., P, m)`` for ``P`` probes and ``m`` Lanczos steps; the weights of
    each probe sum to 1, so ``E[Σ_j w_j φ(θ_j)] = tr φ(A) / D`` for any polynomial ``φ`` of
    degree ``< 2m``.
    """

    nodes: Array
    weights: Array


def cross_entropy_at(logits_fn: Callable[[Array], Array], y) -> Callable[[Array], Array]:
    """``x -> -log softmax(f(x))_y`` for ONE example ``x``."""

    def loss(xi: Array) -> Array:
        return -jax.nn.log_softmax(logits_fn(xi[None])[0])[y]

    return loss


def _validate(logits_fn, x, y):
    check_batch(x, "x")
    if is_concrete(x):
        K = check_classifier(logits_fn, x)
        check_labels(y, K, x.shape[0], "y")


# ----------------------------------------------------------------------- top eigenvalues


@renamed(max_restarts="restarts")
def loss_hessian_eigs(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    num: int = 10,
    key: Array,
    method: str = "auto",
    tol: float | None = None,
    krylov_dim: int | None = None,
    keep: int | None = None,
    restarts: int = 30,
    scale: float | None = None,
    num_samples: int = 256,
    loop: str = "auto",
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> HessianEigs:
    """Largest (algebraic) eigenvalues of ``∇²_x ℓ(x)`` for each example, descending.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, :class:`geomrobust.Classifier`,
        NNX or Equinox module (see :func:`geomrobust.as_classifier`).
    x : ``(N, *s)``; y : ``(N,)`` labels of the cross-entropy.
    num : eigenvalues per example, ``num <= D``.
    key : PRNG key (Lanczos starts; example ``i`` uses ``fold_in(key, i)``).
    method : ``"dense"`` (``jax.hessian`` + ``eigh``), ``"lanczos"`` (matrix-free thick-restart
        Lanczos, largest algebraic) or ``"auto"`` (dense for ``D <= AUTO_DENSE_MAX_DIM``).
    tol, krylov_dim, keep, restarts, chunk_size, devices, progress : as in
        :func:`geomrobust.measures.principal_curvatures`.
    scale, num_samples : ``scale=σ``: the top eigenvalues of the Hessian of the
        Gaussian-smoothed loss ``E[ℓ(x + σ ε)]`` from ``num_samples`` antithetic gradient
        samples (Stein's identity; directions from one half of the samples, values along
        them from the other, with standard errors), as in
        :func:`geomrobust.measures.principal_curvatures`; ``num <= num_samples``.
    loop : ``"auto"``, ``"host"`` or ``"device"``: how Lanczos is driven, as in
        :func:`geomrobust.measures.principal_curvatures`.

    Returns
    -------
    HessianEigs, dtype of ``x``.
    """
    clf = as_classifier(logits_fn)
    _validate(clf, x, y)
    d = int(np.prod(x.shape[1:]))
    if not isinstance(num, int | np.integer) or not 1 <= num <= d:
        raise ValueError(f"num must be an integer in [1, D] = [1, {d}], got {num!r}")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}")
    m = min(d, max(2 * num + 20, 3 * num)) if krylov_dim is None else int(krylov_dim)
    if method == "auto":
        method = "dense" if (d <= AUTO_DENSE_MAX_DIM or m <= num + 1) else "lanczos"
    if method == "lanczos":
        if not num < m <= d:
            raise ValueError(f"krylov_dim must lie in ({num}, {d}] (num < m <= D), got {m}")
        keep_ = None if keep is None else int(keep)
        settings = (num, m, keep_, default_tol(x.dtype, tol), int(restarts))
    else:
        settings = (num,)
    loop_form(loop)  # validates ``loop`` before any compilation
    if scale is not None:
        sigma, m_samples = _check_scale(scale, num_samples, num)
        program = partial(_smoothed_loss_eigs_program, num=int(num), num_samples=m_samples)
        shared = (clf, key, jnp.asarray(sigma, x.dtype))
    elif method == "lanczos" and loop_form(loop, clf, x, y, key) == "host":
        program = partial(_loss_eigs_host, settings=settings)
        shared = (clf, key)
    else:
        program = partial(_loss_eigs_program, method=method, settings=settings)
        shared = (clf, key)
    return run_program(
        program, shared, (x, y, jnp.arange(x.shape[0])), chunk_size=chunk_size,
        devices=devices, progress=progress, desc="loss hessian",
    )  # fmt: skip


@partial(jax.jit, static_argnames=("num", "num_samples"))
def _smoothed_loss_eigs_program(clf, key, sigma, xc, yc, idx, *, num, num_samples):
    """Top eigenpairs of the smoothed loss Hessian for a chunk, one example at a time."""

    def one(a):
        xi, yi, i = a

        def grad_batch(pts):
            return jax.grad(lambda p: -jnp.sum(jax.nn.log_softmax(clf(p))[:, yi]))(pts)

        _, d, e = gradient_samples(grad_batch, xi, jax.random.fold_in(key, i), sigma,
                                   num_samples)  # fmt: skip
        vals, se, vecs = cross_fitted(d, e, None, num, "LA")
        ok = jnp.isfinite(vals) & jnp.isfinite(se)
        zeros = jnp.zeros((num,), xi.dtype)
        return _eigs(vals, vecs.reshape(num, *xi.shape), ok, zeros, se)

    return jax.lax.map(one, (xc, yc, idx))


@partial(jax.jit, static_argnames=("method", "settings"))
def _loss_eigs_program(clf, key, xc, yc, idx, *, method, settings):
    """Top eigenpairs of the loss Hessian for a chunk (one compilation per architecture)."""

    def dense(xi, yi, _key):
        (num,) = settings
        vals, vecs = jnp.linalg.eigh(input_hessian(cross_entropy_at(clf, yi), xi))
        vals, vecs = vals[::-1][:num], vecs[:, ::-1][:, :num].T
        ok = jnp.all(jnp.isfinite(vals))
        zeros = jnp.zeros((num,), xi.dtype)
        return _eigs(vals, vecs.reshape(num, *xi.shape), jnp.full((num,), ok), zeros, zeros)

    def lanczos(xi, yi, key):
        num, m, keep, tol, restarts = settings
        op = hvp_operator(cross_entropy_at(clf, yi), xi)
        k0, k1 = jax.random.split(key)
        res = thick_restart_lanczos(
            lambda v: op(v.reshape(xi.shape)).ravel(),
            jax.random.normal(k0, (xi.size,), xi.dtype),
            num=num, krylov_dim=m, keep=keep, which="LA", tol=tol, restarts=restarts,
            key=k1, guard=_guard(num),
        )  # fmt: skip
        vc = res.converged & jnp.isfinite(res.values)
        vecs = res.vectors.reshape(num, *xi.shape)
        return _eigs(res.values, vecs, vc, res.residuals, jnp.zeros_like(res.values))

    one = lanczos if method == "lanczos" else dense
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    return jax.vmap(one)(xc, yc, keys)


class _LossData(NamedTuple):
    """The per-example arrays of the host form's loss Hessians."""

    x: Array
    y: Array


def _summed_cross_entropy(logits_fn, y):
    """``X -> Σ_i ℓ(x_i, y_i)``, the cross-entropies of a batch summed: its gradient holds
    every example's input gradient (the examples do not interact)."""

    def total(X):
        logp = jax.nn.log_softmax(logits_fn(X))
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], 1))

    return total


def _loss_linearize(clf, data: _LossData):
    """The Hessians of the chunk's losses, linearized at its examples: one batched
    forward-over-reverse linearization of ``Σ_i ℓ_i`` (block diagonal: examples do not
    interact)."""
    return jax.linearize(jax.grad(_summed_cross_entropy(clf, data.y)), data.x)[1]


def _loss_apply(data: _LossData, hvp, V):
    return hvp(V.reshape(data.x.shape)).reshape(V.shape)


_LOSS_HESSIANS = LanczosProblem(_loss_linearize, _loss_apply, None)


@partial(jax.jit, static_argnames="settings")
def _loss_host_start(key, xc, idx, *, settings):
    """The Lanczos states of a chunk, started as in the device form."""
    num, m, keep, _, _ = settings
    _, num_, _ = lanczos_sizes(num, m, keep, _guard(num), "LA")
    d = int(np.prod(xc.shape[1:]))

    def init(i):
        k0, k1 = jax.random.split(jax.random.fold_in(key, i))
        v0 = jax.random.normal(k0, (d,), xc.dtype)
        return lanczos_init(v0, num=num_, krylov_dim=m, key=k1)

    return jax.vmap(init)(idx)


@partial(jax.jit, static_argnames="settings")
def _loss_host_finish(state, xc, *, settings):
    num, m, keep, tol, _ = settings
    _, num_, _ = lanczos_sizes(num, m, keep, _guard(num), "LA")

    def one(s):
        res = lanczos_result(s, num=num_, out=num, which="LA", tol=tol)
        vc = res.converged & jnp.isfinite(res.values)
        vecs = res.vectors.reshape(num, *xc.shape[1:])
        return _eigs(res.values, vecs, vc, res.residuals, jnp.zeros_like(res.values))

    return jax.vmap(one)(state)


def _loss_eigs_host(clf, key, xc, yc, idx, *, settings):
    """Top eigenpairs of the loss Hessians of a chunk, Lanczos driven from the host
    (:mod:`geomrobust.measures._lanczos_host`)."""
    num, m, keep, tol, restarts = settings
    state = _loss_host_start(key, xc, idx, settings=settings)
    _, num_, keep_ = lanczos_sizes(num, m, keep, _guard(num), "LA")
    state = host_lanczos(_LOSS_HESSIANS, clf, _LossData(xc, yc), state, num=num_, keep=keep_,
                         which="LA", tol=tol, restarts=restarts)  # fmt: skip
    return _loss_host_finish(state, xc, settings=settings)


# ----------------------------------------------------------- stochastic trace and density


def hutchinson_trace(
    matvec: Callable[[Array], Array], v_like: Array, *, num_probes: int, key: Array
) -> Array:
    """Hutchinson estimate ``(1/P) Σ_p v_pᵀ A v_p`` of ``tr A`` with Rademacher probes.

    ``matvec`` acts on arrays shaped like ``v_like``; unbiased, variance
    ``2 Σ_{i≠j} A_ij² / P``. Built on ``matfree.stochtrace``.
    """
    sampler = stochtrace.sampler_signs(v_like, num=num_probes)
    estimate = stochtrace.estimator_monte_carlo(stochtrace.monte_carlo_trace(), sampler)
    return estimate(matvec, key)


@renamed(num_steps="steps")
def slq(
    matvec: Callable[[Array], Array],
    v_like: Array,
    *,
    num_probes: int,
    steps: int,
    key: Array,
) -> SpectralQuadrature:
    """Stochastic Lanczos quadrature of the spectral measure of a symmetric operator.

    For each Rademacher probe ``v``, ``steps`` Lanczos steps (full reorthogonalisation,
    ``matfree.decomp.tridiag_sym``) from ``v/||v||`` give ``T = Y diag(θ) Yᵀ``; the nodes are
    ``θ`` and the weights ``Y_{0j}²``. Averaged over probes, the quadrature estimates
    ``(1/D) Σ_i φ(λ_i)``; :func:`spectral_density` smooths it. Requires ``steps <= D``.
    """
    d = int(np.prod(v_like.shape))
    if not 1 <= steps <= d:
        raise ValueError(f"steps must lie in [1, D] = [1, {d}], got {steps}")
    shape = v_like.shape
    tridiag = decomp.tridiag_sym(steps, materialize=True, reortho="full")

    def flat(v):
        return matvec(v.reshape(shape)).ravel()

    def one(k):
        v = jax.random.rademacher(k, (d,), v_like.dtype)
        T = tridiag(flat, v).J_small
        theta, Y = jnp.linalg.eigh(T)
        return theta, Y[0] ** 2

    nodes, weights = jax.vmap(one)(jax.random.split(key, num_probes))
    return SpectralQuadrature(nodes, weights)


def spectral_density(quadrature: SpectralQuadrature, grid: Array, *, sigma: float) -> Array:
    """Gaussian-smoothed spectral density on ``grid`` (``(G,)``): ``(..., G)``.

    ``ρ(t) = mean_p Σ_j w_pj N(t; θ_pj, σ²)``; integrates to 1 over the real line.
    """
    check_positive(sigma, "sigma")
    t = jnp.asarray(grid, quadrature.nodes.dtype)
    diff = t - quadrature.nodes[..., None]  # (..., P, m, G)
    kern = jnp.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return jnp.mean(jnp.sum(quadrature.weights[..., None] * kern, axis=-2), axis=-2)


def loss_hessian_trace(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    num_probes: int = 32,
    key: Array,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> Array:
    """Hutchinson estimates of ``tr ∇²_x ℓ(x)`` per example, ``(N,)`` (example ``i`` uses
    ``fold_in(key, i)``); ``chunk_size``, ``devices``, ``progress`` as in
    :func:`geomrobust.measures.principal_curvatures`."""
    clf = as_classifier(logits_fn)
    _validate(clf, x, y)
    program = partial(_loss_trace_program, num_probes=int(num_probes))
    return run_program(
        program, (clf, key), (x, y, jnp.arange(x.shape[0])), chunk_size=chunk_size,
        devices=devices, progress=progress, desc="hutchinson",
    )  # fmt: skip


@partial(jax.jit, static_argnames="num_probes")
def _loss_trace_program(clf, key, xc, yc, idx, *, num_probes):
    def one(xi, yi, k):
        op = hvp_operator(cross_entropy_at(clf, yi), xi)
        return hutchinson_trace(op, xi, num_probes=num_probes, key=k)

    return jax.vmap(lambda a, b, i: one(a, b, jax.random.fold_in(key, i)))(xc, yc, idx)


@renamed(num_steps="steps")
def loss_hessian_slq(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    num_probes: int = 8,
    steps: int = 30,
    key: Array,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> SpectralQuadrature:
    """SLQ of ``∇²_x ℓ(x)`` per example: nodes and weights ``(N, P, m)`` (see :func:`slq`);
    ``chunk_size``, ``devices``, ``progress`` as in
    :func:`geomrobust.measures.principal_curvatures`."""
    clf = as_classifier(logits_fn)
    _validate(clf, x, y)
    d = int(np.prod(x.shape[1:]))
    if not 1 <= steps <= d:
        raise ValueError(f"steps must lie in [1, D] = [1, {d}], got {steps}")
    program = partial(_loss_slq_program, num_probes=int(num_probes), steps=int(steps))
    return run_program(
        program, (clf, key), (x, y, jnp.arange(x.shape[0])), chunk_size=chunk_size,
        devices=devices, progress=progress, desc="slq",
    )  # fmt: skip


@partial(jax.jit, static_argnames=("num_probes", "steps"))
def _loss_slq_program(clf, key, xc, yc, idx, *, num_probes, steps):
    def one(xi, yi, k):
        op = hvp_operator(cross_entropy_at(clf, yi), xi)
        return slq(op, xi, num_probes=num_probes, steps=steps, key=k)

    return jax.vmap(lambda a, b, i: one(a, b, jax.random.fold_in(key, i)))(xc, yc, idx)


# --------------------------------------------------------------------------------- CURE


def cure_curvature(
    logits_fn: Callable[[Array], Array], x: Array, y: Array, *, h: float = 1e-2
) -> Array:
    """CURE finite-difference curvature ``||∇ℓ(x + h z) - ∇ℓ(x)||`` per example, ``(N,)``.

    ``z = sign(∇ℓ(x)) / ||sign(∇ℓ(x))||`` (a unit vector, held constant: no gradient flows
    through it), so for small ``h`` the value is about ``h ||∇²ℓ(x) z||``. The CURE regulariser
    is ``λ`` times its square. Two forward/backward passes over the batch; differentiable in
    the classifier's parameters, usable inside a training loss.
    """
    check_batch(x, "x")
    check_positive(h, "h")

    total_loss = _summed_cross_entropy(logits_fn, y)
    g = jax.grad(total_loss)(x)
    s = jax.lax.stop_gradient(jnp.sign(g))
    axes = tuple(range(1, x.ndim))
    z = s / jnp.maximum(jnp.sqrt(jnp.sum(s * s, axis=axes, keepdims=True)), 1.0)
    g2 = jax.grad(total_loss)(x + jnp.asarray(h, x.dtype) * z)
    return jnp.sqrt(jnp.sum((g2 - g) ** 2, axis=axes))
