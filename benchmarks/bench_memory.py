"""Peak memory (RSS) of dataset-level measurements at N = 1,000 and N = 10,000.

Each measurement runs in a fresh subprocess (``python -m benchmarks.bench_memory --child``)
that reports its own ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end, so JAX's own
footprint is included and nothing is shared between measurements. Workloads:

* DeepFool margins: ``deepfool_dataset`` (default ``chunk_size=4096``) with a LeNet
  (softplus, random initialisation) on random images in [0, 1], D = 1024;
* principal curvatures: ``principal_curvatures(method="lanczos", num=10)`` (default
  ``chunk_size=64``) of a tanh MLP at random points (the pair y = 0, k = 1), D = 256.

Inputs and outputs themselves grow with N (``N × D`` floats each); the target is the whole
process within 1.2× between N = 1,000 and N = 10,000.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(kind: str, n: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    if kind == "deepfool":
        from geomrobust.models import as_logits_fn, create_model
        from geomrobust.search import deepfool_dataset

        model = create_model("lenet", (32, 32, 1), 10, key=jax.random.key(0), activation="softplus")
        f = as_logits_fn(model)
        x = rng.uniform(0, 1, (n, 32, 32, 1)).astype(np.float32)
        res = deepfool_dataset(f, x, bounds=(0.0, 1.0))
        summary = float(np.mean(np.asarray(res.iterations)))
        d = 1024
    else:
        from geomrobust.measures import principal_curvatures

        d, h = 256, 64
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        w1 = jax.random.normal(k1, (d, h)) / 16.0
        w2 = jax.random.normal(k2, (h, h)) / 8.0
        w3 = jax.random.normal(k3, (h, 10)) / 8.0

        def f(x):
            return jnp.tanh(jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2) @ w3

        z = rng.normal(0, 1, (n, d)).astype(np.float32)
        y, k = np.zeros(n, np.int32), np.ones(n, np.int32)
        res = principal_curvatures(f, z, y, k, num=10, key=jax.random.key(1), method="lanczos")
        summary = float(np.mean(np.asarray(res.converged)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return dict(kind=kind, N=n, D=d, peak_rss_mib=rss / 1024, seconds=time.perf_counter() - t0,
                summary=summary)  # fmt: skip


def measure(kind: str, n: int, timeout: float = 1800) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", kind, "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["rusage_children_max_mib"] = children  # cross-check (max over all children so far)
    return out


def run(ns=(1000, 10000), kinds=("deepfool", "curvature")):
    rows = []
    for kind in kinds:
        small, large = (measure(kind, n) for n in ns)
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        label = "DeepFool margins" if kind == "deepfool" else "principal curvatures"
        rows.append(
            dict(name=f"peak RSS {label} D={small['D']} N={ns[0]}->{ns[1]}",
                 ours=large["peak_rss_mib"], reference=f"peak RSS at N={ns[0]} (MiB)",
                 ref=small["peak_rss_mib"], target="ours/ref <= 1.2", ok=ratio <= 1.2,
                 unit="MiB", seconds_small=round(small["seconds"], 2),
                 seconds_large=round(large["seconds"], 2))
        )  # fmt: skip
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["deepfool", "curvature"])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.n)))
    else:
        for r in run():
            print(r)


if __name__ == "__main__":
    main()
