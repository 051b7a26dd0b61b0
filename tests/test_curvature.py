"""Boundary curvature against analytic geometry (ball, hyperplane, quadric) and dense Hessians."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import convnet, mlp
from conftest import rel_err, rtol_for

import geomrobust as gr
from geomrobust.measures._curvature import (
    PiecewiseLinearWarning,
    normal_curvature,
    normal_curvatures,
    principal_curvatures,
    random_tangents,
)
from geomrobust.measures._eigsolve import thick_restart_lanczos
from geomrobust.measures._shared_directions import shared_directions, subspace_fooling_rate
from geomrobust.ops import input_hessian, logit_difference

# Lanczos accuracy on eigenvalues (the residual tolerance is 1e-3 / 1e-6 relative; eigenvalue
# errors are about residual² / gap, so these are loose on purpose but can still fail).
EIG_RTOL = {np.dtype("float32"): 2e-3, np.dtype("float64"): 1e-7}

# the exact solvers: dense, and Lanczos in its two loop forms (the host form is the CPU default)
SOLVERS = [("dense", "auto"), ("lanczos", "host"), ("lanczos", "device")]


def ball_fn(r):
    """Class 0 inside the ball of radius r: F_1 = f_1 - f_0 = ||x|| - r."""

    def logits_fn(x):
        nx = jnp.linalg.norm(x.reshape(x.shape[0], -1), axis=-1)
        return jnp.stack([r - nx, jnp.zeros_like(nx)], -1)

    return logits_fn


def quadric_fn(A, b):
    """F_1 = ½ xᵀAx + bᵀx: Hessian A everywhere."""

    def logits_fn(x):
        x = x.reshape(x.shape[0], -1)
        F = 0.5 * jnp.einsum("ni,ij,nj->n", x, A.astype(x.dtype), x) + x @ b.astype(x.dtype)
        return jnp.stack([jnp.zeros_like(F), F], -1)

    return logits_fn


def tangent_reference(A, g, num):
    """Eigenvalues of P A P/||g|| restricted to n⊥ (orthonormal tangent basis from an SVD)."""
    g = np.asarray(g, np.float64)
    n = g / np.linalg.norm(g)
    B = np.linalg.svd(np.eye(len(n)) - np.outer(n, n))[0][:, : len(n) - 1]
    ev = np.linalg.eigvalsh(B.T @ A @ B / np.linalg.norm(g))
    return ev[np.argsort(-np.abs(ev), kind="stable")][:num]


BALL_R = 2.5
BALL = ball_fn(BALL_R)
QUAD_D = 40
_rng = np.random.default_rng(0)
QUAD_A = np.linalg.qr(_rng.standard_normal((QUAD_D, QUAD_D)))[0] @ np.diag(
    np.concatenate([[-4.0, 3.0, -2.5, 2.0], np.linspace(-0.3, 0.3, QUAD_D - 4)])
)
QUAD_A = QUAD_A @ np.linalg.qr(np.random.default_rng(0).standard_normal((QUAD_D, QUAD_D)))[0].T
QUAD_B = _rng.standard_normal(QUAD_D)
QUAD = quadric_fn(jnp.asarray(QUAD_A), jnp.asarray(QUAD_B))


def labels(n):
    return jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)


@pytest.mark.parametrize(("method", "loop"), SOLVERS)
def test_ball_has_curvature_one_over_r(dtype, key, method, loop):
    r, d, n = BALL_R, 24, 3
    u = jax.random.normal(key, (n, 4, 6), dtype)
    z = r * u / jnp.linalg.norm(u.reshape(n, -1), axis=-1)[:, None, None]
    y, k = labels(n)
    c = principal_curvatures(BALL, z, y, k, num=6, key=key, method=method, loop=loop)
    assert c.values.shape == (n, 6) and c.values.dtype == dtype
    assert c.directions.shape == (n, 6, 4, 6) and c.directions.dtype == dtype
    assert bool(c.converged.all())
    np.testing.assert_allclose(c.values, 1.0 / r, rtol=EIG_RTOL[np.dtype(dtype)])
    # outward normal, directions are unit and tangent
    np.testing.assert_allclose(
        jnp.sum(c.normal * z, axis=(1, 2)), r, rtol=10 * rtol_for(dtype), atol=0
    )
    dirs = c.directions.reshape(n, 6, d)
    nrm = c.normal.reshape(n, 1, d)
    assert float(jnp.abs(jnp.sum(dirs * nrm, -1)).max()) < 50 * rtol_for(dtype)
    np.testing.assert_allclose(jnp.linalg.norm(dirs, axis=-1), 1.0, rtol=50 * rtol_for(dtype))


@pytest.mark.parametrize(("method", "loop"), SOLVERS)
def test_hyperplane_is_flat(dtype, key, method, loop):
    d, n = 30, 2
    w = jax.random.normal(key, (d, 2), dtype)
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    z = jax.random.normal(jax.random.fold_in(key, 1), (n, d), dtype)
    y, k = labels(n)
    normal = w[:, 1] - w[:, 0]  # F_k(z) = z . (w_k - w_y): project z onto the hyperplane
    z = z - (z @ normal)[:, None] * normal / (normal @ normal)
    # an exactly zero Hessian: the exact curvature of a hyperplane is 0, and at a point of a
    # piecewise-linear network it is 0 too but meaningless; both are flagged, not converged
    with pytest.warns(PiecewiseLinearWarning, match="2 of 2 points"):
        c = principal_curvatures(logits_fn, z, y, k, num=4, key=key, method=method, loop=loop)
    assert c.values.dtype == dtype
    assert bool((c.status == gr.Status.PIECEWISE_LINEAR).all()) and not bool(c.converged.any())
    assert bool(np.all(np.isnan(np.asarray(c.values))))  # never a plausible number
    with pytest.warns(DeprecationWarning, match="PIECEWISE_LINEAR"):
        assert bool(c.piecewise_linear.all())  # the field of one release ago


@pytest.mark.parametrize(("method", "loop"), SOLVERS)
def test_quadric_matches_dense_tangent_spectrum(dtype, key, method, loop):
    d, n, num, A, b = QUAD_D, 3, 6, QUAD_A, QUAD_B
    z = 0.2 * jax.random.normal(key, (n, d), dtype)
    y, k = labels(n)
    # z are generic points: the level sets of F_k through them (not on F_k = 0)
    c = principal_curvatures(
        QUAD, z, y, k, num=num, key=key, method=method, loop=loop, boundary_tol=np.inf
    )
    assert bool(c.converged.all()) and c.values.dtype == dtype
    for i in range(n):
        g = A @ np.asarray(z[i], np.float64) + b
        ref = tangent_reference(A, g, num)
        assert rel_err(c.values[i], ref) < EIG_RTOL[np.dtype(dtype)]
        # eigen-equation of the shape operator in the ambient space
        nrm = g / np.linalg.norm(g)
        P = np.eye(d) - np.outer(nrm, nrm)
        S = P @ A @ P / np.linalg.norm(g)
        U = np.asarray(c.directions[i], np.float64)
        resid = np.linalg.norm(U @ S - np.asarray(c.values[i])[:, None] * U, axis=1)
        assert resid.max() < 20 * EIG_RTOL[np.dtype(dtype)] * np.abs(ref).max()


def test_curvatures_of_network_match_dense_hessian(dtype):
    key = jax.random.key(0)
    shape, num = (6, 6, 2), 5
    fn = convnet(key, shape, 4, dtype=dtype)
    z = jax.random.normal(jax.random.fold_in(key, 2), (2, *shape), dtype)
    y = jnp.array([0, 2])
    k = jnp.array([1, 3])
    kw = dict(num=num, key=key, boundary_tol=np.inf)  # generic z: the level sets through z
    lz = principal_curvatures(fn, z, y, k, method="lanczos", krylov_dim=30, **kw)
    dn = principal_curvatures(fn, z, y, k, method="dense", **kw)
    hess = jax.jit(jax.vmap(lambda zi, yi, ki: input_hessian(logit_difference(fn, yi, ki), zi)))
    grad = jax.jit(jax.vmap(lambda zi, yi, ki: jax.grad(logit_difference(fn, yi, ki))(zi)))
    Hs, gs = hess(z, y, k), grad(z, y, k)
    for i in range(2):
        H = np.asarray(Hs[i], np.float64)
        g = np.asarray(gs[i], np.float64).ravel()
        ref = tangent_reference(H, g, num)
        assert rel_err(dn.values[i], ref) < 100 * rtol_for(dtype)
        if lz.converged[i]:
            assert rel_err(lz.values[i], ref) < EIG_RTOL[np.dtype(dtype)]
    assert bool(lz.converged.any())


def test_normal_curvature_equals_quadratic_form(dtype):
    key = jax.random.key(1)
    shape = (12,)
    fn = mlp(key, shape, 3, dtype=dtype)
    z = jax.random.normal(jax.random.fold_in(key, 3), (3, *shape), dtype)
    y, k = jnp.array([0, 1, 2]), jnp.array([1, 2, 0])
    u = jax.random.normal(jax.random.fold_in(key, 4), z.shape, dtype)
    res = normal_curvature(fn, z, y, k, u, boundary_tol=np.inf)  # level sets through z
    kappa = res.values
    assert kappa.shape == (3,) and kappa.dtype == dtype
    assert res.status.dtype == np.int8 and bool(np.all(res.status == gr.Status.SUCCESS))
    np.testing.assert_array_equal(res.stderr, 0)
    hess = jax.jit(jax.vmap(lambda zi, yi, ki: input_hessian(logit_difference(fn, yi, ki), zi)))
    grad = jax.jit(jax.vmap(lambda zi, yi, ki: jax.grad(logit_difference(fn, yi, ki))(zi)))
    Hs, gs = hess(z, y, k), grad(z, y, k)
    for i in range(3):
        H = np.asarray(Hs[i], np.float64)
        g = np.asarray(gs[i], np.float64)
        n = g / np.linalg.norm(g)
        t = np.asarray(u[i], np.float64)
        t = t - n * (n @ t)
        t /= np.linalg.norm(t)
        ref = t @ H @ t / np.linalg.norm(g)
        np.testing.assert_allclose(kappa[i], ref, rtol=100 * rtol_for(dtype), atol=0)


def test_profiles_principal_vs_random():
    dtype, key = jnp.float64, jax.random.key(0)
    d = 30
    rng = np.random.default_rng(0)
    A = np.diag(np.concatenate([[5.0, -4.0], np.zeros(d - 2)]))
    fn = quadric_fn(jnp.asarray(A), jnp.asarray(rng.standard_normal(d)))
    z = jnp.asarray(rng.standard_normal((2, d)) * 0.1, dtype)
    y, k = labels(2)
    off = dict(boundary_tol=np.inf)  # generic z: the level sets through z
    c = principal_curvatures(fn, z, y, k, num=3, key=key, method="dense", **off)
    along = normal_curvatures(fn, z, y, k, c.directions, **off).values
    np.testing.assert_allclose(along, c.values, rtol=1e-8, atol=1e-12)
    rand = random_tangents(c.normal, 200, key=key)
    assert float(jnp.abs(jnp.sum(rand * c.normal[:, None], -1)).max()) < 1e-12
    prof = normal_curvatures(fn, z, y, k, rand, **off).values
    # random tangent directions see the mean curvature tr(S)/(D-1), much less than |κ_max|
    assert float(jnp.abs(prof).mean()) < 0.3 * float(jnp.abs(c.values[:, 0]).min())
    with pytest.raises(ValueError, match="parallel"):
        normal_curvature(fn, z, y, k, c.normal, **off)
    with pytest.raises(ValueError, match="2 of 2 points z are not on the"):
        normal_curvature(fn, z, y, k, rand[:, 0])


def test_lanczos_finds_both_ends_and_multiplicity(dtype, key):
    d = 60
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    spec = np.concatenate([[-7.0, -7.0, 6.0, 5.0], rng.uniform(-1, 1, d - 4)])
    A = jnp.asarray(Q @ np.diag(spec) @ Q.T, dtype)
    v0 = jax.random.normal(key, (d,), dtype)
    tol = 1e-6 if dtype == jnp.float64 else 1e-4
    res = _solve(A, v0, key, tol, num=4, which="LM")
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.values, [-7, -7, 6, 5], rtol=10 * tol)
    la = _solve(A, v0, key, tol, num=2, which="LA")
    np.testing.assert_allclose(la.values, [6, 5], rtol=10 * tol)


@partial(jax.jit, static_argnames=("num", "which"))
def _solve(A, v0, key, tol, *, num, which):
    return thick_restart_lanczos(
        lambda v: A @ v, v0, num=num, krylov_dim=20, which=which, tol=tol, restarts=50, key=key
    )


def test_jit_vmap_and_chunking_agree():
    dtype, key = jnp.float32, jax.random.key(0)
    fn = BALL
    u = jax.random.normal(key, (5, 10), dtype)
    z = BALL_R * u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    y, k = labels(5)
    kw = dict(num=3, key=key, method="lanczos", krylov_dim=8)
    a = principal_curvatures(fn, z, y, k, **kw)
    b = principal_curvatures(fn, z, y, k, chunk_size=2, **kw)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    dense = dict(num=3, key=key, method="dense")
    c = jax.jit(lambda zz: principal_curvatures(fn, zz, y, k, **dense).values)(z)
    np.testing.assert_allclose(a.values, c, rtol=1e-5)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_num_directions_and_ids(method):
    """Fewer directions leave the device (same values, the first directions); ``ids`` sets
    each point's Lanczos start, so a shifted slice with its global ids gives the same bits."""
    key = jax.random.key(0)
    fn = mlp(key, (6,), 3)
    z = jax.random.normal(jax.random.fold_in(key, 1), (7, 6), jnp.float32)
    y, k = jnp.zeros(7, jnp.int32), jnp.ones(7, jnp.int32)
    kw = dict(num=3, key=key, method=method, krylov_dim=5, chunk_size=3)
    if method == "dense":
        kw.pop("krylov_dim")
    full = principal_curvatures(fn, z, y, k, **kw)
    for nd in (0, 1, 3):
        part = principal_curvatures(fn, z, y, k, num_directions=nd, **kw)
        assert part.directions.shape == (7, nd, 6)
        np.testing.assert_array_equal(part.values, full.values)
        np.testing.assert_array_equal(part.directions, full.directions[:, :nd])
    tail = principal_curvatures(fn, z[4:], y[4:], k[4:], ids=np.arange(4, 7), **kw)
    np.testing.assert_allclose(tail.values, full.values[4:], rtol=1e-6)
    with pytest.raises(ValueError, match="num_directions"):
        principal_curvatures(fn, z, y, k, num_directions=4, **kw)
    with pytest.raises(ValueError, match="ids must be integers"):
        principal_curvatures(fn, z, y, k, ids=np.arange(6), **kw)


