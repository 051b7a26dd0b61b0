"""Gradient-image alignment against its closed form (Etmann et al. 2019, theorem 1: for a
bias-free linear model α(x) ||x|| is the distance to the boundary), saliency maps against
dense gradients, and class synthesis by targeted attacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.measures import class_synthesis, gradient_alignment, saliency_maps

D = 10


def _linear(dtype, k=2, seed=0):
    w = jnp.asarray(np.random.default_rng(seed).normal(size=(D, k)), dtype)
    return (lambda x: x.reshape(x.shape[0], -1) @ w), w


@pytest.mark.parametrize("gradient", ["logit", "margin"])
def test_alignment_times_norm_is_the_margin_of_a_bias_free_linear_model(dtype, gradient):
    w = jnp.asarray(np.random.default_rng(0).normal(size=D), dtype)

    def f(x):  # two classes, logits ±<w, x>/2: f_1 - f_0 = <w, x>, no bias
        g = x @ w / 2
        return jnp.stack([-g, g], axis=-1)

    x = jnp.asarray(np.random.default_rng(1).normal(size=(32, D)), dtype)
    a = gradient_alignment(f, x, gradient=gradient)
    assert a.alignment.dtype == dtype and bool(a.valid.all())
    distance = np.abs(np.asarray(x @ w)) / np.linalg.norm(np.asarray(w))
    norms = np.linalg.norm(np.asarray(x), axis=1)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(a.alignment) * norms, distance, rtol=rtol)
    # and DeepFool's margin is the same distance (up to its overshoot)
    m = gr.deepfool(f, x)
    np.testing.assert_allclose(np.asarray(m.margin) / 1.02, distance, rtol=1e-4)


def test_alignment_uses_the_given_label_and_flags_degenerate_examples():
    f, w = _linear(jnp.float64, k=3)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, D)))
    x = x.at[0].set(0.0)  # x = 0: alignment undefined
    y = np.array([0, 1, 2, 0, 1, 2])
    a = gradient_alignment(f, x, y)
    wn = np.asarray(w)
    for n in range(1, 6):
        g = wn[:, y[n]]
        xn = np.asarray(x[n])
        expected = abs(xn @ g) / (np.linalg.norm(xn) * np.linalg.norm(g))
        assert float(a.alignment[n]) == pytest.approx(expected, rel=1e-12)
    assert not bool(a.valid[0]) and np.isnan(float(a.alignment[0]))
    np.testing.assert_array_equal(np.asarray(a.label), y)
    with pytest.raises(ValueError, match="gradient"):
        gradient_alignment(f, x, gradient="loss")


def test_saliency_maps_against_dense_gradients():
    f, w = _linear(jnp.float64, k=3)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(5, D)))
    y = np.asarray(jnp.argmax(f(x), -1))
    g = saliency_maps(f, x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(w).T[y], rtol=1e-12)
    gx = saliency_maps(f, x, method="gradient_x_input")
    np.testing.assert_allclose(np.asarray(gx), np.asarray(x) * np.asarray(w).T[y], rtol=1e-12)
    # SmoothGrad of a linear model is its gradient; of a nonlinear one, the mean of dense
    # gradients at the same noisy points
    sg = saliency_maps(f, x, method="smoothgrad", key=jax.random.key(0), samples=8)
    np.testing.assert_allclose(np.asarray(sg), np.asarray(w).T[y], rtol=1e-12)

    def h(z):
        return jnp.tanh(z @ jnp.asarray(np.asarray(w))) ** 2

    sg = saliency_maps(h, x, y, method="smoothgrad", key=jax.random.key(1), samples=16)
    assert sg.shape == x.shape and np.all(np.isfinite(np.asarray(sg)))
    sg2 = saliency_maps(
        h, x, y, method="smoothgrad", key=jax.random.key(1), samples=16, chunk_size=2
    )
    np.testing.assert_allclose(np.asarray(sg2), np.asarray(sg), rtol=1e-12)
    with pytest.raises(ValueError, match="key"):
        saliency_maps(f, x, method="smoothgrad")
    with pytest.raises(ValueError, match="method"):
        saliency_maps(f, x, method="lime")


def test_class_synthesis_reaches_every_class_of_a_linear_model():
    f, _ = _linear(jnp.float32, k=3)
    seeds = jnp.asarray(np.random.default_rng(4).uniform(size=(2, D)), jnp.float32)
    s = class_synthesis(f, seeds, eps=20.0, steps=40, bounds=None)
    assert s.images.shape == (2, 3, D) and s.success.shape == (2, 3)
    assert bool(s.success.all()) and float(s.confidence.min()) > 0.9
    norms = np.linalg.norm(np.asarray(s.images) - np.asarray(seeds)[:, None], axis=-1)
    assert norms.max() <= 20.0 * (1 + 1e-5)
