"""FGSM / PGD, robust accuracy, SparseFool and universal perturbations on analytic classifiers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import affine, mlp
from conftest import rtol_for

from geomrobust.measures import normalized_robustness
from geomrobust.search import (
    fgsm,
    linear_solver,
    pgd,
    robust_accuracy,
    sparsefool,
    universal_perturbation,
)
from geomrobust.train import pgd_at_loss


def _binary(dtype, d=8, key=0):
    """Two-class affine classifier, F = <w, x> + b for class 1 vs 0."""
    k = jax.random.key(key)
    w = jax.random.normal(k, (d,), dtype)
    W = jnp.stack([jnp.zeros(d, dtype), w], axis=1)
    return affine(W, jnp.asarray([0.0, -0.3], dtype)), w


def _linf_margin(fn, w, x):
    """Closed form |F| / ||w||_1 of the binary affine classifier."""
    logits = np.asarray(fn(x), np.float64)
    return np.abs(logits[:, 1] - logits[:, 0]) / np.abs(np.asarray(w, np.float64)).sum()


def test_fgsm_pgd_on_affine(dtype):
    fn, w = _binary(dtype)
    x = 0.1 * jax.random.normal(jax.random.key(1), (16, 8), dtype)
    y = fn(x).argmax(1)
    s = jnp.where(y == 0, 1.0, -1.0).astype(dtype)[:, None]  # ascent direction of the loss
    for eps in (0.05, 0.4):
        r = fgsm(fn, x, y, eps=eps)
        np.testing.assert_allclose(r.perturbation, eps * s * jnp.sign(w), rtol=rtol_for(dtype))
        assert r.perturbation.dtype == dtype
        r2 = fgsm(fn, x, y, eps=eps, norm=2)
        np.testing.assert_allclose(
            r2.perturbation, eps * s * w / jnp.linalg.norm(w), rtol=10 * rtol_for(dtype)
        )
        # success exactly when the Linf / L2 margin is below eps
        lin = _linf_margin(fn, w, x)
        np.testing.assert_array_equal(r.success, lin < eps)
        # on a linear model PGD (any start) ends at the same vertex of the cube as FGSM
        p = pgd(fn, x, y, key=jax.random.key(2), eps=eps, steps=20)
        np.testing.assert_allclose(p.perturbation, r.perturbation, rtol=10 * rtol_for(dtype))
        p2 = pgd(fn, x, y, key=jax.random.key(2), eps=eps, norm=2, steps=30)
        assert float(jnp.linalg.norm(p2.perturbation, axis=1).max()) <= eps * (1 + 1e-5)
        # the random start decays under the projections; the loss-ascent part saturates
        gain = jnp.sum(p2.perturbation * s * w, axis=1) / jnp.linalg.norm(w)
        assert float(gain.min()) >= 0.95 * eps
        p3 = pgd(fn, x, y, key=jax.random.key(2), eps=eps, norm=2, random_start=False)
        np.testing.assert_allclose(p3.perturbation, r2.perturbation, atol=eps * 1e-5)
    # box and targeted mode
    xb = jax.nn.sigmoid(x)
    yb = fn(xb).argmax(1)
    p = pgd(fn, xb, yb, key=jax.random.key(3), eps=0.5, bounds=(0.0, 1.0), target=1 - yb)
    assert float(p.adversarial.min()) >= 0 and float(p.adversarial.max()) <= 1
    np.testing.assert_array_equal(p.success, p.adv_label == 1 - yb)


def test_pgd_unrolled_equals_fori_loop(dtype):
    """``unroll`` changes how XLA runs the loop, not the iterates."""
    fn = mlp(jax.random.key(0), (6,), 4, dtype=dtype)
    x = jax.random.normal(jax.random.key(1), (9, 6), dtype)
    y = fn(x).argmax(1)
    kw = dict(key=jax.random.key(2), eps=0.3, steps=5)
    a = pgd(fn, x, y, **kw)
    for unroll in (True, 2):
        b = pgd(fn, x, y, unroll=unroll, **kw)
        np.testing.assert_allclose(b.perturbation, a.perturbation, rtol=rtol_for(dtype), atol=0)
        np.testing.assert_array_equal(b.adv_label, a.adv_label)
    assert float(jnp.abs(a.perturbation).max()) > 0.1  # the attack moved
    with pytest.raises(ValueError, match="unroll"):
        pgd(fn, x, y, unroll=0, **kw)
    with pytest.raises(ValueError, match="unroll"):
        pgd_at_loss(0.1, unroll=-1)


def test_robust_accuracy_matches_margins(dtype):
    fn, w = _binary(dtype)
    x = 0.1 * jax.random.normal(jax.random.key(4), (21, 8), dtype)
    y = fn(x).argmax(1).at[0].set(1 - fn(x).argmax(1)[0])  # one misclassified example
    eps = [0.0, 0.02, 0.05, 0.1, 1.0]
    res = robust_accuracy(fn, x, y, eps, key=jax.random.key(5), steps=5, chunk_size=8)
    lin = _linf_margin(fn, w, x)
    correct = np.arange(21) != 0
    expected = [np.mean(correct & (lin >= e)) for e in eps]
    np.testing.assert_allclose(res.accuracy, expected)
    assert res.clean_accuracy == correct.mean() and res.success.shape == (5, 21)


class _Unhashable:
    """A classifier that cannot be hashed (``__eq__`` without ``__hash__``, as a dataclass
    holding arrays): the cached programs fall back to compiling per call."""

    def __init__(self, fn):
        self.fn = fn

    def __eq__(self, other):
        return self is other

    def __call__(self, x):
        return self.fn(x)


def test_robust_accuracy_target_in_chunks_and_unhashable_classifier():
    fn = mlp(jax.random.key(10), (8,), 3)
    x = jnp.clip(jax.random.normal(jax.random.key(11), (11, 8)), -2.0, 2.0)  # inside the box
    y = fn(x).argmax(1)
    kw = dict(key=jax.random.key(12), steps=3, target=(y + 1) % 3, bounds=(-2.0, 2.0))
    chunked = robust_accuracy(fn, x, y, [0.1, 0.5], chunk_size=4, **kw)  # target in chunks
    assert chunked.success.shape == (2, 11)
    for start in (0, 4):  # the full chunks: targeted PGD with fold_in(key, start)
        rows = slice(start, start + 4)
        for i, e in enumerate([0.1, 0.5]):
            ref = pgd(
                fn, x[rows], y[rows], key=jax.random.fold_in(kw["key"], start), eps=e,
                steps=3, target=kw["target"][rows], bounds=kw["bounds"],
            )  # fmt: skip
            np.testing.assert_array_equal(chunked.success[i, rows], ref.success)
    with pytest.raises(TypeError):
        hash(_Unhashable(fn))
    again = robust_accuracy(_Unhashable(fn), x, y, [0.1, 0.5], chunk_size=4, **kw)
    np.testing.assert_array_equal(again.success, chunked.success)
    with pytest.raises(TypeError, match="steps must be a Python value"):
        robust_accuracy(fn, x, y, [0.1], key=jax.random.key(0), steps=np.arange(2))


def test_linear_solver_is_l1_optimal():
    x = jnp.asarray([[0.5, 0.5, 0.5, 0.5]])
    w = jnp.asarray([[1.0, -3.0, 2.0, 0.5]])
    point = x + jnp.asarray([[0.0, 0.0, 0.0, 2.0]])  # <w, point - x> = 1.0 to cover
    z = linear_solver(x, w, point, 0.0, 1.0)
    # |w| order: coord 1 (room 0.5, gives 1.5 > 1): moves by 1/3 towards 0 alone
    np.testing.assert_allclose(z, [[0.5, 0.5 - 1 / 3, 0.5, 0.5]], rtol=1e-6)
    # needs 3.0: coord 1 to its face (1.5), coord 2 to its face (1.0), coord 0 covers 0.5
    z = linear_solver(x, w, x + jnp.asarray([[0.0, 0.0, 0.0, 6.0]]), 0.0, 1.0)
    np.testing.assert_allclose(z, [[1.0, 0.0, 1.0, 0.5]], rtol=1e-6)
    # beyond what the box allows: every coordinate ends on its face
    z = linear_solver(x, w, x + jnp.asarray([[0.0, 0.0, 0.0, 100.0]]), 0.0, 1.0)
    np.testing.assert_allclose(z, [[1.0, 0.0, 1.0, 1.0]], rtol=1e-6)


def test_sparsefool_is_sparse_and_flips(dtype):
    fn = mlp(jax.random.key(6), (20,), 3, dtype=dtype)
    x = jax.nn.sigmoid(jax.random.normal(jax.random.key(7), (6, 20), dtype))
    res = sparsefool(fn, x, bounds=(0.0, 1.0))
    ok = np.asarray(res.converged)
    assert ok.mean() >= 0.5 and res.perturbation.dtype == dtype
    adv = x + res.perturbation
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    np.testing.assert_array_equal(fn(adv).argmax(1)[ok], res.adv_label[ok])
    assert np.all(np.asarray(res.adv_label)[ok] != np.asarray(fn(x).argmax(1))[ok])
    # sparser than DeepFool L2, which changes every coordinate
    assert float(np.mean(np.asarray(res.sparsity)[ok])) < 0.6
    l1 = np.abs(np.asarray(res.perturbation).reshape(6, -1)).sum(1)
    np.testing.assert_allclose(np.asarray(res.l1)[ok], l1[ok], rtol=1e-5)


def test_universal_perturbation_on_affine():
    fn, _ = _binary(jnp.float64)
    x = 0.05 * jax.random.normal(jax.random.key(8), (30, 8), jnp.float64)  # mostly class 0
    res = universal_perturbation(fn, x, key=jax.random.key(9), eps=0.5, delta=0.1, steps=3)
    assert float(jnp.abs(res.perturbation).max()) <= 0.5 + 1e-12
    assert res.converged and res.fooling_rate >= 0.9 and len(res.history) >= 1
    fooled = fn(x + res.perturbation).argmax(1) != fn(x).argmax(1)
    np.testing.assert_allclose(float(fooled.mean()), res.fooling_rate)
    # the same key gives the same perturbation
    res2 = universal_perturbation(fn, x, key=jax.random.key(9), eps=0.5, delta=0.1, steps=3)
    np.testing.assert_array_equal(res.perturbation, res2.perturbation)
    rho = normalized_robustness(jnp.full(30, 0.1), x)
    np.testing.assert_allclose(rho, np.mean(0.1 / np.linalg.norm(x, axis=1)))
