"""Subspace margins over all DCT bands vs a per-example loop, on the trained CNN.

``geomrobust.measures.subspace_margins`` (continuous-batching DeepFool, one compilation for
every band) over the diagonal 8x8 DCT blocks of a 32x32 image with stride 2 (13 bands,
``s = 64 C``), against a loop over examples and bands of ``deepfool`` jitted for one example
with the basis as a traced argument (one compilation), on a subset, extrapolated.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.measures import dct_subspaces, subspace_margins
from geomrobust.search import deepfool

from ._common import SHAPES, pool, timed, trained_cnn


def run(dims=(1024,), n=200, *, per_example=4, slots=64):
    return [_one(d, n, per_example, slots) for d in dims]


def _one(d, n, per_example, slots):
    logits_fn, _, _, _ = trained_cnn(d)
    bases = [b.astype(np.float32) for b in dct_subspaces(SHAPES[d], 8, 2)]
    x = pool(d, n)
    y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)).astype(np.int32)
    t_ours, res = timed(
        lambda: subspace_margins(logits_fn, x, y, bases, slots=slots).margin, repeat=1
    )
    one = jax.jit(lambda xi, yi, s: deepfool(logits_fn, xi, yi, subspace=s))
    jax.block_until_ready(one(x[:1], y[:1], bases[0]))
    t0 = time.perf_counter()
    for i in range(per_example):
        for s in bases:
            jax.block_until_ready(one(x[i : i + 1], y[i : i + 1], s).margin)
    t_loop = (time.perf_counter() - t0) * n / per_example
    conv = float(np.mean(np.isfinite(np.asarray(res))))
    return (
        dict(name=f"subspace margins D={d} N={n} bands={len(bases)}", ours=t_ours,
             reference=f"per-example loop (jit, extrapolated from {per_example})",
             ref=t_loop, target="", ok=None, D=d, N=n, bands=len(bases),
             converged=round(conv, 4))
    )  # fmt: skip
