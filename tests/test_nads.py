"""NADs against analytic (isotropic logistic regression) and dense gradient covariances, and the
Fourier accuracy map of a linear model versus a low-pass architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import convnet
from conftest import rtol_for

from geomrobust.measures._fourier_map import fourier_accuracy_map
from geomrobust.measures._nads import fourier_magnitude, nads

SHAPE = (4, 4, 1)


def linear_init(key, dtype):
    """f = wᵀx with w ~ N(0, I): E[∇f ∇fᵀ] = E[w wᵀ] = I."""

    def init_fn(k):
        w = jax.random.normal(k, (16, 1), dtype)
        return lambda x: x.reshape(x.shape[0], -1) @ w

    return init_fn


def test_logistic_regression_nads_are_isotropic(dtype):
    m = 3000
    r = nads(
        linear_init(None, dtype), SHAPE, num_networks=m, key=jax.random.key(0), chunk_size=512,
        dtype=dtype,
    )  # fmt: skip
    assert r.eigenvalues.shape == (16,) and r.eigenvalues.dtype == dtype
    assert r.eigenvectors.shape == (16, *SHAPE) and r.x0.dtype == dtype
    # sample covariance of M standard Gaussians in D dims: spectrum in (1 ± sqrt(D/M))² ± noise
    lo, hi = (1 - np.sqrt(16 / m)) ** 2, (1 + np.sqrt(16 / m)) ** 2
    assert float(r.eigenvalues.min()) > lo - 0.05 and float(r.eigenvalues.max()) < hi + 0.05
    assert bool(jnp.all(jnp.diff(r.eigenvalues) <= 0))


def test_cnn_nads_match_dense_gradient_covariance(dtype):
    shape, m = (6, 6, 1), 50
    key = jax.random.key(3)

    def init_fn(k):
        return convnet(k, shape, 1, channels=3, dtype=dtype)

    # dense reference: every gradient held at once, covariance (1/M) Gᵀ G, eigh
    keys = jax.random.split(jax.random.split(key)[1], m)
    x0 = jax.random.normal(jax.random.split(key)[0], shape, dtype)
    grad = jax.jit(jax.vmap(lambda k: jax.grad(lambda x: init_fn(k)(x[None])[0, 0])(x0)))
    G = np.asarray(grad(keys), np.float64).reshape(m, -1)
    full = np.linalg.eigh(G.T @ G / m)
    ev, V = full[0][::-1][:6], full[1][:, ::-1][:, :5]
    for method in ("covariance", "gram"):
        r = nads(init_fn, shape, num_networks=m, key=key, chunk_size=16, num=5, method=method,
                 dtype=dtype)  # fmt: skip
        np.testing.assert_array_equal(r.x0, x0)
        np.testing.assert_allclose(r.eigenvalues, ev[:5], rtol=300 * rtol_for(dtype))
        U = np.asarray(r.eigenvectors, np.float64).reshape(5, -1)
        np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, rtol=100 * rtol_for(dtype))
        checked = 0
        for i in range(5):  # eigenvectors of well-separated eigenvalues, up to sign
            gap = min(abs(ev[i] - ev[i + 1]), abs(ev[i - 1] - ev[i]) if i else np.inf)
            if gap > 1e-2 * ev[0]:
                assert abs(abs(U[i] @ V[:, i]) - 1) < 1e3 * rtol_for(dtype)
                checked += 1
        assert checked >= 2


def test_streaming_and_gram_agree_with_padding():
    dtype = jnp.float64
    shape = (6, 6, 1)

    def init_fn(k):
        return convnet(k, shape, 2, channels=2, dtype=dtype)

    a = nads(init_fn, shape, num_networks=23, key=jax.random.key(1), chunk_size=7,
             method="covariance", num=4, output="difference", dtype=dtype)  # fmt: skip
    b = nads(init_fn, shape, num_networks=23, key=jax.random.key(1), chunk_size=5,
             method="gram",
             num=4, output="difference", dtype=dtype)  # fmt: skip
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-9)
    proj = np.abs(np.sum(np.asarray(a.eigenvectors) * np.asarray(b.eigenvectors), axis=(1, 2, 3)))
    np.testing.assert_allclose(proj, 1.0, atol=1e-6)


def test_fourier_magnitude_of_a_single_frequency():
    h = 8
    t = np.arange(h)
    img = np.cos(2 * np.pi * 2 * t[:, None] / h) * np.ones((1, h))
    mag = np.asarray(fourier_magnitude(img[None]))[0]
    peaks = np.argwhere(mag > 0.5 * mag.max())
    assert sorted(map(tuple, peaks)) == [(2, 4), (6, 4)]  # ±2 around the centre (4, 4)


def test_fourier_accuracy_map_linear_vs_low_pass():
    shape = (4, 4)
    freqs = [(0, 0), (1, 1), (2, 2)]

    def init_params(k):
        return {"w": 0.01 * jax.random.normal(k, (16, 2)), "b": jnp.zeros(2)}

    def linear(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    def init_small(k):
        return {"w": 0.01 * jax.random.normal(k, (4, 2)), "b": jnp.zeros(2)}

    def pooled(p, x):  # 2x2 average pooling first: blind to the Nyquist frequency (2, 2)
        z = x.reshape(x.shape[0], 2, 2, 2, 2).mean(axis=(2, 4)).reshape(x.shape[0], 4)
        return z @ p["w"] + p["b"]

    kw = dict(key=jax.random.key(0), frequencies=freqs, n_train=400, n_test=400, steps=150)
    lin = fourier_accuracy_map(init_params, linear, shape, **kw)
    low = fourier_accuracy_map(init_small, pooled, shape, chunk_size=2, **kw)
    assert lin.accuracy.shape == (3,) and lin.grid.shape == (4, 4)
    assert float(lin.accuracy.min()) > 0.9  # a linear model learns every direction
    assert float(low.accuracy[0]) > 0.9  # the constant direction survives pooling
    assert float(low.accuracy[2]) < 0.65  # the checkerboard is invisible after pooling
    assert np.isnan(np.asarray(lin.grid)[0, 1]) and float(lin.grid[2, 2]) == float(lin.accuracy[2])
    # the authors' recipe (plain SGD at 0.5 decaying linearly, clip 0.5, epoch shuffling) and
    # the one-cycle variant: the same closed-form contrast
    sgd = dict(kw, optimizer="sgd", schedule="linear", learning_rate=0.5, clip_norm=0.5,
               sampling="epoch", batch_size=128)  # fmt: skip
    lin = fourier_accuracy_map(init_params, linear, shape, **sgd)
    low = fourier_accuracy_map(init_small, pooled, shape, chunk_size=2, **sgd)
    assert float(lin.accuracy.min()) > 0.9 and float(low.accuracy[0]) > 0.9
    assert float(low.accuracy[2]) < 0.65
    sgd = dict(kw, optimizer="sgd", schedule="onecycle", learning_rate=0.5)
    lin = fourier_accuracy_map(init_params, linear, shape, **sgd)
    low = fourier_accuracy_map(init_small, pooled, shape, chunk_size=2, **sgd)
    assert float(lin.accuracy.min()) > 0.9 and float(low.accuracy[0]) > 0.9
    assert float(low.accuracy[2]) < 0.65
    with pytest.raises(ValueError, match="optimizer"):
        fourier_accuracy_map(init_params, linear, shape, **dict(kw, optimizer="lbfgs"))
    with pytest.raises(ValueError, match="schedule"):
        fourier_accuracy_map(init_params, linear, shape, **dict(kw, schedule="cosine"))


def test_bad_inputs():
    init = linear_init(None, jnp.float32)
    with pytest.raises(ValueError, match="num_networks"):
        nads(init, SHAPE, num_networks=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="method"):
        nads(init, SHAPE, num_networks=4, key=jax.random.key(0), method="svd")
    with pytest.raises(ValueError, match="x0"):
        nads(init, SHAPE, num_networks=4, key=jax.random.key(0), x0=jnp.ones(3))
    with pytest.raises(ValueError, match="output"):
        nads(init, SHAPE, num_networks=4, key=jax.random.key(0), output="last")


@pytest.mark.parametrize("method", ["covariance", "gram"])
def test_fd_scale_is_the_authors_secant_estimator(method):
    """``fd_scale=s, center=True`` equals the published estimator written out: central secants
    ``(f(x0 + s e_i) - f(x0 - s e_i)) / 2s`` per coordinate, centred over networks (PCA); on
    a ReLU network at a large scale it differs from the gradient definition."""
    shape, m, s = (3, 3, 1), 40, 100.0
    dtype = jnp.float64

    def init_fn(k):
        k1, k2 = jax.random.split(k)
        w1 = jax.random.normal(k1, (9, 12), dtype) / 3.0
        w2 = jax.random.normal(k2, (12, 1), dtype)
        return lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ w1) @ w2

    key = jax.random.key(4)
    x0 = jax.random.normal(jax.random.key(5), shape, dtype)
    r = nads(init_fn, shape, num_networks=m, key=key, chunk_size=16, x0=x0, method=method,
             fd_scale=s, center=True)  # fmt: skip
    _, k_net = jax.random.split(key)
    keys = jax.random.split(k_net, m)
    rows = []
    for k in keys:  # the reference, one network and one coordinate at a time
        f = init_fn(k)
        g = []
        for i in range(9):
            e = jnp.zeros(9, dtype).at[i].set(s).reshape(shape)
            g.append((f((x0 + e)[None])[0, 0] - f((x0 - e)[None])[0, 0]) / (2 * s))
        rows.append(np.asarray(g))
    G = np.stack(rows)
    G = G - G.mean(0)
    vals, vecs = np.linalg.eigh(G.T @ G / m)
    np.testing.assert_allclose(r.eigenvalues, vals[::-1][:9], rtol=1e-9, atol=1e-12)
    top = np.abs(np.sum(np.asarray(r.eigenvectors[0]).ravel() * vecs[:, -1]))
    np.testing.assert_allclose(top, 1.0, rtol=1e-8)
    grad = nads(init_fn, shape, num_networks=m, key=key, chunk_size=16, x0=x0, method=method)
    cos = np.abs(np.sum(np.asarray(grad.eigenvectors[0]).ravel() * vecs[:, -1]))
    assert cos < 0.99  # the secant at s = 100 is not the gradient on a ReLU network


def test_fourier_accuracy_map_batching_modes_agree():
    shape = (4, 4)

    def init_params(k):
        return {"w": 0.01 * jax.random.normal(k, (16, 2)), "b": jnp.zeros(2)}

    def linear(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    kw = dict(key=jax.random.key(1), frequencies=[(0, 1), (2, 2), (1, 3)], n_train=200,
              n_test=300, steps=40, chunk_size=2)  # fmt: skip
    a = fourier_accuracy_map(init_params, linear, shape, batching="vmap", **kw)
    for form in ("map", "host"):  # host: one jitted step per call (the CPU default)
        b = fourier_accuracy_map(init_params, linear, shape, batching=form, **kw)
        assert np.max(np.abs(np.asarray(a.accuracy) - np.asarray(b.accuracy))) <= 2 / 300
    with pytest.raises(ValueError, match="batching"):
        fourier_accuracy_map(init_params, linear, shape, batching="pmap", **kw)
