"""Real architectures end to end: ResNet-18, PreActResNet-18 and WRN-28-10 at CIFAR size.

For each architecture (PyTorch layouts, random weights with randomized BatchNorm statistics,
CIFAR-10 normalization inside the classifier, so every distance is in pixel units of images in
``[0, 1]``), in a fresh process, on a few 32x32x3 inputs:

* DeepFool L2 margins in the box ``[0, 1]`` (``gr.deepfool``);
* DCT-subspace margins (one 8x8 low-frequency block x 3 channels, ``s = 192``);
* principal curvatures at a scale (``scale=σ``, the Gaussian-smoothed boundary: these are
  ReLU networks, whose exact Hessian is zero), at refined boundary points;
* the top eigenvalues of the input-space loss Hessian (Lanczos, matrix-free);

with the wall time per example of each (warm: the first call compiles, the time is that of a
second call on other inputs of the same shape), the compile time (first minus second), and
the process's peak resident memory (VmHWM). ``--gpu`` runs the accelerator row instead:
WRN-28-10 on 1,000 inputs, ``gr.deepfool`` against the floor (mean iterations + 1) x one
batched forward + 9-class VJP over the N inputs.

``python -m benchmarks.bench_real_models [--only NAME ...] [--n N] [--gpu]`` writes
``benchmarks/results/real_models.{json,md}`` (``real_models_gpu`` with ``--gpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
ARCHS = {
    "resnet18": ("resnet18", {}),
    "preact_resnet18": ("preact_resnet18", {}),
    "wrn28_10": ("wide_resnet", {"depth": 28, "widen_factor": 10}),
}


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(name: str, seed: int = 0):
    """The architecture with random weights and randomized BatchNorm statistics, wrapped in
    the CIFAR-10 normalization (a classifier of images in [0, 1])."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from geomrobust.models import Normalized, create_model

    arch, config = ARCHS[name]
    model = create_model(arch, (32, 32, 3), 10, key=jax.random.key(seed), **config)
    state = nnx.state(model, nnx.BatchStat)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    new = [
        (jnp.abs(jax.random.normal(k, v.shape, v.dtype)) * 0.5 + 0.5)
        if i % 2 else 0.1 * jax.random.normal(k, v.shape, v.dtype)
        for i, (k, v) in enumerate(zip(keys, leaves, strict=True))
    ]  # fmt: skip
    nnx.update(model, jax.tree.unflatten(treedef, new))
    n_params = sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Normalized(model, CIFAR_MEAN, CIFAR_STD), n_params


