"""Input-space loss spectra against dense Hessians: top eigenvalues, SLQ, Hutchinson, CURE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import convnet, mlp
from conftest import rel_err, rtol_for

from geomrobust.measures._spectra import (
    cross_entropy_at,
    cure_curvature,
    hutchinson_trace,
    loss_hessian_eigs,
    loss_hessian_slq,
    loss_hessian_trace,
    slq,
    spectral_density,
)
from geomrobust.ops import input_hessian

SHAPE = (6, 6, 2)
Y = jnp.array([0, 1, 3])


def dense_loss_hessians(fn, x, y):
    f = jax.jit(jax.vmap(lambda xi, yi: input_hessian(cross_entropy_at(fn, yi), xi)))
    return np.asarray(f(x, y), np.float64)


@pytest.fixture(scope="module", params=["float32", "float64"])
def problem(request):
    """A small conv net, three inputs, their dense loss Hessians (computed once per dtype)."""
    dtype = jnp.dtype(request.param)
    key = jax.random.key(0)
    fn = convnet(key, SHAPE, 4, dtype=dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (3, *SHAPE), dtype)
    return fn, x, dense_loss_hessians(fn, x, Y), dtype


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_loss_hessian_eigs_match_dense(problem, method):
    fn, x, H, dtype = problem
    num = 4
    r = loss_hessian_eigs(fn, x, Y, num=num, key=jax.random.key(1), method=method, krylov_dim=24)
    assert r.values.shape == (3, num) and r.values.dtype == dtype
    assert r.vectors.shape == (3, num, *SHAPE)
    assert bool(r.converged.all())
    assert bool(jnp.all(jnp.diff(r.values, axis=1) <= 0))  # descending
    tol = 100 * rtol_for(dtype) if method == "dense" else (2e-3 if dtype == jnp.float32 else 1e-7)
    for i in range(3):
        ref = np.linalg.eigvalsh(H[i])[::-1][:num]
        assert rel_err(r.values[i], ref) < tol
        v = np.asarray(r.vectors[i], np.float64).reshape(num, -1)
        resid = np.linalg.norm(v @ H[i] - ref[:, None] * v, axis=1)
        assert resid.max() < 30 * tol * np.abs(ref).max()


def test_hutchinson_unbiased_over_keys(problem):
    fn, x, H, dtype = problem
    traces = np.trace(H, axis1=1, axis2=2)
    est = np.stack(
        [
            np.asarray(loss_hessian_trace(fn, x, Y, num_probes=16, key=jax.random.key(s)))
            for s in range(6)
        ]
    )
    assert est.shape == (6, 3) and est.dtype == dtype
    # Rademacher variance of one probe: 2 Σ_{i≠j} H_ij²; mean over 6·16 probes
    off = np.array([np.sum(h**2) - np.sum(np.diag(h) ** 2) for h in H])
    sem = np.sqrt(2 * off / (6 * 16))
    assert np.all(np.abs(est.mean(0) - traces) <= 4 * sem + 1e-5 * np.abs(traces))
    # same key, same answer
    a = loss_hessian_trace(fn, x, Y, num_probes=16, key=jax.random.key(0))
    np.testing.assert_array_equal(a, est[0])


def test_slq_moments_and_density_match_dense(dtype):
    d = 24
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    ev = np.concatenate([[4.0, 3.5], rng.uniform(-1, 1, d - 2)])
    A = jnp.asarray(Q @ np.diag(ev) @ Q.T, dtype)
    q = slq(lambda v: A @ v, jnp.zeros(d, dtype), num_probes=300, steps=10, key=jax.random.key(3))
    assert q.nodes.shape == (300, 10) and q.nodes.dtype == dtype
    np.testing.assert_allclose(q.weights.sum(-1), 1.0, rtol=100 * rtol_for(dtype))
    for p in (1, 2, 3):  # exact for each probe up to degree 2m-1; unbiased over probes
        per_probe = np.asarray(jnp.sum(q.weights * q.nodes**p, -1), np.float64) * d
        sem = per_probe.std() / np.sqrt(len(per_probe))
        assert abs(per_probe.mean() - np.sum(ev**p)) < 4 * sem + 1e-3
    grid = jnp.linspace(-3, 6, 200, dtype=dtype)
    rho = spectral_density(q, grid, sigma=0.3)
    ref = np.mean(np.exp(-0.5 * ((np.asarray(grid)[:, None] - ev) / 0.3) ** 2), 1)
    ref /= 0.3 * np.sqrt(2 * np.pi)
    dt = float(grid[1] - grid[0])
    assert abs(float(jnp.sum(rho)) * dt - 1.0) < 1e-2
    assert np.abs(np.asarray(rho) - ref).sum() * dt < 0.15  # L1 distance of densities


def test_loss_slq_and_direct_hutchinson_on_network(problem):
    fn, x, H, dtype = problem
    q = loss_hessian_slq(fn, x, Y, num_probes=64, steps=12, key=jax.random.key(0))
    assert q.nodes.shape == (3, 64, 12) and q.nodes.dtype == dtype
    d = H.shape[-1]
    # λ_max of H is bracketed by the Ritz values (interlacing), and the first moment is tr/D
    for i in range(3):
        lmax = np.linalg.eigvalsh(H[i])[-1]
        assert float(q.nodes[i].max()) <= lmax * (1 + 1e-3) + 1e-6
        assert float(q.nodes[i].max()) >= 0.95 * lmax
        m1 = np.asarray(jnp.sum(q.weights[i] * q.nodes[i], -1), np.float64) * d
        sem = m1.std() / np.sqrt(len(m1))
        assert abs(m1.mean() - np.trace(H[i])) < 4 * sem + 1e-4
    Hd = jnp.asarray(H[0], dtype)
    t = hutchinson_trace(lambda v: Hd @ v, jnp.zeros(d, dtype), num_probes=8, key=jax.random.key(0))
    assert t.dtype == dtype and np.isfinite(float(t))


def test_cure_curvature(problem):
    fn, x, H, dtype = problem
    h = 1e-2
    c = cure_curvature(fn, x, Y, h=h)
    assert c.shape == (3,) and c.dtype == dtype

    @jax.jit
    @jax.vmap
    def reference(xi, yi):
        loss = cross_entropy_at(fn, yi)
        g = jax.grad(loss)(xi)
        z = jnp.sign(g) / jnp.linalg.norm(jnp.sign(g))
        return jnp.linalg.norm(jax.grad(loss)(xi + h * z) - g), z

    ref, z = reference(x, Y)
    np.testing.assert_allclose(c, ref, rtol=1e3 * rtol_for(dtype))
    if dtype == jnp.float64:  # small-h limit: h ||H z||
        c_small = cure_curvature(fn, x, Y, h=1e-6) / 1e-6
        hz = np.einsum("nij,nj->ni", H, np.asarray(z, np.float64).reshape(3, -1))
        np.testing.assert_allclose(c_small, np.linalg.norm(hz, axis=1), rtol=1e-4)


def test_bad_inputs():
    fn = mlp(jax.random.key(0), (5,), 3)
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="num"):
        loss_hessian_eigs(fn, x, jnp.array([0, 1]), num=6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="y"):
        loss_hessian_eigs(fn, x, jnp.array([0, 3]), num=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="h"):
        cure_curvature(fn, x, jnp.array([0, 1]), h=-1.0)
    with pytest.raises(ValueError, match="steps must lie"):
        loss_hessian_slq(fn, x, jnp.array([0, 1]), steps=9, key=jax.random.key(0))
