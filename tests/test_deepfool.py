"""DeepFool against closed forms: affine classifiers (any Lp, subspaces, candidates) and a ball."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import affine, mlp
from conftest import rtol_for

from geomrobust.search import deepfool, deepfool_dataset

ETA = 0.02


def _affine_problem(key, dtype, n=6, d=12, k=4):
    w = jax.random.normal(key, (d, k), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (k,), dtype)
    x = jax.random.normal(jax.random.fold_in(key, 2), (n, d), dtype)
    return affine(w, b), w, x


def _closed_form(fn, w, x, q, proj=None, classes=None):
    """min_k |F_k| / ||P w_k||_q and its argmin, per example (float64 NumPy)."""
    w = np.asarray(w, np.float64)
    logits = np.asarray(fn(x), np.float64)
    y = logits.argmax(1)
    out, arg = [], []
    for n in range(x.shape[0]):
        ks = [j for j in range(w.shape[1]) if j != y[n]] if classes is None else classes[n]
        best = (np.inf, -1)
        for j in ks:
            wk = w[:, j] - w[:, y[n]]
            if proj is not None:
                wk = proj @ wk
            dist = abs(logits[n, j] - logits[n, y[n]]) / np.linalg.norm(wk, ord=q)
            best = min(best, (dist, j))
        out.append(best[0])
        arg.append(best[1])
    return np.array(out), np.array(arg)


@pytest.mark.parametrize("norm,q", [(2, 2), (jnp.inf, 1), (3.0, 1.5)])
def test_affine_margin_is_closed_form(dtype, norm, q):
    fn, w, x = _affine_problem(jax.random.key(0), dtype)
    res = deepfool(fn, x, norm=norm, overshoot=ETA)
    ref, arg = _closed_form(fn, w, x, q)
    assert res.margin.dtype == dtype and res.perturbation.dtype == dtype
    assert bool(res.converged.all()) and np.all(np.asarray(res.iterations) == 1)
    np.testing.assert_allclose(res.margin / (1 + ETA), ref, rtol=50 * rtol_for(dtype))
    np.testing.assert_array_equal(res.adv_label, arg)
    # the margin is the Lp norm of the returned perturbation, which flips the label
    p = {2: 2, jnp.inf: np.inf, 3.0: 3}[norm]
    flat = np.asarray(res.perturbation, np.float64).reshape(x.shape[0], -1)
    np.testing.assert_allclose(res.margin, np.linalg.norm(flat, ord=p, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(fn(x + res.perturbation).argmax(1), res.adv_label)


def test_affine_subspace_margin(dtype):
    key = jax.random.key(3)
    fn, w, x = _affine_problem(key, dtype)
    s, _ = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, 5), (12, 4), dtype))
    res = deepfool(fn, x, subspace=s)
    s64 = np.asarray(s, np.float64)
    ref, _ = _closed_form(fn, w, x, 2, proj=s64 @ s64.T)
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.margin / (1 + ETA), ref, rtol=50 * rtol_for(dtype))
    # the perturbation lies in span(S)
    r = np.asarray(res.perturbation, np.float64)
    np.testing.assert_allclose(s64 @ (s64.T @ r.T), r.T, atol=1e-5 * np.abs(r).max())


def test_candidates_restrict_to_top_logits(dtype):
    key = jax.random.key(3)
    fn, w, x = _affine_problem(key, dtype)
    logits = np.asarray(fn(x), np.float64)
    order = np.argsort(-logits, axis=1)
    res = deepfool(fn, x, candidates=1)
    ref, _ = _closed_form(fn, w, x, 2, classes=order[:, 1:2])
    np.testing.assert_allclose(res.margin / (1 + ETA), ref, rtol=50 * rtol_for(dtype))
    # the step towards class order[:, 1] may cross into a third class first
    assert np.all(np.asarray(res.adv_label) != order[:, 0])


def _ball(radius):
    """Class 0 inside the ball ``||x|| < R``, class 1 outside: F = ||x||² - R²."""

    def logits_fn(x):
        f0 = radius**2 - jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
        return jnp.stack([f0, jnp.zeros_like(f0)], axis=1)

    return logits_fn


def test_ball_from_inside_is_radial(dtype):
    key = jax.random.key(3)
    R = 2.0
    u = jax.random.normal(key, (5, 7), dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    rad = jnp.linspace(0.5, 1.8, 5, dtype=dtype)
    x = u * rad[:, None]
    res = deepfool(_ball(R), x)
    assert bool(res.converged.all()) and np.all(np.asarray(res.iterations) == 1)
    # one Newton step on the convex F overshoots the sphere: (1+η)(R² - |x|²) / (2|x|)
    rad64 = np.asarray(rad, np.float64)
    ref = (1 + ETA) * (R**2 - rad64**2) / (2 * rad64)
    np.testing.assert_allclose(res.margin, ref, rtol=20 * rtol_for(dtype))
    assert np.all(np.asarray(res.margin) >= (R - rad64) * (1 + ETA) * (1 - 1e-6))
    cos = jnp.sum(res.perturbation * u, axis=1) / res.margin
    np.testing.assert_allclose(cos, 1.0, rtol=10 * rtol_for(dtype))


def test_misclassified_and_unflippable(dtype):
    key = jax.random.key(3)
    fn, _, x = _affine_problem(key, dtype)
    pred = fn(x).argmax(1)
    y = pred.at[:2].set((pred[:2] + 1) % 4)  # first two examples are misclassified
    res = deepfool(fn, x, y)
    np.testing.assert_array_equal(res.margin[:2], 0)
    assert bool(res.converged.all()) and np.all(np.asarray(res.iterations[:2]) == 0)
    np.testing.assert_array_equal(res.adv_label[:2], pred[:2])
    assert np.all(np.asarray(res.margin[2:]) > 0)

    const = affine(jnp.zeros((12, 3), dtype), jnp.asarray([1.0, 0.0, 0.0], dtype))
    res = deepfool(const, x, steps=5)  # zero gradients: nothing to follow
    assert not bool(res.converged.any()) and bool(jnp.isinf(res.margin).all())
    assert bool(jnp.isfinite(res.perturbation).all())
    np.testing.assert_array_equal(res.adv_label, -1)


def test_box_keeps_iterates_feasible(dtype):
    key = jax.random.key(3)
    fn, _, x = _affine_problem(key, dtype)
    x = jax.nn.sigmoid(x)  # inside [0, 1]
    free = deepfool(fn, x)
    res = deepfool(fn, x, bounds=(0.0, 1.0), steps=100)
    adv = x + res.perturbation
    ok = np.asarray(res.converged)
    assert ok.mean() > 0.5
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    np.testing.assert_array_equal(fn(adv).argmax(1)[ok], res.adv_label[ok])
    # the box can only make the minimal perturbation longer
    assert np.all(np.asarray(res.margin)[ok] >= np.asarray(free.margin)[ok] * (1 - 1e-5))


@pytest.mark.parametrize(
    "kw,loop", [({}, "host"), ({"norm": jnp.inf, "candidates": 2, "bounds": (-9.0, 9.0)}, "device")]
)
def test_continuous_batching_equals_plain_driver(dtype, kw, loop):
    key = jax.random.key(4)
    fn = mlp(key, (3, 4), 5, dtype=dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (23, 3, 4), dtype)
    y = jnp.where(jnp.arange(23) % 7 == 0, 0, fn(x).argmax(1))  # some misclassified
    a = deepfool(fn, x, y, **kw)
    b = deepfool_dataset(
        fn, x, y, slots=16, chunk_size=20, loop=loop, **kw
    )  # 2 chunks, the last padded; refills, then the tail shrinks from 16 to 4 slots
    np.testing.assert_array_equal(a.converged, b.converged)
    np.testing.assert_array_equal(a.adv_label, b.adv_label)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(a.margin, b.margin, rtol=10 * rtol_for(dtype))
    assert b.margin.dtype == dtype and b.perturbation.shape == x.shape


@pytest.mark.parametrize("loop", ["host", "device"])
def test_continuous_batching_numpy_input_stays_on_host(dtype, loop):
    """A NumPy input is put on the device one chunk at a time; same results as a JAX input,
    over several chunks (tail ladder of 16 and 4 slots)."""
    key = jax.random.key(5)
    fn = mlp(key, (6,), 4, dtype=dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (45, 6), dtype)
    kw = dict(slots=16, chunk_size=20, loop=loop, steps=30)  # 3 chunks, the last padded
    a = deepfool_dataset(fn, x, **kw)
    b = deepfool_dataset(fn, np.asarray(x), **kw)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert b.margin.dtype == dtype and b.perturbation.shape == x.shape
    assert np.all(np.asarray(b.converged)) and np.all(np.isfinite(np.asarray(b.margin)))
    plain = deepfool(fn, x, steps=30)  # same arithmetic, other batch composition
    np.testing.assert_array_equal(a.iterations, plain.iterations)
    np.testing.assert_allclose(a.margin, plain.margin, rtol=10 * rtol_for(dtype))


def test_argument_errors():
    fn = mlp(jax.random.key(0), (4,), 3)
    x = jnp.ones((2, 4), jnp.float32)
    with pytest.raises(ValueError, match="norm"):
        deepfool(fn, x, norm=1)
    with pytest.raises(ValueError, match="y must have shape"):
        deepfool(fn, x, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="orthonormal"):
        deepfool(fn, x, subspace=jnp.ones((4, 2), jnp.float32))
    with pytest.raises(ValueError, match="norm=2 only"):
        deepfool(fn, x, norm=jnp.inf, subspace=jnp.eye(4, 2, dtype=jnp.float32))
    with pytest.raises(TypeError, match="x must be a floating"):
        deepfool(fn, jnp.ones((2, 4), jnp.int32))


def _box_cnn(dtype=jnp.float32):
    from _forms import cnn_apply, cnn_params

    import geomrobust as gr

    p = cnn_params(jax.random.key(3))
    p = jax.tree.map(lambda a: (3.0 * a).astype(dtype), p)  # sharper logits: more clipping
    return gr.Classifier(cnn_apply, p)


@pytest.mark.parametrize("norm", [2, jnp.inf])
@pytest.mark.parametrize("driver", ["dataset", "traced"])
def test_box_points_cross_robustly(norm, driver):
    """With a box every point reported converged is adversarial when evaluated alone, in a
    batch of another size, and in float64 (before, about 1 point in 5 sat within float32
    rounding of the boundary and could flip back)."""
    import geomrobust as gr

    clf = _box_cnn()
    x = jax.random.uniform(jax.random.key(0), (48, 8, 8, 1), jnp.float32)
    if driver == "dataset":
        res = gr.deepfool(clf, x, norm=norm, bounds=(0.0, 1.0), chunk_size=16)
    else:
        res = jax.jit(lambda v: gr.deepfool(clf, v, norm=norm, bounds=(0.0, 1.0)))(x)
    conv = np.asarray(res.converged) & (np.asarray(res.margin) > 0)
    assert conv.mean() > 0.8
    adv = x + res.perturbation
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    y = np.asarray(jnp.argmax(clf(x), -1))
    alone = np.array([int(jnp.argmax(clf(adv[i : i + 1]), -1)[0]) for i in range(48)])
    other = np.asarray(jnp.argmax(clf(jnp.concatenate([adv, x[:5]]))[:48], -1))
    clf64 = jax.tree.map(lambda a: a.astype(jnp.float64), clf)
    f64 = np.asarray(jnp.argmax(clf64(adv.astype(jnp.float64)), -1))
    for name, lab in (("alone", alone), ("other batch", other), ("float64", f64)):
        assert np.all(lab[conv] != y[conv]), name
    np.testing.assert_array_equal(alone[conv], np.asarray(res.adv_label)[conv])


@pytest.mark.parametrize("loop", ["host", "device"])
def test_dataset_results_are_one_host_copy(loop):
    """Flat memory in N (docs/performance.md, section 1): with a box, ``deepfool_dataset``
    assembles its ``(N, ...)`` results in ONE set of host buffers (each chunk is box-finalized
    by its runner; a second pass held two sets) and returns them without a copy. The host
    allocations of a warm run (tracemalloc: NumPy's buffers, not XLA's) peak within 1.5x of
    the results' size, and after the call the results still hold those buffers (aliased by
    the returned arrays, not copied and freed)."""
    import tracemalloc

    key = jax.random.key(6)
    fn = mlp(key, (1024,), 10)
    n = 1024
    x = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (n, 1024)), np.float32)
    kw = dict(bounds=(0.0, 1.0), chunk_size=128, slots=32, loop=loop, steps=10)
    deepfool_dataset(fn, x, **kw)  # compile
    tracemalloc.start()
    try:
        res = deepfool_dataset(fn, x, **kw)
        jax.block_until_ready(res)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(np.dtype(a.dtype).itemsize * a.size for a in res)  # 4 MiB of perturbations
    assert res.perturbation.shape == x.shape and size > 4e6
    assert peak < 1.5 * size, (peak, size)
    assert current >= size, (current, size)  # held by the results: no copy at the end
