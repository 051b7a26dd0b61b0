"""Input normalization belongs to the classifier: geometry in pixel units, the box respected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.models import Normalized

MEAN = np.array([0.49, 0.48, 0.45])
STD = np.array([0.25, 0.24, 0.26])


def _affine(key, dtype):
    w = jax.random.normal(key, (4 * 4 * 3, 3), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (3,), dtype)
    return w, b


def test_margins_are_in_pixel_units(dtype, key):
    """An affine network on normalized inputs, u = (x - μ)/s: in pixel space its logit
    difference is affine with weights w/s, so the L2 margin is |F(x)| / ||(w_k - w_y)/s||."""
    w, b = _affine(key, dtype)

    def net(u):  # expects normalized inputs
        return u.reshape(u.shape[0], -1) @ w + b

    clf = Normalized(net, MEAN, STD)
    x = jax.random.uniform(jax.random.fold_in(key, 2), (8, 4, 4, 3), dtype)
    res = gr.deepfool(clf, x)  # overshoot 0.02: one step is exact on an affine classifier
    assert res.margin.dtype == dtype and bool(res.converged.all())
    s = np.broadcast_to(STD, (4, 4, 3)).reshape(-1)
    u = ((np.asarray(x, np.float64) - MEAN) / STD).reshape(8, -1)
    wn, bn = np.asarray(w, np.float64), np.asarray(b, np.float64)
    logits = u @ wn + bn
    y = logits.argmax(1)
    exact = np.full(8, np.inf)
    for k in range(3):  # the nearest of the other classes' hyperplanes, in pixel space
        wd = (wn[:, k][None] - wn[:, y].T) / s
        other = k != y
        d = np.abs(logits[:, k] - logits[np.arange(8), y])[other]
        exact[other] = np.minimum(exact[other], d / np.linalg.norm(wd[other], axis=1))
    tol = 1e-4 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(res.margin, 1.02 * exact, rtol=tol)
    # the same network measured on normalized inputs would report margins ~1/std larger
    in_u = gr.deepfool(net, jnp.asarray(u.reshape(8, 4, 4, 3), dtype))
    assert np.all(np.asarray(in_u.margin) > np.asarray(res.margin) * 3.5)


def test_box_is_the_image_box(key):
    w, b = _affine(key, jnp.float32)
    clf = Normalized(lambda u: u.reshape(u.shape[0], -1) @ w + b, MEAN, STD)
    x = jax.random.uniform(jax.random.fold_in(key, 3), (16, 4, 4, 3))
    res = gr.deepfool(clf, x, norm=jnp.inf, bounds=(0.0, 1.0))
    adv = np.asarray(x + res.perturbation)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    ok = np.asarray(res.converged)
    assert ok.any()
    pred = np.asarray(jnp.argmax(clf(jnp.asarray(adv)), -1))
    assert np.all(pred[ok] != np.asarray(jnp.argmax(clf(x), -1))[ok])


def test_wrapper_is_a_pytree_of_the_model_and_its_normalization():
    m1 = gr.create_model("lenet", (8, 8, 3), 4, key=jax.random.key(0), activation="tanh")
    m2 = gr.create_model("lenet", (8, 8, 3), 4, key=jax.random.key(1), activation="tanh")
    a, b = Normalized(m1, MEAN, STD), Normalized(m2, 0.5, 0.25)
    x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))
    np.testing.assert_allclose(a(x), m1((x - MEAN.astype(np.float32)) / STD.astype(np.float32)),
                               rtol=1e-5)  # fmt: skip
    assert jax.tree.structure(a) == jax.tree.structure(Normalized(m2, MEAN + 0.1, STD))
    assert len(jax.tree.leaves(b)) == len(jax.tree.leaves(gr.as_classifier(m2))) + 2
    with pytest.raises(ValueError, match="std finite and > 0"):
        Normalized(m1, MEAN, np.zeros(3))
