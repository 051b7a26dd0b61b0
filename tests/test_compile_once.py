"""Compile-once: dataset-level measurements trace their classifier once per program.

A classifier counts how often JAX TRACES it inside a compiled program (a side effect runs at
trace time only, never when a compiled program is executed). Traces with the full batch
``(N, ...)`` are input validation (``jax.eval_shape`` of the classifier, no compilation) and
are not counted; the chunked programs see ``chunk_size`` / ``slots`` rows, chosen != N.

Each test runs a measurement over many chunks, again with the same shapes, and again with a
different N (more chunks, other data): the count must not move after the first call, so the
first call compiled its program(s) once for all its chunks and no later call retraces.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geomrobust.measures import dct_subspaces, principal_curvatures, subspace_margins
from geomrobust.search import deepfool_dataset, margin_along


class Counted:
    """``x -> logits`` of a fixed tanh MLP, counting traces whose batch is not ``self.n``."""

    def __init__(self, d, k=3, seed=0):
        k1, k2 = jax.random.split(jax.random.key(seed))
        self.w1 = jax.random.normal(k1, (d, 8), jnp.float32) / np.sqrt(d)
        self.w2 = jax.random.normal(k2, (8, k), jnp.float32)
        self.traces = 0
        self.n = None

    def __call__(self, x):
        if isinstance(x, jax.core.Tracer) and x.shape[0] != self.n:
            self.traces += 1
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ self.w1.astype(x.dtype))
        return h @ self.w2.astype(x.dtype)

    def run(self, fn, n):
        self.n = n
        out = fn()
        jax.block_until_ready(out)
        return self.traces


def _data(n, shape, seed):
    return jax.random.normal(jax.random.key(seed), (n, *shape), jnp.float32)


def test_deepfool_dataset_compiles_once():
    f = Counted(16)
    # slots=2: the working set never shrinks (the tail ladder starts at 4 slots), so the driver
    # is exactly one program; chunk_size=4 with N=10 gives 3 chunks, the last one padded.
    run = lambda x: deepfool_dataset(f, x, chunk_size=4, slots=2)  # noqa: E731
    x10, x15 = _data(10, (4, 4), 0), _data(15, (4, 4), 1)
    first = f.run(lambda: run(x10).margin, 10)
    assert first >= 1
    assert f.run(lambda: run(x10).margin, 10) == first  # same shapes: no retrace
    assert f.run(lambda: run(x15).margin, 15) == first  # more chunks, other data
    assert np.all(np.isfinite(np.asarray(run(x15).margin)))


def test_deepfool_dataset_repeat_call_with_tail_ladder():
    f = Counted(16, seed=1)
    x = _data(40, (4, 4), 2)
    first = f.run(lambda: deepfool_dataset(f, x, chunk_size=16, slots=8).margin, 40)
    assert f.run(lambda: deepfool_dataset(f, x, chunk_size=16, slots=8).margin, 40) == first


def test_subspace_margins_one_compilation_for_all_bands():
    f = Counted(64, seed=2)
    x = _data(10, (8, 8), 3)
    y = jnp.argmax(f(x), -1)
    bands = dct_subspaces((8, 8), 4, 2)  # 3 bands of dimension 16
    assert len(bands) == 3
    kw = dict(chunk_size=4, slots=2)
    one = f.run(lambda: subspace_margins(f, x, y, bands[:1], **kw).margin, 10)
    assert f.run(lambda: subspace_margins(f, x, y, bands, **kw).margin, 10) == one
    x2 = _data(13, (8, 8), 4)
    y2 = jnp.argmax(f(x2), -1)
    assert f.run(lambda: subspace_margins(f, x2, y2, bands, **kw).margin, 13) == one


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_principal_curvatures_compile_once(method):
    f = Counted(12, seed=3)
    kw = dict(num=3, key=jax.random.key(0), method=method, chunk_size=4)

    def run(n, seed):
        z = _data(n, (12,), seed)
        return principal_curvatures(f, z, jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32), **kw)

    first = f.run(lambda: run(10, 5).values, 10)
    assert first >= 1
    assert f.run(lambda: run(10, 5).values, 10) == first
    assert f.run(lambda: run(17, 6).values, 17) == first


@pytest.mark.parametrize("per_example", [False, True])
def test_margin_along_compiles_once(per_example):
    f = Counted(16, seed=4)

    def run(n, seed, max_dist=4.0, tol=1e-3):
        x = _data(n, (16,), seed)
        d = jax.random.normal(jax.random.key(seed + 100), ((n,) if per_example else ()) + (3, 16))
        d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
        return margin_along(f, x, d, max_dist=max_dist, tol=tol, chunk_size=4).margin

    first = f.run(lambda: run(10, 0), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 0), 10) == first
    assert f.run(lambda: run(9, 1), 9) == first
    assert f.run(lambda: run(9, 1, max_dist=2.0, tol=1e-4), 9) == first  # traced settings
