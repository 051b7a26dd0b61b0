"""Real architectures end to end: ResNet-18, PreActResNet-18, WRN-28-10 and DeepMind's
WRN-28-10 (Swish) at CIFAR size.

For each architecture (PyTorch layouts, random weights with randomized BatchNorm statistics,
CIFAR-10 normalization inside the classifier, so every distance is in pixel units of images in
``[0, 1]``), in a fresh process, on a few 32x32x3 inputs:

* DeepFool L2 margins in the box ``[0, 1]`` (``gr.deepfool``);
* DCT-subspace margins (one 8x8 low-frequency block x 3 channels, ``s = 192``);
* principal curvatures at a scale (``scale=σ``, the Gaussian-smoothed boundary: these are
  ReLU networks, whose exact Hessian is zero), at refined boundary points;
* the top eigenvalues of the input-space loss Hessian (Lanczos, matrix-free);

with the wall time per example of each (warm: the first call compiles, the time is that of a
second call on other inputs of the same shape), for the smooth (Swish) network the exact
principal curvatures (Lanczos on the Hessian, no smoothing) per boundary point, the compile
time (first minus second), and the process's peak resident memory (VmHWM). ``--gpu`` runs
the accelerator row instead: WRN-28-10 on 1,000 inputs, ``gr.deepfool`` against the floor
(mean iterations + 1) x one batched forward + 9-class VJP over the N inputs.

The DeepMind row (``dm_wrn28_10_swish``) goes through the import path of published
checkpoints: its random weights (:func:`random_state_dict`, PyTorch names and shapes) are
written to a ``.safetensors`` file and read back with ``geomrobust.models.from_torch``.

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
    "dm_wrn28_10_swish": ("dm_wide_resnet", {"depth": 28, "width": 10, "activation": "swish"}),
}
# rows whose random weights go through a .safetensors file and geomrobust.models.from_torch
# (the import path of published checkpoints), not through create_model
SAFETENSORS_ROWS = ("dm_wrn28_10_swish",)


def random_state_dict(name: str, seed: int = 0) -> dict:
    """A PyTorch state dict (NumPy float32, PyTorch names and shapes) of the architecture
    ``name`` with random weights: He-normal convolutions (fan-out), uniform linear layers,
    random BatchNorm affine parameters and running statistics. The same dict loads into the
    PyTorch definition (``load_state_dict``) and into :func:`geomrobust.models.from_torch`."""
    import numpy as np

    from geomrobust.models import torch_state_dict_keys

    arch, config = ARCHS[name]
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in torch_state_dict_keys(arch, num_classes=10, **config).items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and len(shape) == 4:
            fan_out = shape[0] * shape[2] * shape[3]
            v = rng.normal(0.0, np.sqrt(2.0 / fan_out), shape)
        elif leaf == "weight" and len(shape) == 2:
            v = rng.uniform(-1, 1, shape) / np.sqrt(shape[1])
        elif leaf == "weight":  # BatchNorm scale
            v = 0.5 + rng.random(shape)
        elif leaf == "running_var":
            v = 0.5 + rng.random(shape)
        else:  # biases, running means
            v = 0.1 * rng.normal(size=shape)
        out[key] = v.astype(np.float32)
    return out


def build_from_safetensors(name: str, folder, seed: int = 0):
    """The row ``name`` through the safetensors path: random weights written to
    ``folder/<name>.safetensors`` and read back with ``from_torch`` (its own normalization
    inside: CIFAR-10's for DeepMind's models)."""
    from safetensors.numpy import save_file

    from geomrobust.models import from_torch

    arch, config = ARCHS[name]
    path = Path(folder) / f"{name}.safetensors"
    save_file(random_state_dict(name, seed), str(path))
    model = from_torch(path, arch, num_classes=10, input_shape=(32, 32, 3), **config)
    return model, path


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

    if name in SAFETENSORS_ROWS:  # DeepMind's models normalize inside (CIFAR-10's statistics)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            model, _ = build_from_safetensors(name, tmp, seed)
        n_params = sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
        return model, n_params
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
        return gr.deepfool(clf, x, bounds=(0.0, 1.0), steps=20)

    cold, warm, df = _timed(deepfool, xa, xb)
    conv = np.asarray(df.converged)
    row.update(deepfool_s_per_example=warm / n, deepfool_compile_s=cold - warm,
               deepfool_converged=float(conv.mean()),
               deepfool_median_margin=float(np.median(np.asarray(df.margin)[conv]))
               if conv.any() else None,
               deepfool_mean_iterations=float(np.mean(np.asarray(df.iterations))))  # fmt: skip
    # the smooth DeepMind row measures its exact curvature only (a few minutes on 2 cores)
    full = name not in SAFETENSORS_ROWS
    if full:
        band = gr.dct_subspaces((32, 32, 3), 8, 8, dtype=np.float32)[:1]

        def dct(x):
            return gr.subspace_margins(clf, x, None, band, bounds=(0.0, 1.0), steps=20)

        cold, warm, sm = _timed(dct, xa, xb)
        inside = np.asarray(sm.converged[0])
        row.update(dct_s_per_example=warm / n, dct_compile_s=cold - warm,
                   dct_band_boundary_inside_box=float(inside.mean()))  # fmt: skip
    pred = jnp.argmax(clf(xb), -1)
    bp = gr.refine_boundary(clf, xb, xb + df.perturbation, pred)
    ok = np.nonzero(np.asarray(bp.converged & df.converged))[0][:curv_n]
    row["curvature_points"] = int(ok.size)
    if ok.size and full:
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
    elif ok.size:  # smooth: the exact principal curvatures (Lanczos on the Hessian)
        z, y, k = bp.z[ok], bp.y[ok], bp.k[ok]

        def exact_curv(key):
            return gr.principal_curvatures(clf, z, y, k, num=3, key=key, method="lanczos",
                                           krylov_dim=12, chunk_size=int(ok.size))  # fmt: skip

        cold, warm, exact = _timed(exact_curv, jax.random.key(0), jax.random.key(1))
        ev = np.asarray(exact.values)
        flagged = bool(exact.status[0] == gr.Status.PIECEWISE_LINEAR)
        row.update(exact_curvature_flagged_piecewise_linear=flagged,
                   exact_curvature_s_per_point=warm / ok.size,
                   exact_curvature_compile_s=cold - warm,
                   exact_curvature_converged=float(np.mean(np.asarray(exact.converged))),
                   median_abs_top_exact_curvature=float(np.median(np.abs(ev[:, 0]))))  # fmt: skip
    if full:
        m = min(curv_n, n)

        def loss(x):
            return gr.loss_hessian_eigs(clf, x[:m], pred[:m], num=3, key=jax.random.key(0),
                                        method="lanczos", krylov_dim=12,
                                        restarts=5)  # fmt: skip

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


def _robustbench_dm_wide_resnet():
    """RobustBench's ``dm_wide_resnet.py`` alone (``pip install --no-deps robustbench``: the
    package's ``__init__`` needs its data and download dependencies)."""
    import importlib.util

    spec = importlib.util.find_spec("robustbench")
    if spec is None:
        raise SystemExit("the torchax row needs: pip install --no-deps robustbench==1.1.1")
    root = Path(next(iter(spec.submodule_search_locations)))
    spec = importlib.util.spec_from_file_location(
        "_robustbench_dm_wide_resnet", root / "model_zoo" / "architectures" / "dm_wide_resnet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_torchax(n: int, depth: int, width: int, restarts: int = 30) -> dict:
    """DeepMind's WRN (RobustBench's ``DMWideResNet``, Swish) at 32x32x3, the same random
    weights through the two routes: the safetensors import (``from_torch``, the package's own
    Flax model) and the live PyTorch module through torchax (``from_torch_module``). DeepFool
    L2 in the box and the exact principal curvatures (Lanczos on the Hessian: Swish is smooth)
    at one boundary point, per example, warm, in one process; and how far the two agree.
    ``restarts`` bounds the Lanczos cycles (the work per point: ``8 + 2 restarts + 2``
    Hessian-vector products when the solver runs to its budget, as it does here)."""
    import tempfile
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    import geomrobust as gr
    from geomrobust.models import from_torch, from_torch_module

    torch.set_num_threads(1)
    dm = _robustbench_dm_wide_resnet()
    torch.manual_seed(0)
    net = dm.DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=dm.Swish)
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # random BatchNorm statistics, so evaluation mode is not identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    net.eval()
    n_params = sum(p.numel() for p in net.parameters())
    routes = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dm.safetensors"
        save_file({k: v.detach().numpy() for k, v in net.state_dict().items()}, str(path))
        routes["safetensors"] = from_torch(path, "dm_wide_resnet", num_classes=10,
                                           input_shape=(32, 32, 3), depth=depth, width=width,
                                           activation="swish")  # fmt: skip
    build_s = {"safetensors": time.perf_counter() - t0}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the custom-autograd Swish: warned, expected here
        routes["torchax"] = from_torch_module(net, (32, 32, 3))
    build_s["torchax"] = time.perf_counter() - t0
    xa = jax.random.uniform(jax.random.key(10), (n, 32, 32, 3))
    xb = jax.random.uniform(jax.random.key(11), (n, 32, 32, 3))
    row = dict(arch=f"dm_wrn{depth}_{width}_swish", params=n_params, n=n)
    out = {}
    for route, clf in routes.items():
        cold, warm, df = _timed(lambda x, c=clf: gr.deepfool(c, x, bounds=(0.0, 1.0)), xa, xb)
        pred = jnp.argmax(clf(xb), -1)
        bp = gr.refine_boundary(clf, xb, xb + df.perturbation, pred)
        i = int(np.argmax(np.asarray(bp.converged & df.converged)))  # the first found point
        z, y, k = bp.z[i : i + 1], bp.y[i : i + 1], bp.k[i : i + 1]

        def curv(key, c=clf, z=z, y=y, k=k):
            return gr.principal_curvatures(c, z, y, k, num=2, key=key, method="lanczos",
                                           krylov_dim=8, restarts=restarts)  # fmt: skip

        c_cold, c_warm, cv = _timed(curv, jax.random.key(0), jax.random.key(1))
        out[route] = dict(margin=np.asarray(df.margin), logits=np.asarray(clf(xb)),
                          curv=np.asarray(cv.values[0]))  # fmt: skip
        row[route] = dict(build_s=round(build_s[route], 2),
                          deepfool_s_per_example=warm / n, deepfool_compile_s=cold - warm,
                          deepfool_converged=float(np.mean(np.asarray(df.converged))),
                          curvature_s_per_point=c_warm, curvature_compile_s=c_cold - c_warm,
                          curvature_restarts_done=int(np.asarray(cv.restarts)[0]),
                          top_curvatures=[float(v) for v in np.asarray(cv.values[0])])  # fmt: skip
    a, b = out["safetensors"], out["torchax"]
    rel = lambda u, v: float(np.max(np.abs(u - v)) / np.max(np.abs(u)))  # noqa: E731
    row.update(logits_rel_diff=rel(a["logits"], b["logits"]),
               margin_rel_diff=rel(a["margin"], b["margin"]),
               margins={r: [float(v) for v in out[r]["margin"]] for r in out},
               curvature_restarts=restarts,
               top_curvature_rel_diff=rel(a["curv"][:1], b["curv"][:1]),
               torchax_over_safetensors_deepfool=row["torchax"]["deepfool_s_per_example"]
               / row["safetensors"]["deepfool_s_per_example"],
               torchax_over_safetensors_curvature=row["torchax"]["curvature_s_per_point"]
               / row["safetensors"]["curvature_s_per_point"],
               peak_rss_mib=round(_peak_mib(), 1))  # fmt: skip
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS))
    p.add_argument("--n", type=int, default=4, help="inputs per architecture (CPU rows)")
    p.add_argument("--curv-n", type=int, default=2, help="boundary points for curvature")
    p.add_argument("--samples", type=int, default=32, help="gradient samples at a scale")
    p.add_argument("--gpu", action="store_true", help="the accelerator row (WRN-28-10)")
    p.add_argument("--gpu-n", type=int, default=1000)
    p.add_argument(
        "--torchax",
        action="store_true",
        help="DeepMind's WRN (Swish): safetensors route vs torchax route",
    )
    p.add_argument("--depth", type=int, default=28, help="WRN depth of the torchax row")
    p.add_argument("--width", type=int, default=10, help="WRN width of the torchax row")
    p.add_argument(
        "--curv-restarts",
        type=int,
        default=30,
        help="Lanczos restarts of the torchax row's curvature (its work per point)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "torchax":
        print(json.dumps(child_torchax(args.n, args.depth, args.width, args.curv_restarts)))
        return 0
    if args.child == "gpu":
        print(json.dumps(child_gpu(args.gpu_n)))
        return 0
    if args.child:
        print(json.dumps(child_cpu(args.child, args.n, args.curv_n, args.samples)))
        return 0
    rows = []
    names = ["gpu"] if args.gpu else ["torchax"] if args.torchax else args.only
    for name in names:
        print(f"{name} ...", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.bench_real_models", "--child", name,
               "--n", str(args.n), "--curv-n", str(args.curv_n), "--samples",
               str(args.samples), "--gpu-n", str(args.gpu_n), "--depth", str(args.depth),
               "--width", str(args.width), "--curv-restarts", str(args.curv_restarts)]  # fmt: skip
        load0 = [round(v, 2) for v in os.getloadavg()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        if proc.returncode:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_s"] = round(time.perf_counter() - t0, 1)
        row["load_start"] = load0
        row["load"] = [round(v, 2) for v in os.getloadavg()]
        rows.append(row)
        print("  " + json.dumps(row), flush=True)
    tag = (
        "real_models_gpu" if args.gpu else "real_models_torchax" if args.torchax else "real_models"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if tag == "real_models" and (out / f"{tag}.json").exists():  # rows not re-measured are kept
        done = {r["arch"] for r in rows}
        old = json.loads((out / f"{tag}.json").read_text())
        kept = [r for r in old.get("rows", []) if r["arch"] not in done]
        for r in kept:  # a kept row keeps the load it was measured at (per row)
            r.setdefault("load", old.get("load"))
        rows = kept + rows
    meta = dict(load=[round(v, 2) for v in os.getloadavg()], rows=rows)
    (out / f"{tag}.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# {tag}", ""] + ["- " + json.dumps(r) for r in rows]
    (out / f"{tag}.md").write_text("\n".join(lines) + f"\n\nload {meta['load']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
