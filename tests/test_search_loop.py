"""The search driver (geomrobust.search._loop): the host loop of jitted steps with continuous
batching gives the numbers of the one-``while_loop`` form (the same decisions and step counts,
floats to a few ulps: :func:`_same`), for every search that runs through it, in float32 and
float64; a second model of the same architecture compiles
nothing; the kernels return ``(state, info)``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import compilations

import geomrobust as gr
from geomrobust.search import (
    apgd,
    apgd_init,
    apgd_step,
    cw_init,
    cw_l2,
    cw_step,
    fmn,
    fmn_init,
    fmn_step,
    pgd,
    pgd_init,
    pgd_result,
    pgd_step,
    square_attack,
    square_init,
    square_result,
    square_step,
)
from geomrobust.search._cw import CW
from geomrobust.search._cw import _Static as CWStatic
from geomrobust.search._fmn import FMN
from geomrobust.search._fmn import _Static as FMNStatic
from geomrobust.search._loop import drive, resolve_loop

D, H, K = 6, 12, 4


def _mlp(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _model(dtype, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = {
        "w1": (jax.random.normal(k1, (D, H)) / 2).astype(dtype),
        "b1": (0.1 * jax.random.normal(k2, (H,))).astype(dtype),
        "w2": (jax.random.normal(k3, (H, K)) / 3).astype(dtype),
    }
    return gr.Classifier(_mlp, params)


def _x(dtype, n=13, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, D), dtype)


def _same(a, b):
    """Every integer and boolean field equal; floats equal to 4 ulps. The step is the same
    function in both forms, but XLA compiles a loop body and a top-level program separately
    and may fuse (and round) one operation differently: with XLA's default CPU flags the two
    forms agreed bit for bit here, with the suite's flags (tests/conftest.py, the elemental
    emitters) one float64 PGD L2 run differed by 1 ulp in 5 of 78 numbers."""
    for u, v in zip(a, b, strict=True):
        u, v = np.asarray(u), np.asarray(v)
        if np.issubdtype(u.dtype, np.floating):
            tol = 4 * np.finfo(u.dtype).eps
            scale = max(1.0, float(np.nanmax(np.abs(v), initial=0.0)))
            np.testing.assert_allclose(u, v, rtol=tol, atol=tol * scale)
            np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
        else:
            np.testing.assert_array_equal(u, v)


def _close(a, b):
    """Same decisions (every integer and boolean field), floats equal to rounding: a slot set
    smaller than the chunk changes the rows of each matrix product, and XLA's CPU kernels
    may round a row differently in a product of another height."""
    for u, v in zip(a, b, strict=True):
        u, v = np.asarray(u), np.asarray(v)
        if np.issubdtype(u.dtype, np.floating):
            tol = 1e-5 if u.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(u, v)


DTYPES = [jnp.float32, jnp.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [2, jnp.inf])
def test_fmn_host_equals_while_loop(dtype, norm):
    f, x = _model(dtype), _x(dtype)
    kw = dict(norm=norm, steps=12, bounds=(0.0, 1.0), chunk_size=5)
    host = fmn(f, x, loop="host", **kw)
    dev = fmn(f, x, loop="device", **kw)
    _same(host, dev)
    assert np.asarray(host.margin).dtype == dtype
    assert np.any(np.asarray(host.converged))


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_batching_equals_while_loop(dtype):
    """With fewer slots than examples, rows are retired and refilled mid-run (C&W with
    abort_early ends examples at different steps) and the tail shrinks: the same decisions
    and step counts, the same numbers to rounding (to a few ulps with the default slots, the
    whole chunk: the tests above)."""
    f, x = _model(dtype), _x(dtype, n=23)  # 16 slots: refills, then the tail shrinks to 4
    lo, hi = jnp.asarray(0.0, dtype), jnp.asarray(1.0, dtype)
    settings = (*(jnp.asarray(v, dtype) for v in (1e-2, 0.05, 0.0)), lo, hi)
    st = CWStatic(8, 3, True, False, True)
    slot = drive(CW, f, settings, (x,), st, loop="host", slots=16, chunk_size=None)
    whole = drive(CW, f, settings, (x,), st, loop="device", chunk_size=None)
    _close(slot, whole)
    iters = np.asarray(slot.iterations)
    assert len(np.unique(iters)) > 1  # examples did end at different steps
    a = (*(jnp.asarray(v, dtype) for v in (1.0, 0.01, 0.05, 0.001)), lo, hi)
    fst = FMNStatic(2.0, 9, False, True)
    _close(
        drive(FMN, f, a, (x,), fst, loop="host", slots=3, chunk_size=10),
        drive(FMN, f, a, (x,), fst, loop="device", chunk_size=10),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_cw_host_equals_while_loop(dtype):
    f, x = _model(dtype), _x(dtype)
    kw = dict(steps=6, binary_steps=3, abort_early=True, bounds=(0.0, 1.0), chunk_size=8)
    _same(cw_l2(f, x, loop="host", **kw), cw_l2(f, x, loop="device", **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_attacks_host_equal_while_loop(dtype):
    f, x = _model(dtype), _x(dtype)
    y = jnp.argmax(f(x), -1)
    key = jax.random.key(3)
    for run in (
        lambda loop: pgd(f, x, y, key=key, eps=0.2, steps=5, bounds=(0.0, 1.0), loop=loop),
        lambda loop: pgd(f, x, y, key=key, eps=0.5, norm=2, steps=4, loop=loop),
        lambda loop: apgd(f, x, y, key=key, eps=0.2, steps=6, restarts=2, loop=loop),
        lambda loop: square_attack(f, x, y, key=key, eps=0.2, steps=7, loop=loop),
    ):
        _same(run("host"), run("device"))
    # and the forms under jit agree with the host-driven ones
    jitted = jax.jit(lambda f, x: apgd(f, x, y, key=key, eps=0.2, steps=6, restarts=2))
    _same(jitted(f, x), apgd(f, x, y, key=key, eps=0.2, steps=6, restarts=2, loop="host"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_refine_boundary_host_equals_while_loop(dtype):
    f, x = _model(dtype), _x(dtype)
    far = x + jnp.linspace(-3.0, 3.0, D, dtype=dtype)  # some rays cross, some do not
    y = jnp.argmax(f(x), -1)
    kw = dict(tol=1e-6, steps=20, chunk_size=8)
    host = gr.refine_boundary(f, x, far, y, loop="host", **kw)
    _same(host, gr.refine_boundary(f, x, far, y, loop="device", **kw))
    assert np.any(np.asarray(host.converged))


def test_second_model_compiles_nothing():
    x = _x(jnp.float32, n=9)
    run = lambda f: fmn(f, x, steps=4, chunk_size=4, loop="host").margin  # noqa: E731
    jax.block_until_ready(run(_model(jnp.float32, 0)))
    with compilations() as c:
        jax.block_until_ready(run(_model(jnp.float32, 5)))
    assert c.names == []


def test_kernels_return_state_and_info():
    f, x = _model(jnp.float32), _x(jnp.float32, n=4)
    y = jnp.argmax(f(x), -1)
    key = jax.random.key(0)
    s, info = fmn_step(f, fmn_init(f, x), steps=3)
    assert s.iterations.shape == (4,) and info.margin.shape == (4,)
    s, info = cw_step(f, cw_init(f, x), steps=3)
    assert info.loss.shape == (4,)
    s, info = apgd_step(f, apgd_init(f, x, y, 0.1, key=key))  # x, y, eps live in the state
    assert s.eps.shape == (4,) and info.adversarial.shape == (4,)
    s, _ = pgd_step(f, pgd_init(f, x, y, eps=0.1, key=key), step_size=0.05)
    assert int(s.k) == 1 and pgd_result(f, s).success.shape == (4,)
    s, info = square_step(f, square_init(f, x, y, 0.1, key=key), steps=5)
    assert int(s.i) == 1 and info.accepted.shape == (4,)
    assert square_result(s).adversarial.shape == x.shape


def test_loop_option():
    assert resolve_loop("auto") == ("host" if jax.default_backend() == "cpu" else "device")
    with pytest.raises(ValueError, match="loop must be"):
        fmn(_model(jnp.float32), _x(jnp.float32), loop="gpu")
