"""One battery for every boundary search: jit, batching, dtype, finiteness, misclassified
examples, classifiers that never flip, NaN isolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import mlp

from geomrobust.search import (
    apgd,
    cw_l2,
    deepfool,
    deepfool_dataset,
    fgsm,
    fmn,
    margin_along,
    minimal_margin,
    pgd,
    refine_boundary,
    sparsefool,
    square_attack,
)

D, K, N = 6, 3, 5
BASIS = np.linalg.qr(np.random.default_rng(0).standard_normal((D, 3)))[0]


def _df(**kw):
    def run(fn, x, y):
        r = deepfool(fn, x, y, **kw)
        return r.margin, r.converged, (r.perturbation, r.margin)

    return run


def _dataset(fn, x, y):
    r = deepfool_dataset(fn, x, y, slots=2)
    return r.margin, r.converged, (r.perturbation, r.margin)


def _refine(fn, x, y):
    r = deepfool(fn, x, y, overshoot=0.3)
    b = refine_boundary(fn, x, x + r.perturbation, y)
    dist = jnp.linalg.norm((b.z - x).reshape(x.shape[0], -1), axis=1)
    return jnp.where(b.converged, dist, jnp.inf), b.converged, (b.z, b.normal, b.grad_norm)


def _along(fn, x, y):
    dirs = jnp.asarray(np.eye(D)[:2], x.dtype)
    r = margin_along(fn, x, dirs, max_dist=3.0, tol=1e-3)
    found = r.converged[:, 0] & jnp.isfinite(r.margin[:, 0])  # inf: no change within max_dist
    return r.margin[:, 0], found, (r.margin[:, :1],)


def _fgsm(fn, x, y):
    r = fgsm(fn, x, y, eps=0.3)
    return jnp.where(r.success, 0.0, 1.0).astype(x.dtype), r.success, (r.perturbation,)


def _pgd(fn, x, y):
    r = pgd(fn, x, y, key=jax.random.key(0), eps=0.3, steps=3, random_start=False)
    return jnp.where(r.success, 0.0, 1.0).astype(x.dtype), r.success, (r.perturbation,)


def _fmn(norm):
    def run(fn, x, y):
        r = fmn(fn, x, y, norm=norm, steps=20)
        return r.margin, r.converged, (r.perturbation, r.margin)

    return run


def _cw(fn, x, y):
    r = cw_l2(fn, x, y, steps=20, binary_steps=3, initial_const=1.0, stepsize=0.05)
    return r.margin, r.converged, (r.perturbation, r.margin)


def _minimal(fn, x, y):
    r = minimal_margin(fn, x, y, fmn_kw=dict(steps=10), cw_kw=dict(steps=10, binary_steps=2))
    return r.margin, r.converged, (r.perturbation, r.margin)


def _apgd(loss):
    def run(fn, x, y):
        r = apgd(fn, x, y, key=jax.random.key(0), eps=0.3, loss=loss, steps=5,
                 random_start=False)  # fmt: skip
        return jnp.where(r.success, 0.0, 1.0).astype(x.dtype), r.success, (r.perturbation,)

    return run


def _square(fn, x, y):
    # one example per program (vmapped): each example's random draws do not depend on N
    def one(xi, yi):
        r = square_attack(fn, xi[None], yi[None], key=jax.random.key(0), eps=0.5, steps=20)
        return r.success[0], r.perturbation[0]

    ok, pert = jax.vmap(one)(x, y)
    return jnp.where(ok, 0.0, 1.0).astype(x.dtype), ok, (pert,)


def _sparse(fn, x, y):
    r = sparsefool(fn, x, y, bounds=None, steps=5)
    return r.l1, r.converged, (r.perturbation, r.l1, r.sparsity)


# name: (runner, misclassified -> value 0, constant logits -> converged False)
SEARCHES = {
    "deepfool-l2": (_df(), True, True),
    "deepfool-linf": (_df(norm=jnp.inf), True, True),
    "deepfool-subspace": (_df(subspace=BASIS), True, True),
    "deepfool-dataset": (_dataset, True, True),
    "refine_boundary": (_refine, False, True),
    "margin_along": (_along, False, True),
    "fgsm": (_fgsm, True, True),
    "pgd": (_pgd, True, True),
    "sparsefool": (_sparse, True, True),
    "fmn-l2": (_fmn(2), True, True),
    "fmn-linf": (_fmn(jnp.inf), True, True),
    "cw-l2": (_cw, True, True),
    "minimal_margin": (_minimal, True, True),
    "apgd-ce": (_apgd("ce"), True, True),
    "apgd-dlr": (_apgd("dlr"), True, True),
    "square": (_square, True, True),
}


@pytest.fixture(params=sorted(SEARCHES))
def search(request):
    return SEARCHES[request.param]


def _problem(dtype):
    fn = mlp(jax.random.key(1), (D,), K, dtype=dtype)
    x = jax.random.normal(jax.random.key(2), (N, D), dtype)
    return fn, x, fn(x).argmax(1).astype(jnp.int32)


def test_jit_dtype_finite(search):
    """Under jit (eager runs are compared in the NaN test): dtype kept, finite where ok. In
    float32 under x64 (a float64 default would leak here); both dtypes of every search:
    tests/test_properties_searches.py::test_dtype_rule_of_every_search."""
    run, _, _ = search
    dtype = jnp.dtype(jnp.float32)
    fn, x, y = _problem(dtype)
    if run is _dataset:  # a dataset-level driver: jits internally, refuses tracers
        with pytest.raises(TypeError, match="jits internally"):
            jax.jit(lambda x, y: run(fn, x, y))(x, y)
        value, ok, arrays = run(fn, x, y)
    else:
        value, ok, arrays = jax.jit(lambda x, y: run(fn, x, y))(x, y)
    for a in arrays:
        assert a.dtype == dtype and a.shape[0] == N
        assert bool(jnp.isfinite(jnp.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0)).all())
    assert ok.shape == (N,) and ok.dtype == bool and value.shape == (N,)
    assert bool(ok.any())


def test_misclassified_and_never_flipping(search):
    """float32 here; the NaN test below runs in float64."""
    run, zero_if_wrong, const_fails = search
    fn, x, y = _problem(jnp.float32)
    if zero_if_wrong:
        wrong = (y + 1) % K
        value, ok, _ = run(fn, x, wrong)
        assert bool(ok.all())
        np.testing.assert_array_equal(value, 0)

    def const(z):
        return jnp.broadcast_to(jnp.asarray([1.0, 0.0, 0.0], z.dtype), (z.shape[0], K))

    value, ok, arrays = run(const, x, jnp.zeros(N, jnp.int32))
    for a in arrays:
        assert not bool(jnp.isnan(a).any())
    assert not bool(jnp.isnan(value).any())
    if const_fails:  # margin_along: no label change found, margin inf
        assert not bool(ok.any())


def test_nan_example_does_not_poison_the_batch(search):
    run, _, _ = search
    dtype = jnp.float64
    fn, x, y = _problem(dtype)

    def nan_fn(z):  # NaN logits wherever the first coordinate is below -50
        bad = jnp.where(z[:, :1] < -50, jnp.nan, 0.0)
        return fn(z) + bad

    xb = x.at[0, 0].set(-100.0)
    value, ok, arrays = run(nan_fn, xb, y)
    assert not bool(ok[0])
    ref_value, ref_ok, ref_arrays = run(fn, x[1:], y[1:])
    np.testing.assert_array_equal(ok[1:], ref_ok)
    np.testing.assert_allclose(value[1:], ref_value, rtol=1e-8)
    for a, b in zip(arrays, ref_arrays, strict=True):
        np.testing.assert_allclose(a[1:], b, rtol=1e-8, atol=1e-12)
