"""Property-based tests (hypothesis): invariances and symmetries the geometry must obey."""

import jax
import jax.numpy as jnp
import numpy as np
from _nets import mlp
from hypothesis import given, settings
from hypothesis import strategies as st

import geomrobust as gr

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)
D, K = 5, 3
F64 = jnp.float64
NET = mlp(jax.random.key(0), (D,), K, width=8, dtype=F64)
X = jax.random.normal(jax.random.key(1), (4, D), F64)


@jax.jit
def _margins_transformed(x, scale, shift):
    """DeepFool margins of ``scale * f + shift`` (shift added to every logit)."""
    return gr.deepfool(lambda z: scale * NET(z) + shift, x).margin


BASE_MARGIN = np.asarray(_margins_transformed(X, 1.0, 0.0))


@SETTINGS
@given(scale=st.floats(0.05, 20.0), shift=st.floats(-10.0, 10.0))
def test_margins_invariant_to_logit_scaling_and_shift(scale, shift):
    m = np.asarray(_margins_transformed(X, scale, shift))
    assert np.isfinite(BASE_MARGIN).all()
    np.testing.assert_allclose(m, BASE_MARGIN, rtol=1e-8)


W = jax.random.normal(jax.random.key(2), (D, K), F64)
B = jax.random.normal(jax.random.key(3), (K,), F64)


@jax.jit
def _affine_rotated(x, q):
    """DeepFool on f(x) = x W + b at x, and on the rotated model g(x') = f(Qᵀ x') at Q x."""
    r = gr.deepfool(lambda z: z @ W + B, x)
    r_rot = gr.deepfool(lambda z: (z @ q) @ W + B, x @ q.T)  # rows: x' = Q x, g(z) = f(Qᵀ z)
    return r.perturbation, r.margin, r_rot.perturbation, r_rot.margin


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_rotation_of_input_space_rotates_the_perturbation(seed):
    q = jnp.linalg.qr(jax.random.normal(jax.random.key(seed), (D, D), F64))[0]
    pert, margin, pert_rot, margin_rot = _affine_rotated(X, q)
    np.testing.assert_allclose(pert_rot, pert @ q.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(margin_rot, margin, rtol=1e-9)
    # and the margin is the closed form (1 + η) |F| / ||w|| of the affine model
    lg = X @ W + B
    y = jnp.argmax(lg, -1)
    gaps = [
        jnp.abs(lg[i, j] - lg[i, y[i]]) / jnp.linalg.norm(W[:, j] - W[:, y[i]])
        for i in range(X.shape[0])
        for j in range(K)
        if j != y[i]
    ]
    expected = 1.02 * np.asarray(gaps).reshape(X.shape[0], K - 1).min(1)
    np.testing.assert_allclose(margin, expected, rtol=1e-9)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(radius=st.floats(0.1, 50.0), seed=st.integers(0, 1000))
def test_sphere_curvature_is_one_over_radius(radius, seed):
    """Class 0 is the ball of radius r: every principal curvature of its boundary is +1/r."""

    def ball(x):
        inside = (radius**2 - jnp.sum(x**2, axis=-1)) / (2 * radius)
        return jnp.stack([inside, jnp.zeros_like(inside)], axis=-1)

    u = jax.random.normal(jax.random.key(seed), (2, D), F64)
    z = radius * u / jnp.linalg.norm(u, axis=1, keepdims=True)
    y, k = jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32)
    c = gr.principal_curvatures(ball, z, y, k, num=3, key=jax.random.key(0), method="dense")
    assert np.asarray(c.converged).all()
    np.testing.assert_allclose(c.values, np.full((2, 3), 1.0 / radius), rtol=1e-9)


A = jax.random.normal(jax.random.key(4), (D, 7), F64)


def _scalar(x):
    return jnp.sum(jnp.tanh(x @ A) ** 2) + jnp.sin(x[0]) * x[1]


@jax.jit
def _hvps(x, u, v, a, b):
    h = gr.hvp_operator(_scalar, x)
    return h(a * u + b * v), h(u), h(v)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(-3.0, 3.0), b=st.floats(-3.0, 3.0))
def test_hvp_is_linear_and_symmetric(seed, a, b):
    kx, ku, kv = jax.random.split(jax.random.key(seed), 3)
    x, u, v = (jax.random.normal(k, (D,), F64) for k in (kx, ku, kv))
    h_ab, hu, hv = _hvps(x, u, v, a, b)
    scale = float(jnp.linalg.norm(hu) + jnp.linalg.norm(hv)) * (1 + abs(a) + abs(b))
    np.testing.assert_allclose(h_ab, a * hu + b * hv, atol=1e-12 * scale)
    np.testing.assert_allclose(float(u @ hv), float(v @ hu), rtol=1e-10, atol=1e-13 * scale)
    dense = jax.hessian(_scalar)(x)
    np.testing.assert_allclose(hu, dense @ u, rtol=1e-10, atol=1e-13 * scale)