def _timed(fn, a, b):
    """(cold, warm) wall times: the first call on ``a`` compiles, the second runs on ``b``."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(a))
    t1 = time.perf_counter()
    out = fn(b)
    jax.block_until_ready(out)
    return t1 - t0, time.perf_counter() - t1, out


def child_cpu(name: str, n: int, curv_n: int, samples: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import geomrobust as gr

    clf, n_params = build(name)
    xa = jax.random.uniform(jax.random.key(10), (n, 32, 32, 3))
    xb = jax.random.uniform(jax.random.key(11), (n, 32, 32, 3))
    row = dict(arch=name, params=n_params, n=n)

    def deepfool(x):
        return gr.deepfool(clf, x, bounds=(0.0, 1.0), max_iter=20)

    cold, warm, df = _timed(deepfool, xa, xb)
    conv = np.asarray(df.converged)
    row.update(deepfool_s_per_example=warm / n, deepfool_compile_s=cold - warm,
               deepfool_converged=float(conv.mean()),
               deepfool_median_margin=float(np.median(np.asarray(df.margin)[conv]))
               if conv.any() else None,
               deepfool_mean_iterations=float(np.mean(np.asarray(df.iterations))))  # fmt: skip
    band = gr.dct_subspaces((32, 32, 3), 8, 8, dtype=np.float32)[:1]

    def dct(x):
        return gr.subspace_margins(clf, x, None, band, bounds=(0.0, 1.0), max_iter=20)

    cold, warm, sm = _timed(dct, xa, xb)
    inside = np.asarray(sm.converged[0])
    row.update(dct_s_per_example=warm / n, dct_compile_s=cold - warm,
               dct_band_boundary_inside_box=float(inside.mean()))  # fmt: skip
    pred = jnp.argmax(clf(xb), -1)
    bp = gr.refine_boundary(clf, xb, xb + df.perturbation, pred)
    ok = np.nonzero(np.asarray(bp.converged & df.converged))[0][:curv_n]
    row["curvature_points"] = int(ok.size)
    if ok.size:
        z, y, k = bp.z[ok], bp.y[ok], bp.k[ok]
        kw = dict(num=3, scale=0.02, num_samples=samples, chunk_size=int(ok.size))

        def curv(key):
            return gr.principal_curvatures(clf, z, y, k, key=key, **kw)

        cold, warm, c = _timed(curv, jax.random.key(0), jax.random.key(1))
        vals, se = np.asarray(c.values), np.asarray(c.stderr)
        row.update(curvature_s_per_point=warm / ok.size, curvature_compile_s=cold - warm,
                   curvature_samples=samples, curvature_scale=0.02,
                   median_abs_top_curvature=float(np.median(np.abs(vals[:, 0]))),
                   median_top_curvature_stderr=float(np.median(se[:, 0])))  # fmt: skip
        exact = gr.principal_curvatures(clf, z[:1], y[:1], k[:1], num=2, key=jax.random.key(0),
                                        method="lanczos", krylov_dim=8)  # fmt: skip
        row["exact_curvature_flagged_piecewise_linear"] = bool(
            exact.status[0] == gr.Status.PIECEWISE_LINEAR
        )
    m = min(curv_n, n)

    def loss(x):
        return gr.loss_hessian_eigs(clf, x[:m], pred[:m], num=3, key=jax.random.key(0),
                                    method="lanczos", krylov_dim=12, restarts=5)  # fmt: skip

    cold, warm, le = _timed(loss, xa, xb)
    row.update(loss_eigs_s_per_example=warm / m, loss_eigs_compile_s=cold - warm,
               loss_eigs_converged=float(np.mean(np.asarray(le.converged))),
               median_top_loss_eig=float(np.median(np.asarray(le.values)[:, 0])))  # fmt: skip
    row["peak_rss_mib"] = round(_peak_mib(), 1)
    return row


def child_gpu(n: int) -> dict:
    """WRN-28-10 on ``n`` inputs: gr.deepfool against the forward + VJP floor."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import geomrobust as gr
    from geomrobust.ops import batch_class_gradients

    clf, n_params = build("wrn28_10")
    x = jax.random.uniform(jax.random.key(10), (n, 32, 32, 3))
    x2 = jax.random.uniform(jax.random.key(11), (n, 32, 32, 3))
    cold, warm, df = _timed(lambda v: gr.deepfool(clf, v, bounds=(0.0, 1.0)), x, x2)
    it = np.asarray(df.iterations)

    @jax.jit
    def floor(c, xb):
        logits = c(xb)
        y = jnp.argmax(logits, -1)
        others = (y[:, None] + 1 + jnp.arange(9)[None]) % 10
        return batch_class_gradients(c, xb, others)[1]

    b = min(n, 256)
    jax.block_until_ready(floor(clf, x2[:b]))
    t0 = time.perf_counter()
    for s in range(0, n - b + 1, b):
        jax.block_until_ready(floor(clf, x2[s : s + b]))
    t_eval = (time.perf_counter() - t0) * n / (b * (n // b))
    t_floor = (it.mean() + 1) * t_eval
    return dict(arch="wrn28_10", params=n_params, n=n, device=str(jax.devices()[0]),
                deepfool_s=warm, deepfool_compile_s=cold - warm, floor_s=t_floor,
                ratio_to_floor=warm / t_floor, mean_iterations=float(it.mean()),
                converged=float(np.mean(np.asarray(df.converged))),
                peak_rss_mib=round(_peak_mib(), 1))  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS))
    p.add_argument("--n", type=int, default=4, help="inputs per architecture (CPU rows)")
    p.add_argument("--curv-n", type=int, default=2, help="boundary points for curvature")
    p.add_argument("--samples", type=int, default=32, help="gradient samples at a scale")
    p.add_argument("--gpu", action="store_true", help="the accelerator row (WRN-28-10)")
    p.add_argument("--gpu-n", type=int, default=1000)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "gpu":
        print(json.dumps(child_gpu(args.gpu_n)))
        return 0
    if args.child:
        print(json.dumps(child_cpu(args.child, args.n, args.curv_n, args.samples)))
        return 0
    rows = []
    names = ["gpu"] if args.gpu else args.only
    for name in names:
        print(f"{name} ...", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.bench_real_models", "--child", name,
               "--n", str(args.n), "--curv-n", str(args.curv_n), "--samples",
               str(args.samples), "--gpu-n", str(args.gpu_n)]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        if proc.returncode:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print("  " + json.dumps(row), flush=True)
    tag = "real_models_gpu" if args.gpu else "real_models"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    meta = dict(load=[round(v, 2) for v in os.getloadavg()], rows=rows)
    (out / f"{tag}.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# {tag}", ""] + ["- " + json.dumps(r) for r in rows]
    (out / f"{tag}.md").write_text("\n".join(lines) + f"\n\nload {meta['load']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
