"""Determinism of the dataset-level drivers on CPU.

* For a fixed chunk size, results are bit-identical whatever the number of examples and
  however the dataset is split (a prefix of the data, a resumed run): each chunk is padded to
  the same shape and every example draws its randomness from ``fold_in(key, index)``.
* Across chunk sizes, flags and labels are identical and values agree to rounding. They are
  not bit-identical: XLA's CPU matmul rounds differently for different batch sizes (a tanh
  MLP forward pass on 1, 2, 3 or 6 rows differs from the 7-row pass in the last bit), so
  resumable CLI runs record the chunk size in their settings and refuse to mix chunk sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import mlp

import geomrobust as gr
from geomrobust import measures

N, SHAPE, K = 7, (3, 2), 3
KEY = jax.random.key(5)


@pytest.fixture(scope="module")
def problem():
    f = mlp(jax.random.key(0), SHAPE, K, width=12, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (N, *SHAPE), jnp.float32)
    y = jnp.argmax(f(x), -1).astype(jnp.int32)
    df = gr.deepfool(f, x, y)
    bp = gr.refine_boundary(f, x, x + df.perturbation, y)
    ok = np.asarray(bp.converged)
    return f, x, y, (bp.z[ok], bp.y[ok], bp.k[ok])


def _identical(a, b, rows=None):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u), np.asarray(v)
        if rows is not None and u.ndim and u.shape[0] != rows:
            v = v[:rows] if v.shape[0] > rows else v
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


def _close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        if u.dtype.kind in "biu":
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=2e-4, atol=1e-5)


def test_curvatures_fixed_chunk_prefix_and_any_chunk(problem):
    f, _, _, (z, yy, kk) = problem
    m = z.shape[0]
    assert m >= 4

    def run(sl, c):
        return gr.principal_curvatures(
            f, z[sl], yy[sl], kk[sl], num=2, key=KEY, method="lanczos", chunk_size=c
        )

    full = run(slice(None), 2)
    head = run(slice(0, 3), 2)  # a prefix (an interrupted run) with the same chunk size
    _identical(head, jax.tree.map(lambda a: a[:3], full))
    _close(full, run(slice(None), m))


def test_loss_eigs_and_attacks_fixed_chunk_prefix(problem):
    f, x, y, _ = problem
    full = gr.loss_hessian_eigs(f, x, y, num=2, key=KEY, chunk_size=3)
    head = gr.loss_hessian_eigs(f, x[:4], y[:4], num=2, key=KEY, chunk_size=3)
    _identical(head, jax.tree.map(lambda a: a[:4], full))
    _close(full, gr.loss_hessian_eigs(f, x, y, num=2, key=KEY, chunk_size=None))

    ra = gr.robust_accuracy(f, x, y, [0.1, 0.5], key=KEY, steps=3, chunk_size=3)
    rh = gr.robust_accuracy(f, x[:6], y[:6], [0.1, 0.5], key=KEY, steps=3, chunk_size=3)
    np.testing.assert_array_equal(ra.success[:, :6], rh.success)

    basis = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (6, 2), jnp.float32))[0]
    fr = [
        measures.subspace_fooling_rate(f, x, basis, eps=1.0, key=KEY, chunk_size=c)
        for c in (3, None)
    ]
    _close(fr[0], fr[1])


def test_deepfool_dataset_across_chunk_sizes(problem):
    f, x, y, _ = problem
    runs = [gr.deepfool_dataset(f, x, y, slots=s, chunk_size=c) for s, c in [(2, 3), (4, 7)]]
    _close(runs[0], runs[1])
    _identical(runs[0], gr.deepfool_dataset(f, x, y, slots=2, chunk_size=3))  # rerun


def test_cli_margins_same_chunk_size_is_bit_identical(checkpoint, tmp_path):
    from geomrobust.cli import main
    from geomrobust.io import load_npz

    base = ["margins", "--checkpoint", str(checkpoint), "--n", "8", "--no-plots", "--slots", "4"]
    runs = {}
    for name, c in (("a", "4"), ("b", "4"), ("c", "8")):
        assert main([*base, "--chunk-size", c, "--out", str(tmp_path / name)]) == 0
        runs[name] = load_npz(tmp_path / name / "results.npz")
    for k in runs["a"]:
        assert runs["a"][k].tobytes() == runs["b"][k].tobytes(), k
    _close(runs["a"], runs["c"])
