"""2-D boundary and loss slices against analytic boundaries (hyperplane, sphere)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import mlp
from conftest import rtol_for

from geomrobust.measures._slices import boundary_slice, orthonormal_plane, random_orthogonal

D = 10
W = np.random.default_rng(0).standard_normal((D, 2))
C = np.array([0.3, -0.2])


def linear(x):
    x = x.reshape(x.shape[0], -1)
    return x @ jnp.asarray(W, x.dtype) + jnp.asarray(C, x.dtype)


def ball(x):
    nx = jnp.linalg.norm(x.reshape(x.shape[0], -1), axis=-1)
    return jnp.stack([1.5 - nx, jnp.zeros_like(nx)], -1)


def test_hyperplane_slice_is_a_straight_line(dtype, key):
    x = jax.random.normal(key, (D,), dtype)
    w = jnp.asarray(W[:, 1] - W[:, 0], dtype)
    u = w / jnp.linalg.norm(w)
    v = random_orthogonal(u, key=jax.random.fold_in(key, 1))
    s = boundary_slice(linear, x, u, v, 3.0, 41, classes=(0, 1))
    assert s.labels.shape == (41, 41) and s.logit_diff.dtype == dtype and s.loss.dtype == dtype
    F0 = float(jnp.vdot(w, x)) + C[1] - C[0]
    # F = F(x) + a ||w|| exactly on the plane (no dependence on b)
    ref = F0 + np.asarray(s.a)[None, :] * float(jnp.linalg.norm(w))
    np.testing.assert_allclose(
        s.logit_diff, np.broadcast_to(ref, (41, 41)), atol=50 * rtol_for(dtype) * np.abs(ref).max()
    )
    a_star = -F0 / float(jnp.linalg.norm(w))
    assert s.contour.shape[0] >= 41
    np.testing.assert_allclose(s.contour[:, 0], a_star, atol=100 * rtol_for(dtype))
    np.testing.assert_array_equal(s.labels, (np.asarray(s.logit_diff) > 0).astype(np.int32))
    # loss slice = cross-entropy of class 0 at the grid points
    pts = x + s.a[5] * s.u + s.b[7] * s.v
    ce = -jax.nn.log_softmax(linear(pts[None])[0])[0]
    np.testing.assert_allclose(s.loss[7, 5], ce, rtol=100 * rtol_for(dtype))


def test_sphere_slice_contour_is_a_circle(dtype, key):
    x = jnp.zeros((2, 5), dtype)
    u = jax.random.normal(key, (2, 5), dtype)
    v = jax.random.normal(jax.random.fold_in(key, 1), (2, 5), dtype)
    s = boundary_slice(ball, x, u, v, 2.0, 61, classes=(0, 1), chunk_size=500)
    r = np.hypot(np.asarray(s.contour[:, 0]), np.asarray(s.contour[:, 1]))
    assert len(r) > 40
    np.testing.assert_allclose(r, 1.5, atol=2e-3)  # linear interpolation on a 1/15 grid
    np.testing.assert_allclose(jnp.vdot(s.u, s.v), 0.0, atol=10 * rtol_for(dtype))
    # top-1 minus runner-up: non-negative, and the label-change edges lie on the circle too
    t = boundary_slice(ball, x, u, v, 2.0, 61)
    assert float(t.logit_diff.min()) >= 0
    rt = np.hypot(np.asarray(t.contour[:, 0]), np.asarray(t.contour[:, 1]))
    np.testing.assert_allclose(rt, 1.5, atol=2.0 / 60 + 1e-6)


def test_multiclass_network_slice(key):
    fn = mlp(key, (6,), 4, dtype=jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 2), (6,), jnp.float64)
    u, v = jnp.eye(6)[0], jnp.eye(6)[1] + jnp.eye(6)[0]
    s = boundary_slice(fn, x, u, v, (-4.0, 4.0, -2.0, 2.0), 16)
    assert float(s.a[0]) == -4.0 and float(s.b[-1]) == 2.0
    pts = x + s.a[None, :, None] * s.u + s.b[:, None, None] * s.v
    logits = fn(pts.reshape(-1, 6)).reshape(16, 16, 4)
    np.testing.assert_array_equal(s.labels, jnp.argmax(logits, -1))
    srt = jnp.sort(logits, -1)
    np.testing.assert_allclose(s.logit_diff, srt[..., -1] - srt[..., -2], rtol=1e-12)


def test_bad_inputs():
    x = jnp.zeros(D)
    u = jnp.eye(D)[0]
    with pytest.raises(ValueError, match="parallel"):
        boundary_slice(linear, x, u, 2 * u, 1.0, 8)
    with pytest.raises(ValueError, match="resolution"):
        boundary_slice(linear, x, u, jnp.eye(D)[1], 1.0, 1)
    with pytest.raises(ValueError, match="extent"):
        boundary_slice(linear, x, u, jnp.eye(D)[1], (1.0, 0.0, 0.0, 1.0), 8)
    with pytest.raises(ValueError, match="classes"):
        boundary_slice(linear, x, u, jnp.eye(D)[1], 1.0, 8, classes=(0, 0))
    with pytest.raises(ValueError, match="shape of x"):
        boundary_slice(linear, x, jnp.ones(3), jnp.eye(D)[1], 1.0, 8)
    a, b = orthonormal_plane(jnp.ones(3), jnp.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose([jnp.vdot(a, b), jnp.linalg.norm(b)], [0.0, 1.0], atol=1e-6)
