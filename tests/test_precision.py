"""Precision: float32 by default, float64 as an option, and how far they agree.

A float64 copy of a float32 model (the same parameters, cast) measured on the same inputs:

* DeepFool margins (``deepfool_dataset``): at least 90% of the examples take the same number
  of iterations, and on those the margins agree to 1e-4 relative, the float32 tolerance of
  the contract (measured: 8e-6 here, 6e-7 on an 8x8 LeNet); the rest stop one iteration
  apart (a label test at the threshold), so their margins are not compared;
* principal curvatures at the same boundary points: the top values agree to 1e-4 of the
  largest |κ| with the dense method and 1e-3 with Lanczos (its float32 residual tolerance;
  measured: about 5e-7 for both).

Every output keeps the dtype of its input. (bfloat16 on accelerators is not measured here.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geomrobust.measures import principal_curvatures
from geomrobust.models import create_model, pure_apply
from geomrobust.search import deepfool_dataset, refine_boundary


@pytest.fixture(scope="module")
def pair():
    model = create_model(
        "mlp", (6, 6), 5, key=jax.random.key(0), widths=(32, 32), activation="softplus"
    )
    apply, p32 = pure_apply(model)
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), p32)
    x32 = jax.random.uniform(jax.random.key(1), (48, 6, 6), jnp.float32)
    return (lambda x: apply(p32, x)), (lambda x: apply(p64, x)), x32


@pytest.fixture(scope="module")
def margins(pair):
    f32, f64, x32 = pair
    return deepfool_dataset(f32, x32), deepfool_dataset(f64, x32.astype(jnp.float64))


def test_deepfool_float32_vs_float64(margins):
    a, b = margins
    assert a.margin.dtype == jnp.float32 and a.perturbation.dtype == jnp.float32
    assert b.margin.dtype == jnp.float64 and b.perturbation.dtype == jnp.float64
    ok = np.asarray(a.converged & b.converged & (b.margin > 0))
    assert ok.mean() > 0.9
    same = ok & (np.asarray(a.iterations) == np.asarray(b.iterations))
    assert same.sum() >= 0.9 * ok.sum()
    ma, mb = np.asarray(a.margin, np.float64)[same], np.asarray(b.margin)[same]
    assert np.max(np.abs(ma - mb) / mb) < 1e-4
    np.testing.assert_array_equal(np.asarray(a.adv_label)[same], np.asarray(b.adv_label)[same])


@pytest.mark.parametrize("method, tol", [("dense", 1e-4), ("lanczos", 1e-3)])
def test_curvatures_float32_vs_float64(pair, margins, method, tol):
    f32, f64, x32 = pair
    _, b = margins
    x64 = x32.astype(jnp.float64)
    y = jnp.argmax(f64(x64), -1)
    bp = refine_boundary(f64, x64, x64 + b.perturbation, y)
    ok = np.asarray(bp.converged & b.converged & (b.margin > 0))
    z, yy, kk = bp.z[ok][:12], bp.y[ok][:12], bp.k[ok][:12]
    kw = dict(num=4, key=jax.random.key(2), method=method)
    c64 = principal_curvatures(f64, z, yy, kk, **kw)
    c32 = principal_curvatures(f32, z.astype(jnp.float32), yy, kk, **kw)
    assert c32.values.dtype == jnp.float32 and c64.values.dtype == jnp.float64
    assert bool(np.all(np.asarray(c32.converged))) and bool(np.all(np.asarray(c64.converged)))
    v32, v64 = np.asarray(c32.values, np.float64), np.asarray(c64.values)
    scale = np.abs(v64).max(axis=1, keepdims=True)
    assert np.all(scale > 0)
    assert np.max(np.abs(v32 - v64) / scale) < tol
