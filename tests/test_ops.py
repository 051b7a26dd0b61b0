"""Operators against dense references (jax.hessian / jax.jacrev / finite differences)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import convnet, mlp
from conftest import rel_err, rtol_for

import geomrobust as gr
from geomrobust import ops

NETS = {
    "mlp-vec": (mlp, (12,), 5),
    "mlp-img": (mlp, (4, 4, 1), 3),
    "conv": (convnet, (6, 6, 2), 4),
}


@pytest.fixture(params=sorted(NETS))
def net(request, key, dtype):
    make, shape, k = NETS[request.param]
    fn = make(key, shape, k, dtype=dtype)
    x = jax.random.normal(jax.random.fold_in(key, 7), (3, *shape), dtype)
    return fn, x, k


def test_input_grad_matches_grad_and_fd(net, dtype):
    fn, x, k = net
    F = gr.logit_difference(fn, 0, k - 1)
    g = gr.input_grad(F, x[0])
    assert g.shape == x[0].shape and g.dtype == dtype
    ref = jax.grad(lambda z: fn(z[None])[0, k - 1] - fn(z[None])[0, 0])(x[0])
    assert rel_err(g, ref) <= rtol_for(dtype)
    if dtype == jnp.float64:  # an independent check: central differences
        e = np.zeros(x[0].size)
        fd = []
        for i in range(x[0].size):
            e[:] = 0
            e[i] = 1e-6
            d = jnp.asarray(e.reshape(x[0].shape))
            fd.append((F(x[0] + d) - F(x[0] - d)) / 2e-6)
        assert rel_err(g.ravel(), np.array(fd)) < 1e-6


def test_hvp_matches_dense_hessian(net, dtype, key):
    fn, x, _ = net
    F = gr.logit_difference(fn, 1, 0)
    H = jax.hessian(lambda z: F(z.reshape(x[0].shape)))(x[0].ravel())
    v = jax.random.normal(jax.random.fold_in(key, 3), x[0].shape, dtype)
    hv = gr.hvp(F, x[0], v)
    assert hv.shape == v.shape and hv.dtype == dtype
    assert rel_err(hv.ravel(), H @ v.ravel()) <= rtol_for(dtype)
    # the operator form applies the same linearization to several vectors
    op = gr.hvp_operator(F, x[0])
    for i in range(3):
        vi = jax.random.normal(jax.random.fold_in(key, 10 + i), x[0].shape, dtype)
        assert rel_err(op(vi).ravel(), H @ vi.ravel()) <= rtol_for(dtype)
    dense = gr.input_hessian(F, x[0])
    assert rel_err(dense, H) <= rtol_for(dtype)
    with pytest.warns(DeprecationWarning, match="hvp_operator"):
        old = gr.hvp(F, x[0])  # the operator form of one release ago
    assert rel_err(old(v).ravel(), H @ v.ravel()) <= rtol_for(dtype)
    assert rel_err(dense, dense.T) <= rtol_for(dtype)


def test_logit_jacobian_matches_jacfwd(net, dtype):
    fn, x, k = net
    J = gr.logit_jacobian(fn, x[0])
    assert J.shape == (k, *x.shape[1:]) and J.dtype == dtype
    ref = jax.jacfwd(lambda z: fn(z[None])[0])(x[0])
    assert rel_err(J, ref) <= rtol_for(dtype)


def test_batched_operators_match_per_example(net, dtype, key):
    fn, x, k = net
    logits, J = ops.batch_logit_jacobian(fn, x)
    assert J.shape == (x.shape[0], k, *x.shape[1:])
    for n in range(x.shape[0]):
        assert rel_err(J[n], gr.logit_jacobian(fn, x[n])) <= rtol_for(dtype)
    np.testing.assert_allclose(logits, fn(x), rtol=rtol_for(dtype))

    y = jnp.arange(x.shape[0]) % k
    kk = (y + 1) % k
    F, G = ops.batch_logit_difference_grads(fn, x, y, kk)
    for n in range(x.shape[0]):
        Fn = gr.logit_difference(fn, y[n], kk[n])
        assert rel_err(F[n], Fn(x[n])) <= rtol_for(dtype)
        assert rel_err(G[n], gr.input_grad(Fn, x[n])) <= rtol_for(dtype)

    v = jax.random.normal(key, x.shape, dtype)
    hv = ops.batch_hvp(fn, x, y, kk, v, chunk_size=2)
    for n in range(x.shape[0]):
        Fn = gr.logit_difference(fn, y[n], kk[n])
        assert rel_err(hv[n], gr.hvp(Fn, x[n], v[n])) <= rtol_for(dtype)


def test_operators_jit_and_vmap(dtype, key):
    fn = mlp(key, (5,), 3, dtype=dtype)
    x = jax.random.normal(key, (4, 5), dtype)
    y = jnp.array([0, 1, 2, 0])
    k = jnp.array([1, 2, 0, 2])

    def per_example(xi, yi, ki):
        F = gr.logit_difference(fn, yi, ki)
        return gr.input_grad(F, xi), gr.hvp(F, xi, xi)

    g1, h1 = jax.jit(jax.vmap(per_example))(x, y, k)
    for n in range(4):
        g, h = per_example(x[n], y[n], k[n])
        assert rel_err(g1[n], g) <= rtol_for(dtype)
        assert rel_err(h1[n], h) <= rtol_for(dtype)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 256])
def test_chunked_vmap_equals_vmap(chunk):
    x = jnp.arange(20.0).reshape(10, 2)
    f = lambda a: jnp.sin(a).sum() * a  # noqa: E731
    np.testing.assert_array_equal(ops.chunked_vmap(f, chunk_size=chunk)(x), jax.vmap(f)(x))


def test_chunked_vmap_default_and_old_positional_chunk_size():
    x = jnp.arange(20.0).reshape(10, 2)
    f = lambda a: jnp.cos(a) * a.sum()  # noqa: E731
    np.testing.assert_array_equal(ops.chunked_vmap(f)(x), jax.vmap(f)(x))  # CHUNK_SIZE
    with pytest.warns(DeprecationWarning, match="chunk_size="):
        old = ops.chunked_vmap(f, 3)
    np.testing.assert_array_equal(old(x), jax.vmap(f)(x))
    with pytest.raises(ValueError, match="chunk_size"):
        ops.chunked_vmap(f, chunk_size=0)


def test_map_in_chunks_pads_and_compiles_once():
    traces = []

    @jax.jit
    def f(a, b):
        traces.append(a.shape)
        return {"s": a.sum(axis=1) + b, "a": a}

    a = np.arange(22.0).reshape(11, 2)
    b = np.arange(11.0)
    seen = []
    with pytest.warns(DeprecationWarning, match="engine.map_chunks"):
        out = ops.map_in_chunks(f, a, b, chunk_size=4, progress=seen.append)
    np.testing.assert_array_equal(out["s"], a.sum(axis=1) + b)
    np.testing.assert_array_equal(out["a"], a)
    assert seen == [4, 4, 3]
    assert traces == [(4, 2)]
    with pytest.raises(ValueError, match="chunk_size"), pytest.warns(DeprecationWarning):
        ops.map_in_chunks(f, a, b, chunk_size=0)
    with pytest.raises(ValueError, match="leading axis"), pytest.warns(DeprecationWarning):
        ops.map_in_chunks(f, a, b[:3], chunk_size=4)


def test_l2_norm_scales_exactly_by_powers_of_two(dtype):
    """``lp_norm(v, 2)`` works at a power of two near ``max |v|`` (``ops._norms.mul_pow2``,
    two multiplications instead of ``jnp.ldexp`` on every element): scaling ``v`` by ``2^k``
    scales the norm by exactly ``2^k`` across the whole exponent range (where an unscaled sum
    of squares overflows or underflows), the norm matches a ``longdouble`` reference to 2
    ulps, and ``mul_pow2`` equals ``jnp.ldexp`` bit for bit wherever the result is normal."""
    from geomrobust.ops._norms import lp_norm, mul_pow2

    dt = np.dtype(dtype)
    fi = np.finfo(dt)
    rng = np.random.default_rng(3)
    v = rng.normal(size=(6, 300)).astype(dt)
    v[1, 7:] = 0  # mostly zero
    v[2] = 0  # a zero row: exactly 0
    base = np.asarray(lp_norm(jnp.asarray(v), 2.0))
    ref = np.sqrt(np.sum(v.astype(np.longdouble) ** 2, axis=1))
    np.testing.assert_allclose(base, ref.astype(dt), rtol=2 * fi.eps, atol=0)
    assert base[2] == 0
    lo, hi = fi.minexp + 40, fi.maxexp - 12  # every entry stays normal (|v| > 2^-12 here)
    for k in (lo, lo // 2, -5, 0, 7, hi // 2, hi):
        got = np.asarray(lp_norm(jnp.asarray(np.ldexp(v, k)), 2.0))
        np.testing.assert_array_equal(got, np.ldexp(base, k), err_msg=f"2^{k}")

    def check(a, k):
        k_rows = jnp.full((a.shape[0], 1), k, jnp.int32)
        want = np.asarray(jnp.ldexp(jnp.asarray(a), k_rows))
        got = np.asarray(mul_pow2(jnp.asarray(a), k_rows))
        normal = np.abs(want) >= fi.tiny
        np.testing.assert_array_equal(got[normal], want[normal], err_msg=f"2^{k}")
        return normal

    for k in (fi.minexp - 3, -40, 0, 33, fi.maxexp - 3):
        check(v, k)
    # |k| beyond the largest exponent: the smallest normal numbers times 2^k, the largest
    # times 2^-k, all of them normal products
    big = 2 * fi.maxexp - 10
    u = rng.uniform(1, 2, size=(6, 8)).astype(dt)
    assert check(np.ldexp(u, fi.minexp + 2), big).all()
    assert check(np.ldexp(u, fi.maxexp - 3), -big).all()
