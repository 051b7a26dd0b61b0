"""Error in Gaussian noise against the half-space closed form Φ(-d/σ) (Fawzi et al. 2016, Ford
et al. 2019), and its comparison with DeepFool margins."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import geomrobust as gr
from geomrobust.measures import (
    gaussian_noise_errors,
    halfspace_noise_error,
    noise_vs_margin,
    sigma_at_error,
)

D = 12


def _halfspace(dtype):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=D), dtype)
    b = jnp.asarray(0.3, dtype)

    def f(x):
        g = x @ w + b
        return jnp.stack([jnp.zeros_like(g), g], axis=-1)

    return f, w, b


def test_halfspace_noise_error_is_the_normal_tail():
    d = np.array([0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(np.asarray(halfspace_noise_error(d, 0.5)), norm.cdf(-d / 0.5))


def test_error_in_noise_of_a_half_space_is_phi_of_minus_d_over_sigma(dtype):
    f, w, b = _halfspace(dtype)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(24, D)) * 0.4, dtype)
    g = np.asarray(x @ w + b)
    y = (g > 0).astype(np.int32)
    y[:4] = 1 - y[:4]  # four misclassified examples
    d = np.abs(g) / np.linalg.norm(np.asarray(w))
    sigmas = [0.1, 0.3, 1.0]
    samples = 4000
    res = gaussian_noise_errors(f, x, y, sigmas, key=jax.random.key(0), samples=samples)
    assert res.example_error.shape == (24, 3) and res.n_invalid == 0
    correct = np.asarray(res.correct)
    np.testing.assert_array_equal(correct, (g > 0) == y)
    expected = np.where(
        correct[:, None], norm.cdf(-d[:, None] / sigmas), norm.cdf(d[:, None] / sigmas)
    )
    tol = 5 * np.sqrt(expected * (1 - expected) / samples) + 2 / samples
    assert np.all(np.abs(np.asarray(res.example_error) - expected) <= tol)
    np.testing.assert_allclose(np.asarray(res.error), np.asarray(res.example_error).mean(0))
    cmp = noise_vs_margin(res, d)
    np.testing.assert_allclose(np.asarray(cmp.predicted), expected, rtol=1e-4, atol=1e-7)
    assert np.all(np.abs(np.asarray(cmp.median_ratio) - 1) < 0.05), cmp.median_ratio
    # DeepFool (around the predicted label) finds (1 + overshoot) d on an affine model: the
    # half-space prediction from its margins fits the measured error
    m = gr.deepfool(f, x)
    np.testing.assert_allclose(np.asarray(m.margin), 1.02 * d, rtol=1e-4)
    med = np.asarray(noise_vs_margin(res, m.margin).median_ratio)
    assert np.all(np.abs(med - 1) < 0.15), med


def test_noise_draws_are_common_to_every_sigma_and_independent_of_chunks():
    f, _, _ = _halfspace(jnp.float32)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(10, D)), jnp.float32)
    y = np.asarray(jnp.argmax(f(x), -1))
    kw = dict(key=jax.random.key(5), samples=64)
    a = gaussian_noise_errors(f, x, y, [0.2, 0.5, 2.0], chunk_size=3, **kw)
    b2 = gaussian_noise_errors(f, x, y, [0.2, 0.5, 2.0], chunk_size=10, **kw)
    np.testing.assert_array_equal(np.asarray(a.example_error), np.asarray(b2.example_error))
    # common draws: for a half-space a draw that crosses at σ crosses at every larger σ
    assert np.all(np.diff(np.asarray(a.example_error), axis=1) >= 0)


def test_sigma_at_error_interpolates_in_log_sigma():
    res = gr.measures.NoiseErrors(
        jnp.asarray([0.1, 0.2, 0.4, 0.8]), jnp.asarray([0.0, 0.1, 0.3, 0.6]), None, None, None, 0, 1
    )
    assert sigma_at_error(res, 0.1) == pytest.approx(0.2)
    assert sigma_at_error(res, 0.2) == pytest.approx(np.exp((np.log(0.2) + np.log(0.4)) / 2))
    assert np.isnan(sigma_at_error(res, 0.9))
    assert sigma_at_error(res._replace(error=jnp.asarray([0.5, 0.6, 0.7, 0.8])), 0.1) == 0.1
    with pytest.raises(ValueError, match="rate"):
        sigma_at_error(res, 0.0)


def test_noise_errors_check_their_input():
    f, _, _ = _halfspace(jnp.float32)
    x = jnp.ones((3, D), jnp.float32)
    y = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="sigmas"):
        gaussian_noise_errors(f, x, y, [0.1, -1.0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigmas"):
        gaussian_noise_errors(f, x, y, [], key=jax.random.key(0))
    with pytest.raises(ValueError, match="y"):
        gaussian_noise_errors(f, x, np.array([0, 1, 2]), [0.1], key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        gaussian_noise_errors(f, x, y, [0.1], key=0)
    res = gaussian_noise_errors(f, x, y, [0.1], key=jax.random.key(0), samples=4)
    with pytest.raises(ValueError, match="margin"):
        noise_vs_margin(res, np.ones(2))