def test_bad_inputs_raise():
    fn = ball_fn(1.0)
    z = jnp.ones((2, 5))
    y, k = labels(2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num"):
        principal_curvatures(fn, z, y, k, num=5, key=key)
    with pytest.raises(ValueError, match="method"):
        principal_curvatures(fn, z, y, k, num=2, key=key, method="svd")
    with pytest.raises(ValueError, match="differ"):
        principal_curvatures(fn, z, y, y, num=2, key=key)
    with pytest.raises(ValueError, match="z"):
        principal_curvatures(fn, jnp.ones(5), y, k, num=2, key=key)
    with pytest.raises(ValueError, match="shape of z"):
        normal_curvature(fn, z, y, k, jnp.ones((2, 4)))


def cylinder_fn(r):
    """F_1 = ||(x_0, x_1)|| - r: a boundary curved only in the first two coordinates."""

    def logits_fn(x):
        x = x.reshape(x.shape[0], -1)
        F = jnp.linalg.norm(x[:, :2], axis=-1) - r
        return jnp.stack([jnp.zeros_like(F), F], -1)

    return logits_fn


def test_shared_directions_of_a_cylinder(dtype, key):
    d, n = 20, 40
    p = jax.random.normal(key, (n, d), dtype)
    z = p.at[:, :2].set(p[:, :2] / jnp.linalg.norm(p[:, :2], axis=-1, keepdims=True))
    y, k = labels(n)
    c = principal_curvatures(cylinder_fn(1.0), z, y, k, num=2, key=key, method="dense")
    np.testing.assert_allclose(c.values[:, 0], 1.0, rtol=100 * rtol_for(dtype))  # y inside
    np.testing.assert_allclose(c.values[:, 1], 0.0, atol=100 * rtol_for(dtype))
    normals = shared_directions(c.normal)
    assert normals.basis.shape == (d, min(d, n)) and normals.singular_values.dtype == dtype
    np.testing.assert_allclose(jnp.sum(normals.singular_values**2), n, rtol=10 * rtol_for(dtype))
    assert float(normals.normalized[2]) < 1e3 * rtol_for(dtype)  # normals span only 2 dims
    np.testing.assert_allclose(normals.explained[1], 1.0, rtol=10 * rtol_for(dtype))
    span = normals.basis[:, :2]
    np.testing.assert_allclose(jnp.linalg.norm(span[:2], axis=0), 1.0, rtol=100 * rtol_for(dtype))
    top = shared_directions(c.directions[:, :1], input_shape=(d,))
    assert float(top.normalized[2]) < 1e3 * rtol_for(dtype)  # top curved direction: also in S


def test_fooling_rate_in_shared_subspace_beats_isotropic(key):
    d, n = 100, 8
    fn = cylinder_fn(1.0)
    x = jnp.zeros((n, d)).at[:, 2:].set(jax.random.normal(key, (n, d - 2)))
    basis = jnp.eye(d)[:, :2]
    fr = subspace_fooling_rate(fn, x, basis, eps=2.0, num_samples=32, key=key)
    assert fr.per_example_subspace.shape == (n,)
    assert float(fr.subspace) == 1.0  # every draw in S leaves the unit disc
    assert float(fr.isotropic) < 0.1  # ||P_S δ|| ≈ 2 sqrt(2/D) ≈ 0.28 < 1
    with pytest.raises(ValueError, match="orthonormal"):
        subspace_fooling_rate(fn, x, 2 * basis, eps=1.0, key=key)


def test_docstring_examples_run():
    import doctest

    import geomrobust.measures._curvature as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_normal_curvature_return_stderr_deprecated():
    """``return_stderr`` works one release (the result always carries ``stderr``)."""
    fn = BALL
    z = jnp.array([[BALL_R, 0.0, 0.0, 0.0]])
    u = jnp.array([[0.0, 1.0, 0.0, 0.0]])
    y, k = jnp.array([0]), jnp.array([1])
    with pytest.warns(DeprecationWarning, match="stderr field"):
        res = normal_curvature(fn, z, y, k, u, return_stderr=True)
    np.testing.assert_allclose(res.values, [1 / BALL_R], rtol=1e-6)
    np.testing.assert_array_equal(res.stderr, [0.0])
