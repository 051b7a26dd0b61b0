"""Curvature at a scale σ (Gaussian-smoothed boundary) against closed forms and dense Hessians.

* quadric boundary: smoothing shifts F by a constant, so the curvature at EVERY scale is the
  exact one: the estimates agree with the exact normal curvatures along their directions
  within their standard errors, the top values with the exact principal curvatures, and the
  same samples give the same numbers at σ = 0.01 and σ = 3;
* softplus network: the curvature at σ = 1e-3 is the exact one (dense Hessian) within the
  standard errors;
* ReLU network: the exact Hessian is zero (flagged, warned, not converged); at a scale the
  curvature is finite, resolved (|κ| >> its standard error) and falls as σ grows;
* the smoothed loss Hessian tends to the exact one on a softplus network.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.measures import PiecewiseLinearWarning, normal_curvature
from geomrobust.measures._smoothed import gradient_samples, smoothed_eigs

D = 6
_A = np.diag([3.0, -2.0, 1.0, 0.5, -0.25, 0.0])
_Q = np.linalg.qr(np.random.default_rng(1).normal(size=(D, D)))[0]
A = _Q @ _A @ _Q.T
B = np.random.default_rng(2).normal(size=D)


def quadric(x):
    """F_1 = ½ xᵀAx + bᵀx - c with c so that z0 below is on the boundary."""
    x = x.reshape(x.shape[0], -1)
    a, b = jnp.asarray(A, x.dtype), jnp.asarray(B, x.dtype)
    F = 0.5 * jnp.einsum("ni,ij,nj->n", x, a, x) + x @ b - jnp.asarray(_C, x.dtype)
    return jnp.stack([jnp.zeros_like(F), F], -1)


Z0 = np.random.default_rng(3).normal(size=(2, D)) * 0.3
_C = 0.5 * Z0[0] @ A @ Z0[0] + B @ Z0[0]


def exact_shape_operator(z):
    g = A @ z + B
    n = g / np.linalg.norm(g)
    P = np.eye(D) - np.outer(n, n)
    return P @ A @ P / np.linalg.norm(g), n


def test_estimator_is_the_hessian_of_a_quadratic():
    """Stein's identity with antithetic samples: d_i = A ε_i exactly for a quadratic F."""
    z = jnp.asarray(Z0[0])

    def grad_batch(p):
        return jax.vmap(jax.grad(lambda q: quadric(q[None])[0, 1]))(p)

    gbar, d, e = gradient_samples(grad_batch, z, jax.random.key(0), 0.7, 64)
    np.testing.assert_allclose(gbar, A @ Z0[0] + B, rtol=1e-10)
    np.testing.assert_allclose(d, np.asarray(e) @ A, rtol=1e-9, atol=1e-12)
    # the low-rank path equals the dense path on the same samples (D = 6 < 2m: force low rank)
    vals_dense, _ = smoothed_eigs(d[:2], e[:2], None, 3, "LM")
    h = (np.asarray(d[:2]).T @ np.asarray(e[:2]) + np.asarray(e[:2]).T @ np.asarray(d[:2])) / 4
    ref = np.linalg.eigvalsh(h)
    np.testing.assert_allclose(
        np.sort(np.abs(vals_dense)), np.sort(np.abs(ref))[-3:], rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0])
def test_quadric_curvature_at_every_scale_is_exact(sigma, dtype):
    z = jnp.asarray(Z0[:1], dtype)
    y, k = jnp.array([0]), jnp.array([1])
    c = gr.principal_curvatures(
        quadric, z, y, k, num=3, key=jax.random.key(0), scale=sigma, num_samples=8192
    )
    assert c.values.dtype == dtype and c.stderr.dtype == dtype
    assert bool(c.converged.all()) and not bool((c.status == gr.Status.PIECEWISE_LINEAR).any())
    S, n = exact_shape_operator(Z0[0])
    tight = 1e-10 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(np.abs(np.asarray(c.normal[0], np.float64) @ n), 1.0, rtol=tight)
    U = np.asarray(c.directions[0], np.float64)
    along = np.einsum("md,de,me->m", U, S, U)  # exact normal curvature along each direction
    err = np.abs(np.asarray(c.values[0], np.float64) - along)
    assert np.all(err <= 4 * np.asarray(c.stderr[0]) + 100 * tight), (err, c.stderr)
    exact = np.linalg.eigvalsh(S)
    exact = exact[np.argsort(-np.abs(exact))][:3]
    np.testing.assert_allclose(c.values[0], exact, rtol=0.05, atol=0.02 * abs(exact[0]))
    assert np.all(np.asarray(c.stderr[0]) < 0.05 * abs(exact[0]))


def test_quadric_same_samples_same_numbers_at_any_scale():
    z, y, k = jnp.asarray(Z0[:1]), jnp.array([0]), jnp.array([1])
    kw = dict(num=2, key=jax.random.key(4), num_samples=64)
    a = gr.principal_curvatures(quadric, z, y, k, scale=0.01, **kw)
    b = gr.principal_curvatures(quadric, z, y, k, scale=3.0, **kw)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-8)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-8)


