"""refine_boundary: bisection onto {F_k = 0} against analytic boundaries (hyperplane, sphere)."""

import jax
import jax.numpy as jnp
import numpy as np
from _nets import affine, convnet
from conftest import rtol_for

from geomrobust.search import deepfool, refine_boundary


def test_hyperplane_point_and_normal(dtype):
    key = jax.random.key(2)
    w = jax.random.normal(key, (9, 3), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (3,), dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (4, 9), dtype)
    y = fn(x).argmax(1)
    res = deepfool(fn, x, y, overshoot=0.5)  # far past the boundary: bisection has work
    bp = refine_boundary(fn, x, x + res.perturbation, y, tol=1e-7 if dtype == jnp.float64 else 1e-5)
    assert bool(bp.converged.all()) and bp.z.dtype == dtype and bp.normal.dtype == dtype
    np.testing.assert_array_equal(bp.k, res.adv_label)
    wk = np.asarray(w, np.float64)[:, np.asarray(bp.k)].T - np.asarray(w, np.float64)[:, y].T
    F = np.asarray(fn(bp.z), np.float64)
    gap = F[np.arange(4), bp.k] - F[np.arange(4), y]
    scale = np.abs(F).max()
    assert np.all(np.abs(gap) <= 1e-4 * scale)
    n_ref = wk / np.linalg.norm(wk, axis=1, keepdims=True)
    np.testing.assert_allclose(bp.normal, n_ref, rtol=0, atol=50 * rtol_for(dtype))
    np.testing.assert_allclose(bp.grad_norm, np.linalg.norm(wk, axis=1), rtol=50 * rtol_for(dtype))
    # z is on the segment [x, x_adv], at the exact affine crossing t* = (1+η)^-1
    np.testing.assert_allclose(
        bp.z, x + res.perturbation / 1.5, atol=1e-4 * float(jnp.abs(x).max())
    )


def test_sphere_refines_to_radius(dtype):
    R = 1.5
    key = jax.random.key(7)

    def ball(x):
        f0 = R**2 - jnp.sum(x**2, axis=1)
        return jnp.stack([f0, jnp.zeros_like(f0)], axis=1)

    u = jax.random.normal(key, (6, 5), dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    x = 0.5 * u
    y = jnp.zeros(6, jnp.int32)
    bp = refine_boundary(ball, x, 2.0 * u, y, tol=1e-12 if dtype == jnp.float64 else 1e-6)
    assert bool(bp.converged.all())
    np.testing.assert_allclose(jnp.linalg.norm(bp.z, axis=1), R, rtol=10 * rtol_for(dtype))
    # F_k = f_1 - f_0 = |z|² - R² grows outwards: the unit normal is +u (the k side)
    np.testing.assert_allclose(bp.normal, u, atol=10 * rtol_for(dtype))
    np.testing.assert_allclose(bp.grad_norm, 2 * R, rtol=10 * rtol_for(dtype))


def test_invalid_brackets_are_flagged(dtype):
    key = jax.random.key(1)
    fn = convnet(key, (4, 4, 1), 3, dtype=dtype)
    x = jax.random.normal(key, (3, 4, 4, 1), dtype)
    y = fn(x).argmax(1)
    bp = refine_boundary(fn, x, x, y)  # x_adv has the label y: no bracket
    assert not bool(bp.converged.any())
    assert bool(jnp.isfinite(bp.z).all()) and bool(jnp.isfinite(bp.normal).all())
    res = deepfool(fn, x, y)
    ok = refine_boundary(fn, x, x + res.perturbation, y)
    assert bool(ok.converged.all())
    nrm = jnp.linalg.norm(ok.normal.reshape(3, -1), axis=1)
    np.testing.assert_allclose(nrm, 1.0, rtol=10 * rtol_for(dtype))
