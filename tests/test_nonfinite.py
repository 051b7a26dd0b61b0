"""A classifier that turns NaN/Inf, or has zero gradients, for ONE example mid-search: that
example is flagged (not converged) and every other example gets exactly the result it gets
with a healthy classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr

D, K, N, BAD = 4, 3, 4, 2  # example BAD carries the poison flag x[3] = 1
W = jnp.array([[4.0, -1.0, 0.5], [0.3, 1.0, -0.5], [-0.2, 0.4, 1.0], [0.0, 0.0, 0.0]])
B = jnp.array([2.0, 0.0, -0.5])
V = jnp.array([[0.2, -0.1, 0.3], [0.1, 0.2, -0.2], [-0.3, 0.1, 0.1], [0.0, 0.0, 0.0]])


def healthy(x):
    """Smooth, curved 3-class classifier on R^4 (the last coordinate is ignored)."""
    return x @ W.astype(x.dtype) + B.astype(x.dtype) + (x**2) @ V.astype(x.dtype)


def poisoned(kind):
    def logits_fn(x):
        base = healthy(x)
        flag = x[:, 3:4] > 0.5
        moved = jnp.abs(x[:, 0:1] - x[:, 3:4] * 0.1) > 0.05  # away from the clean point
        if kind == "zero-grad":
            return jnp.where(flag, jax.lax.stop_gradient(base), base)
        bad = {"nan": jnp.nan, "inf": jnp.inf, "-inf": -jnp.inf}[kind]
        return jnp.where(flag & moved, jnp.asarray(bad, x.dtype), base)

    return logits_fn


KINDS = ["nan", "-inf", "zero-grad"]


def _points(dtype):
    x = jnp.array(
        [
            [-0.4, 0.1, 0.2, 0.0],
            [-0.3, -0.2, 0.1, 0.0],
            [0.1, 0.0, 0.0, 1.0],
            [-0.5, 0.3, -0.1, 0.0],
        ],
        dtype,
    )
    return x, jnp.argmax(healthy(x), -1).astype(jnp.int32)


def _same_elsewhere(a, b):
    keep = np.arange(N) != BAD
    a, b = np.asarray(a)[keep], np.asarray(b)[keep]
    np.testing.assert_array_equal(a, b)


def _flagged(converged, *extra_finite_or_inf):
    conv = np.asarray(converged)
    assert not conv[BAD].any(), "the poisoned example must be flagged"
    for arr in extra_finite_or_inf:
        assert not np.isnan(np.asarray(arr)[np.arange(N) != BAD]).any()


@pytest.mark.parametrize("kind", KINDS)
def test_deepfool_and_refine(kind, dtype):
    x, y = _points(dtype)
    good = gr.deepfool(healthy, x, y)
    bad = gr.deepfool(poisoned(kind), x, y)
    assert np.asarray(good.converged).all()
    _flagged(bad.converged)
    assert bad.margin[BAD] == np.inf and bad.adv_label[BAD] == -1
    assert bad.margin.dtype == dtype
    for f in ("perturbation", "margin", "converged", "adv_label", "iterations"):
        _same_elsewhere(getattr(bad, f), getattr(good, f))
    if kind == "nan":
        ds = gr.deepfool_dataset(poisoned(kind), x, y, slots=2, chunk_size=2)
        _flagged(ds.converged)
        # the slots are batches of 2, not 4: the same arithmetic up to the rounding of a
        # differently batched matmul (a few ulps, e.g. at XLA's optimization level 0)
        keep = np.arange(N) != BAD
        np.testing.assert_allclose(np.asarray(ds.margin)[keep], np.asarray(good.margin)[keep],
                                   rtol=8 * np.finfo(dtype).eps, atol=0)  # fmt: skip

    x_adv = x + good.perturbation
    rg = gr.refine_boundary(healthy, x, x_adv, y)
    rb = gr.refine_boundary(poisoned(kind), x, x_adv, y)
    assert np.asarray(rg.converged).all()
    _flagged(rb.converged)
    assert np.isfinite(np.asarray(rb.z)).all() and np.isfinite(np.asarray(rb.normal)).all()
    for f in ("z", "normal", "grad_norm", "converged"):
        _same_elsewhere(getattr(rb, f), getattr(rg, f))


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_margin_along_and_subspace_margins(kind):
    dtype = jnp.float32 if kind == "nan" else jnp.float64
    x, y = _points(dtype)
    dirs = jnp.eye(D, dtype=dtype)[:2]  # +e0 (towards the poison), +e1
    good = gr.margin_along(healthy, x, dirs, max_dist=4.0)
    bad = gr.margin_along(poisoned(kind), x, dirs, max_dist=4.0)
    assert not bool(bad.converged[BAD, 0]) and bad.margin[BAD, 0] == np.inf
    assert not np.isnan(np.asarray(bad.margin)).any()
    for f in ("margin", "adv_label", "converged"):
        _same_elsewhere(getattr(bad, f), getattr(good, f))

    basis = jnp.eye(D, dtype=dtype)[:, :2]
    sg = gr.subspace_margins(healthy, x, y, [basis])
    sb = gr.subspace_margins(poisoned(kind), x, y, [basis])
    assert np.asarray(sg.converged).all() and not bool(sb.converged[0, BAD])
    assert sb.margin[0, BAD] == np.inf
    _same_elsewhere(sb.margin[0], sg.margin[0])
    s = gr.measures.summarize_bands(sb.margin, sb.converged)
    assert int(s.n_unconverged[0]) == 1 and int(s.n_converged[0]) == N - 1


@pytest.mark.parametrize("kind", ["nan", "inf", "zero-grad"])
def test_principal_curvatures(kind):
    dtype = jnp.float64
    x, y = _points(dtype)
    df = gr.deepfool(healthy, x, y)
    bp = gr.refine_boundary(healthy, x, x + df.perturbation, y)
    key = jax.random.key(0)
    for method in ("dense", "lanczos") if kind == "nan" else ("lanczos",):
        good = gr.principal_curvatures(healthy, bp.z, bp.y, bp.k, num=2, key=key, method=method)
        bad = gr.principal_curvatures(
            poisoned(kind), bp.z, bp.y, bp.k, num=2, key=key, method=method
        )
        assert np.asarray(good.converged).all()
        _flagged(bad.converged)
        for f in ("values", "converged", "normal"):
            _same_elsewhere(getattr(bad, f), getattr(good, f))


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_pgd(kind):
    dtype = jnp.float64 if kind == "nan" else jnp.float32
    x, y = _points(dtype)
    key = jax.random.key(3)
    good = gr.pgd(healthy, x, y, key=key, eps=0.5, steps=5, norm=2)
    bad = gr.pgd(poisoned(kind), x, y, key=key, eps=0.5, steps=5, norm=2)
    assert not bool(bad.success[BAD])
    for f in ("perturbation", "success", "adv_label"):
        _same_elsewhere(getattr(bad, f), getattr(good, f))
    assert np.isfinite(np.asarray(bad.perturbation)).all()


def test_already_nan_logits_at_the_clean_point(dtype):
    """Logits NaN at the clean point: deepfool flags it (margin inf), never a margin of 0."""
    x, _ = _points(dtype)

    def f(z):
        return jnp.where(z[:, 3:4] > 0.5, jnp.nan, healthy(z))

    r = gr.deepfool(f, x)
    assert not bool(r.converged[BAD]) and r.margin[BAD] == np.inf
    assert np.asarray(r.converged)[np.arange(N) != BAD].all()