def _mlp(act, key, d=D, width=24, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (d, width), dtype) / np.sqrt(d)
    b1 = 0.3 * jax.random.normal(k2, (width,), dtype)
    w2 = jax.random.normal(k3, (width, 2), dtype) / np.sqrt(width)

    def f(x):
        return act(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2

    return f


def _boundary_points(f, n=3, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, D), jnp.float64)
    pred = jnp.argmax(f(x), -1)
    df = gr.deepfool(f, x, pred)
    bp = gr.refine_boundary(f, x, x + df.perturbation, pred, tol=1e-12)
    assert bool(bp.converged.all())
    return bp


def test_softplus_network_small_scale_is_the_exact_curvature():
    f = _mlp(lambda h: jax.nn.softplus(3 * h), jax.random.key(1))
    bp = _boundary_points(f)
    exact = gr.principal_curvatures(f, bp.z, bp.y, bp.k, num=2, key=jax.random.key(0))
    assert bool(exact.converged.all())
    assert not bool((exact.status == gr.Status.PIECEWISE_LINEAR).any())
    # along the exact principal directions, the smoothed normal curvature at σ = 1e-3
    u = exact.directions[:, 0]
    kap, se, converged, _ = normal_curvature(f, bp.z, bp.y, bp.k, u, scale=1e-3,
                                             key=jax.random.key(2), num_samples=8192)  # fmt: skip
    assert bool(np.all(converged))
    err = np.abs(np.asarray(kap) - np.asarray(exact.values[:, 0]))
    assert np.all(err <= 4 * np.asarray(se) + 1e-6 * np.abs(exact.values[:, 0])), (err, se)
    sm = gr.principal_curvatures(f, bp.z, bp.y, bp.k, num=2, key=jax.random.key(3),
                                 scale=1e-3, num_samples=8192)  # fmt: skip
    np.testing.assert_allclose(sm.values[:, 0], exact.values[:, 0], rtol=0.08)
    np.testing.assert_allclose(np.abs(np.sum(sm.normal * exact.normal, -1)), 1.0, rtol=1e-6)


def test_relu_network_exact_is_flagged_and_scale_is_finite_and_decreasing():
    f = _mlp(jax.nn.relu, jax.random.key(5))
    bp = _boundary_points(f, n=4, seed=1)
    for method in ("dense", "lanczos"):
        with pytest.warns(PiecewiseLinearWarning, match="piecewise-linear network"):
            c = gr.principal_curvatures(f, bp.z, bp.y, bp.k, num=2, key=jax.random.key(0),
                                        method=method, krylov_dim=5)  # fmt: skip
        assert bool((c.status == gr.Status.PIECEWISE_LINEAR).all()), method
        assert not bool(c.converged.any()), method
    # at scales beyond the distance to the nearest kinks the curvature is finite, resolved
    # and falls about as 1/σ (below it, a point sees one flat piece: curvature 0 at that scale)
    tops = []
    for sigma in (0.2, 1.0, 5.0):
        c = gr.principal_curvatures(f, bp.z, bp.y, bp.k, num=1, key=jax.random.key(1),
                                    scale=sigma, num_samples=2048)  # fmt: skip
        top, se = np.abs(np.asarray(c.values[:, 0])), np.asarray(c.stderr[:, 0])
        assert bool(c.converged.all()) and np.all(np.isfinite(top))
        assert np.all(top > 5 * se), (sigma, top, se)  # resolved, not noise
        tops.append(np.median(top))
    assert tops[0] > tops[1] > tops[2], tops
    assert 0.5 < (5.0 * tops[2]) / (1.0 * tops[1]) < 2.0, tops  # ~ 1/σ at large σ


def test_smoothed_loss_hessian_tends_to_exact():
    f = _mlp(jnp.tanh, jax.random.key(7))
    x = jax.random.normal(jax.random.key(8), (2, D), jnp.float64)
    y = jnp.array([0, 1])
    exact = gr.loss_hessian_eigs(f, x, y, num=2, key=jax.random.key(0))
    sm = gr.loss_hessian_eigs(f, x, y, num=2, key=jax.random.key(0), scale=1e-3,
                              num_samples=8192)  # fmt: skip
    err = np.abs(np.asarray(sm.values[:, 0]) - np.asarray(exact.values[:, 0]))
    assert np.all(err <= 4 * np.asarray(sm.stderr[:, 0]) + 0.05 * np.abs(exact.values[:, 0]))
    assert np.all(np.asarray(exact.stderr) == 0)


def test_scale_arguments_are_checked():
    z, y, k = jnp.asarray(Z0[:1]), jnp.array([0]), jnp.array([1])
    with pytest.raises(ValueError, match="scale must be a positive"):
        gr.principal_curvatures(quadric, z, y, k, num=2, key=jax.random.key(0), scale=-1.0)
    with pytest.raises(ValueError, match="even integer >= 4"):
        gr.principal_curvatures(quadric, z, y, k, num=2, key=jax.random.key(0), scale=0.1,
                                num_samples=7)  # fmt: skip
    with pytest.raises(ValueError, match="num_samples >= num"):
        gr.principal_curvatures(quadric, z, y, k, num=5, key=jax.random.key(0), scale=0.1,
                                num_samples=4)  # fmt: skip
    with pytest.raises(TypeError, match="need key="):
        normal_curvature(quadric, z, y, k, jnp.ones((1, D)), scale=0.1)
