"""Exact curvature (Lanczos) on the CPU: the host-driven form against the ``while_loop`` form.

XLA's CPU backend does not rewrite a convolution inside a loop body into its fast layout, so
the Hessian-vector products of a conv net inside Lanczos's ``while_loop``/``fori_loop`` cost
many times what they cost at the top level of a program. ``loop="host"`` (the CPU default)
runs each Arnoldi step of a chunk as one top-level program (docs/performance.md, "Lanczos on
the CPU"). This benchmark times ``principal_curvatures(method="lanczos")`` in both forms,
one after the other on the same points (warm: one call first for the compilation; best of
``repeat``), with the load average before and after each, and compares the results.

Models, random initialisation (the timing does not depend on the weights' accuracy):

* ``lenet``: the package's LeNet, softplus, 32x32x1 (D = 1024);
* ``dm_wrn_10_2``: DeepMind's WideResNet-10-2, Swish (the RobustBench family
  :mod:`geomrobust.models.torch.dm_wide_resnet`), 32x32x3 (D = 3072).

No DeepFool: the points are random inputs, measured with ``boundary_tol=inf`` (the
principal curvatures of the level set of ``F_k`` through each point; the solver's work is
the same as on the boundary).

``python -m benchmarks.bench_lanczos_loop [lenet|dm_wrn_10_2 ...]`` writes
``benchmarks/results/lanczos_loop.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import geomrobust as gr
from geomrobust.models.torch._families import build

from ._common import load, machine

CASES = {
    # name: (model builder, input shape, points, solver settings)
    "lenet": (
        lambda: gr.create_model(
            "lenet", (32, 32, 1), 10, key=jax.random.key(0), activation="softplus"
        ),
        (32, 32, 1),
        16,
        dict(num=10, krylov_dim=40, restarts=30),
    ),
    "dm_wrn_10_2_n8": (
        lambda: build(
            "dm_wide_resnet", 10, rngs=nnx.Rngs(0), depth=10, width=2, activation="swish"
        ),
        (32, 32, 3),
        8,
        dict(num=5, krylov_dim=20, restarts=10),
    ),
    "dm_wrn_10_2": (
        lambda: build(
            "dm_wide_resnet", 10, rngs=nnx.Rngs(0), depth=10, width=2, activation="swish"
        ),
        (32, 32, 3),
        4,
        dict(num=3, krylov_dim=12, restarts=8),
    ),
}


def timed(fn, repeat: int):
    """Best wall and process-CPU seconds of ``repeat`` calls after a warm-up call (the CPU
    seconds, summed over XLA's threads, move less with the load of other jobs)."""
    jax.block_until_ready(fn().values)
    wall = cpu = np.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        jax.block_until_ready(out.values)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def run_case(name: str, repeat: int = 2) -> dict:
    make, shape, n, settings = CASES[name]
    clf = gr.as_classifier(make())
    x = jax.random.uniform(jax.random.key(1), (n, *shape), jnp.float32)
    order = jnp.argsort(-clf(x), axis=-1)
    y, k = order[:, 0].astype(jnp.int32), order[:, 1].astype(jnp.int32)
    kw = dict(settings, key=jax.random.key(2), method="lanczos", boundary_tol=np.inf,
              chunk_size=n)  # fmt: skip
    row = dict(model=name, input_shape=list(shape), points=n, **settings)
    out = {}
    for loop in ("host", "device"):
        before = load()
        t, cpu, c = timed(
            lambda loop=loop: gr.principal_curvatures(clf, x, y, k, loop=loop, **kw), repeat
        )
        row[f"{loop}_s"] = round(t, 3)
        row[f"{loop}_cpu_s"] = round(cpu, 3)
        row[f"{loop}_load_before_after"] = [before[0], load()[0]]
        out[loop] = c
    h, d = out["host"], out["device"]
    row["device_over_host"] = round(row["device_s"] / row["host_s"], 2)
    row["device_over_host_cpu"] = round(row["device_cpu_s"] / row["host_cpu_s"], 2)
    row["same_status"] = bool(np.array_equal(h.status, d.status))
    row["converged_host_device"] = [int(h.converged.sum()), int(d.converged.sum())]
    both = np.isfinite(np.asarray(h.values)) & np.isfinite(np.asarray(d.values))
    scale = np.abs(np.asarray(d.values))[both].max() if both.any() else np.nan
    diff = np.abs(np.asarray(h.values) - np.asarray(d.values))[both]
    row["max_value_diff_rel"] = float(diff.max() / scale) if both.any() else None
    row["restarts_host_device"] = [np.asarray(h.restarts).tolist(), np.asarray(d.restarts).tolist()]
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(CASES)
    rows = [run_case(nm) for nm in names]
    path = os.path.join(os.path.dirname(__file__), "results", "lanczos_loop.json")
    with open(path, "w") as f:
        json.dump(dict(machine=machine(), rows=rows), f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
