"""Lanczos driven from the host (``loop="host"``) against the device form (``loop="device"``):
the same kernels, so the same converged set and the same values to rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import convnet, mlp

import geomrobust as gr
from geomrobust.measures._eigsolve import (
    arnoldi_step,
    lanczos_init,
    lanczos_restart,
    lanczos_result,
    lanczos_ritz,
    lanczos_step,
)

# values of the two forms: the same iteration up to the rounding of the operator (linearized
# once per point in the device form, recomputed in a batched program in the host form)
AGREE = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-10}


def _net(name, key, dtype):
    if name == "mlp":
        return mlp(key, (12,), 3, dtype=dtype), (12,), dict(num=3, krylov_dim=8)
    return convnet(key, (6, 6, 2), 4, dtype=dtype), (6, 6, 2), dict(num=4, krylov_dim=16)


def _close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.nanmax(np.abs(b))
    ok = np.isfinite(b)
    np.testing.assert_array_equal(np.isfinite(a), ok)
    assert np.max(np.abs(a[ok] - b[ok])) <= AGREE[np.dtype(dtype)] * scale


@pytest.mark.parametrize("net", ["mlp", "convnet"])
def test_curvatures_host_and_device_agree(dtype, net):
    key = jax.random.key(1)
    fn, shape, kw = _net(net, key, dtype)
    n = 5
    z = jax.random.normal(jax.random.fold_in(key, 2), (n, *shape), dtype)
    y, k = jnp.zeros(n, jnp.int32), jnp.full(n, 2, jnp.int32)
    kw = dict(kw, key=key, method="lanczos", boundary_tol=np.inf, chunk_size=3)
    host = gr.principal_curvatures(fn, z, y, k, loop="host", **kw)
    dev = gr.principal_curvatures(fn, z, y, k, loop="device", **kw)
    np.testing.assert_array_equal(host.status, dev.status)
    assert bool(dev.converged.all())  # a converged set to compare, not an empty one
    _close(host.values, dev.values, dtype)
    np.testing.assert_allclose(host.grad_norm, dev.grad_norm, rtol=AGREE[np.dtype(dtype)])
    # the same directions, up to the sign eigh picks
    u, v = (np.asarray(c.directions, np.float64).reshape(n, kw["num"], -1) for c in (host, dev))
    assert np.abs(np.abs(np.sum(u * v, -1)) - 1).max() < 100 * AGREE[np.dtype(dtype)]
    assert np.abs(host.restarts - dev.restarts).max() <= 1
    # auto is the host form on the CPU
    auto = gr.principal_curvatures(fn, z, y, k, **kw)
    np.testing.assert_array_equal(auto.values, host.values)


def test_curvatures_unconverged_rows_freeze_alike():
    """Rows stop alike: with 22 restarts some points are done early (frozen while the others
    go on), with 12 some are not converged (MAX_STEPS, nan) in both forms."""
    key = jax.random.key(4)
    fn, shape, _ = _net("convnet", key, jnp.float64)
    n = 6
    z = jax.random.normal(jax.random.fold_in(key, 2), (n, *shape), jnp.float64)
    y, k = jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)
    kw = dict(num=6, krylov_dim=12, key=key, method="lanczos", boundary_tol=np.inf)
    for restarts in (22, 12):
        host = gr.principal_curvatures(fn, z, y, k, loop="host", restarts=restarts, **kw)
        dev = gr.principal_curvatures(fn, z, y, k, loop="device", restarts=restarts, **kw)
        np.testing.assert_array_equal(host.status, dev.status)
        np.testing.assert_array_equal(host.restarts, dev.restarts)
        _close(host.values, dev.values, jnp.float64)
        if restarts == 22:
            assert len(set(np.asarray(dev.restarts).tolist())) > 1  # some stopped early
        else:
            assert set(np.asarray(dev.status).tolist()) == {gr.Status.SUCCESS, gr.Status.MAX_STEPS}


def test_loss_hessian_eigs_host_and_device_agree(dtype):
    key = jax.random.key(2)
    fn, shape, _ = _net("convnet", key, dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, *shape), dtype)
    y = jnp.array([0, 1, 2, 3])
    kw = dict(num=3, key=key, method="lanczos", krylov_dim=16, chunk_size=3)
    host = gr.loss_hessian_eigs(fn, x, y, loop="host", **kw)
    dev = gr.loss_hessian_eigs(fn, x, y, loop="device", **kw)
    np.testing.assert_array_equal(host.status, dev.status)
    assert bool(dev.converged.all())
    _close(host.values, dev.values, dtype)


def test_traced_inputs_run_the_device_form():
    key = jax.random.key(3)
    fn, shape, kw = _net("mlp", key, jnp.float64)
    z = jax.random.normal(key, (3, *shape), jnp.float64)
    y, k = jnp.zeros(3, jnp.int32), jnp.ones(3, jnp.int32)
    kw = dict(kw, key=key, method="lanczos", boundary_tol=np.inf)
    jitted = jax.jit(lambda zz: gr.principal_curvatures(fn, zz, y, k, loop="host", **kw).values)
    dev = gr.principal_curvatures(fn, z, y, k, loop="device", **kw)
    _close(jitted(z), dev.values, jnp.float64)


def test_bad_loop_raises():
    fn = mlp(jax.random.key(0), (12,), 3)
    z = jnp.ones((2, 12))
    y, k = jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32)
    with pytest.raises(ValueError, match="loop must be"):
        gr.principal_curvatures(fn, z, y, k, num=2, key=jax.random.key(0), loop="gpu")
    with pytest.raises(ValueError, match="loop must be"):
        gr.loss_hessian_eigs(fn, z, y, num=2, key=jax.random.key(0), loop="cpu")


def test_cycle_of_arnoldi_steps_is_lanczos_step(dtype):
    """The host form's decomposition of a cycle (restart, Arnoldi steps, Ritz close) is
    :func:`lanczos_step`; both find a known spectrum."""
    d, m, keep, num = 40, 12, 8, 3
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    spec = np.concatenate([[5.0, -4.0, 3.0], rng.uniform(-1, 1, d - 3)])
    A = jnp.asarray(Q @ np.diag(spec) @ Q.T, dtype)
    key = jax.random.key(0)
    tol = 1e-4 if dtype == jnp.float32 else 1e-9
    s0 = lanczos_init(jax.random.normal(key, (d,), dtype), num=num, krylov_dim=m, key=key)

    def matvec(v):
        return A @ v

    a = b = s0
    for _ in range(40):
        if bool(a.done):
            break
        a = lanczos_step(matvec, a, num=num, keep=keep, tol=tol)[0]
        b = lanczos_restart(b, keep=keep)
        for j in range(0 if int(b.restarts) < 0 else keep, m):
            b = arnoldi_step(matvec, b, j)
        b = lanczos_ritz(b, num=num, tol=tol)[0]
        assert int(a.restarts) == int(b.restarts) and bool(a.done) == bool(b.done)
        _close(b.values, a.values, dtype)
    ra = lanczos_result(a, num=num, out=num, tol=tol)
    assert bool(ra.converged.all())
    np.testing.assert_allclose(np.sort(ra.values), [-4.0, 3.0, 5.0], rtol=10 * tol)
