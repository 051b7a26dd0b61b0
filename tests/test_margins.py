"""Directional, subspace and random-subspace margins against analytic geometry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from _nets import affine
from conftest import rtol_for

import geomrobust as gr
from geomrobust.measures import (
    dct_subspaces,
    normalized_robustness,
    random_subspace_margins,
    subspace_margins,
    summarize_bands,
)
from geomrobust.search import margin_along


def _unit(v):
    return v / jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=1).reshape(
        (-1,) + (1,) * (v.ndim - 1)
    )


def test_margin_along_affine(dtype):
    key = jax.random.key(0)
    d, k = 6, 3
    w = jax.random.normal(key, (d, k), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (k,), dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (4, d), dtype)
    dirs = _unit(jax.random.normal(jax.random.fold_in(key, 3), (5, d), dtype))
    res = margin_along(fn, x, dirs, max_dist=20.0, tol=1e-7 if dtype == jnp.float64 else 1e-5)
    assert res.margin.shape == (4, 5) and res.margin.dtype == dtype
    # closed form: first t > 0 where some F_k + t <w_k - w_y, d> reaches 0
    W, X, D = (np.asarray(a, np.float64) for a in (w, x, dirs))
    logits = X @ W + np.asarray(b, np.float64)
    ref = np.full((4, 5), np.inf)
    for n in range(4):
        y = logits[n].argmax()
        for m in range(5):
            for j in range(k):
                if j == y:
                    continue
                slope = (W[:, j] - W[:, y]) @ D[m]
                if slope > 0:
                    t = (logits[n, y] - logits[n, j]) / slope
                    ref[n, m] = min(ref[n, m], t)
    ref[ref > 20.0] = np.inf
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(np.asarray(res.margin)), finite)
    assert finite.sum() >= 5 and (~finite).sum() >= 1  # both cases exercised
    np.testing.assert_allclose(np.asarray(res.margin)[finite], ref[finite], rtol=2e-5)
    # converged where a label change was found; no change within max_dist: NOT_FOUND
    np.testing.assert_array_equal(np.asarray(res.converged), finite)
    want = np.where(finite, gr.Status.SUCCESS, gr.Status.NOT_FOUND)
    np.testing.assert_array_equal(np.asarray(res.status), want)


def test_margin_along_sphere_chord(dtype):
    R = 2.0
    key = jax.random.key(1)

    def ball(x):
        f0 = R**2 - jnp.sum(x**2, axis=1)
        return jnp.stack([f0, jnp.zeros_like(f0)], axis=1)

    x = 0.8 * _unit(jax.random.normal(key, (3, 4), dtype))
    dirs = _unit(jax.random.normal(jax.random.fold_in(key, 1), (3, 6, 4), dtype).reshape(18, 4))
    dirs = dirs.reshape(3, 6, 4)  # per-example directions
    res = margin_along(ball, x, dirs, max_dist=5.0, tol=1e-9 if dtype == jnp.float64 else 1e-6)
    X, D = np.asarray(x, np.float64), np.asarray(dirs, np.float64)
    xd = np.einsum("nd,nmd->nm", X, D)
    chord = -xd + np.sqrt(xd**2 - np.sum(X**2, 1)[:, None] + R**2)
    np.testing.assert_allclose(res.margin, chord, rtol=max(1e-8, 5 * rtol_for(dtype)))
    np.testing.assert_array_equal(res.adv_label, 1)


def test_margin_along_rejects_non_unit():
    fn = affine(jnp.eye(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="unit vectors"):
        margin_along(fn, jnp.ones((2, 3)), 2 * jnp.eye(3), max_dist=1.0)
    with pytest.raises(ValueError, match="directions must have shape"):
        margin_along(fn, jnp.ones((2, 3)), jnp.eye(4), max_dist=1.0)


def test_dct_bases_are_scipy_atoms():
    h, w, c, K, T = 6, 5, 2, 3, 2
    bases = dct_subspaces((h, w, c), K, T)
    assert len(bases) == 2 and all(b.shape == (h * w * c, c * K * K) for b in bases)
    for basis in bases:  # blocks overlap when T < K: each one is orthonormal
        np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)
    # column (u, v, ch) of block j is the image whose 2-D DCT is a single 1 at (jT+u, jT+v, ch)
    for j, basis in enumerate(bases):
        for col in range(basis.shape[1]):
            u, rest = divmod(col, K * c)
            v, ch = divmod(rest, c)
            img = basis[:, col].reshape(h, w, c)
            coef = scipy.fft.dctn(img, norm="ortho", axes=(0, 1))
            expected = np.zeros((h, w, c))
            expected[j * T + u, j * T + v, ch] = 1
            np.testing.assert_allclose(coef, expected, atol=1e-12)
    assert len(dct_subspaces((28, 28), 8, 1)) == 21
    assert len(dct_subspaces((32, 32, 3), 8, 2)) == 13
    with pytest.raises(ValueError, match="block"):
        dct_subspaces((8, 8), 9, 1)


def test_subspace_margins_affine_and_summary(dtype):
    key = jax.random.key(2)
    shape = (6, 6, 1)
    w = jax.random.normal(key, (36, 3), dtype)
    fn = affine(w, jnp.zeros(3, dtype))
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, *shape), dtype)
    bases = dct_subspaces(shape, 2, 2)
    res = subspace_margins(fn, x, None, bases, slots=2)
    assert res.margin.shape == (3, 5) and res.margin.dtype == dtype
    X, W = np.asarray(x, np.float64).reshape(5, -1), np.asarray(w, np.float64)
    logits = X @ W
    for i, s in enumerate(bases):
        P = s @ s.T
        for n in range(5):
            y = logits[n].argmax()
            ref = min(
                abs(logits[n, j] - logits[n, y]) / np.linalg.norm(P @ (W[:, j] - W[:, y]))
                for j in range(3)
                if j != y
            )
            np.testing.assert_allclose(res.margin[i, n], 1.02 * ref, rtol=50 * rtol_for(dtype))
    summ = summarize_bands(res.margin, res.converged)
    np.testing.assert_allclose(summ.median, np.median(np.asarray(res.margin, np.float64), 1))
    # one unconverged example: excluded from the quartiles, counted as +inf in median_all
    m = np.array([[1.0, 2.0, 3.0, np.inf]])
    c = np.array([[True, True, True, False]])
    s = summarize_bands(m, c)
    assert s.median[0] == 2.0 and s.median_all[0] == 2.5 and s.n_unconverged[0] == 1
    s = summarize_bands(m, np.zeros_like(c))
    assert np.isnan(s.median[0]) and np.isinf(s.median_all[0])


def test_random_subspace_ratio_on_hyperplane():
    """Hyperplane: margin in S is exactly margin / ||P_S n||, and the median ratio follows the
    Beta(m/2, (D-m)/2) law of ||P_S n||², near sqrt(D/m)."""
    dtype = jnp.float64
    d, m = 100, 10
    key = jax.random.key(3)
    nvec = _unit(jax.random.normal(key, (1, d), dtype))[0]
    fn = affine(jnp.stack([jnp.zeros(d, dtype), nvec], axis=1), jnp.asarray([0.0, -1.0], dtype))
    x = jnp.zeros((40, d), dtype) + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (40, d))
    res = random_subspace_margins(fn, x, dim=m, key=jax.random.key(4), num_draws=3)
    assert res.margin.shape == (3, 40) and res.predicted_ratio == math.sqrt(d / m)
    # exact per draw: ratio = 1 / ||P_S n|| (same for all examples of a draw)
    r = np.asarray(res.ratio)
    np.testing.assert_allclose(r, r[:, :1] * np.ones((1, 40)), rtol=1e-9)
    # the law: E||P_S n||² = m / D, so the ratio is sqrt(D/m) within sampling spread
    assert 0.5 * res.predicted_ratio < res.median_ratio < 2.0 * res.predicted_ratio
    rho = normalized_robustness(res.minimal_margin, x, res.minimal_converged)
    ref = np.mean(1.02 * (1 - np.asarray(x) @ np.asarray(nvec)) / np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(rho, ref, rtol=1e-9)


def test_random_direction_margins_on_hyperplane():
    """m = 1 with margin_along: the margin along ±u is margin / |<n, u>|, and the median of
    sqrt(D) |<n, u>| over uniform u tends to the median of |N(0, 1)| (0.674): the random
    margin is ~ sqrt(D) / 0.674 times the minimal one."""
    d, m = 100, 400
    key = jax.random.key(5)
    nvec = _unit(jax.random.normal(key, (1, d)))[0].astype(jnp.float64)
    fn = affine(jnp.stack([jnp.zeros(d), nvec], axis=1), jnp.asarray([0.0, -1.0]))
    x = jnp.zeros((1, d))
    u = _unit(jax.random.normal(jax.random.fold_in(key, 1), (m, d), jnp.float64))
    res = margin_along(fn, x, jnp.concatenate([u, -u]), max_dist=1e4, steps=4096, tol=1e-10)
    both = np.asarray(res.margin).reshape(2, m)
    t = both.min(axis=0)  # margin inside the line span(u)
    cos = np.abs(np.asarray(u) @ np.asarray(nvec))
    ok = cos > 1e-4  # beyond max_dist otherwise
    np.testing.assert_allclose(t[ok], 1 / cos[ok], rtol=1e-8)
    med = np.median(np.sqrt(d) * cos)
    assert abs(med - 0.674) < 0.1
