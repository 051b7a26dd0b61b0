"""The execution engine: compile cost per model, the headline call's speed, time to first result.

Every measurement runs in a fresh process (no compilation cache carried over), on the package
found at ``--root`` (default: this checkout), so the same script measures another version of
the package side by side, e.g. the commit before the engine change checked out with
``git worktree add /tmp/before <commit>`` and ``--root /tmp/before``. Rows:

* ``headline``: the README's call ``gr.deepfool(f, x)`` at N = 500, D = 1024 (trained softplus
  LeNet, L2, all classes, overshoot 0.02, box [0, 1]) against Foolbox 3's
  ``L2DeepFoolAttack`` on the same model, **jitted** (``fb.JAXModel(jax.jit(f))``, its best
  ordinary use), both warm (best of 2 after a warm-up call); same median margin required.
  Also the cold first call, and a second call with other data of the same shape.
* ``second_model``: ``deepfool_dataset`` and ``principal_curvatures`` on a first model, then on
  a second model of the same architecture (other weights), then on a fresh adapter of the
  first: the wall time of each call (a recompilation shows as seconds, a cache hit as the run
  time alone).
* ``first_result``: the time from a cold start to the first DeepFool result (4 images, 2
  slots, 3 steps at most) on the package ResNet-18 at 32x32x3 and on a WideResNet-28-10
  (random weights; 11.2M and 36.5M parameters), and the same call warm: their difference is
  the compile (and constant-folding) time.

``python -m benchmarks.bench_engine [--root DIR] [--only ROW ...] [--name NAME]`` writes
``benchmarks/results/NAME.{json,md}``.
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
REPO = HERE.parent


def _child_setup(root: str):
    sys.path.insert(0, root)
    import geomrobust

    assert Path(geomrobust.__file__).resolve().is_relative_to(Path(root).resolve()), (
        geomrobust.__file__,
        root,
    )
    return geomrobust


def _classifier(gr, model):
    """The package's adapter for an NNX module (``as_classifier`` where it exists)."""
    conv = getattr(gr, "as_classifier", None) or gr.as_logits_fn
    return conv(model)


def _wall(fn):
    import jax

    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


def child_headline(root: str) -> dict:
    gr = _child_setup(root)
    import importlib.util

    import jax
    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_common", HERE / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    f, _, _, acc = common.trained_cnn(1024)
    x = common.pool(1024, 1000)
    xa, xb = x[:500], x[500:]
    bounds = (0.0, 1.0)
    t_cold, _ = _wall(lambda: gr.deepfool(f, xa, bounds=bounds).margin)
    t_other, _ = _wall(lambda: gr.deepfool(f, xb, bounds=bounds).margin)
    best = min(_wall(lambda: gr.deepfool(f, xa, bounds=bounds).margin)[0] for _ in range(2))
    res = gr.deepfool(f, xa, bounds=bounds)
    conv = np.asarray(res.converged)
    ours_median = float(np.median(np.asarray(res.margin)[conv]))

    import foolbox as fb

    fj = jax.jit(f)
    model = fb.JAXModel(fj, bounds=bounds)
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    xj = jax.numpy.asarray(xa)
    labels = jax.numpy.argmax(fj(xj), -1)

    def fool():
        _, clipped, success = attack(model, xj, labels, epsilons=None)
        return clipped, success

    _wall(fool)
    t_fb = min(_wall(fool)[0] for _ in range(2))
    clipped, success = fool()
    m_fb = np.linalg.norm((np.asarray(clipped) - xa).reshape(500, -1), axis=1)
    s_fb = np.asarray(success)
    return dict(
        test_accuracy=round(acc, 4),
        deepfool_cold_s=round(t_cold, 3),
        deepfool_second_data_s=round(t_other, 3),
        deepfool_warm_s=round(best, 3),
        foolbox_jitted_warm_s=round(t_fb, 3),
        speedup_vs_foolbox=round(t_fb / best, 3),
        median_margin=round(ours_median, 5),
        foolbox_median_margin=round(float(np.median(m_fb[s_fb])), 5),
        converged=round(float(conv.mean()), 4),
        foolbox_success=round(float(s_fb.mean()), 4),
    )


def child_second_model(root: str) -> dict:
    gr = _child_setup(root)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from geomrobust.models import create_model

    shape = (32, 32, 1)
    x = jax.random.uniform(jax.random.key(5), (64, *shape))
    a = create_model("lenet", shape, 10, key=jax.random.key(0), activation="softplus")
    b = create_model("lenet", shape, 10, key=jax.random.key(1), activation="softplus")
    out = {}
    for tag, model in (("first", a), ("second_model", b), ("fresh_adapter", a)):
        f = _classifier(gr, model)
        t, _ = _wall(lambda f=f: gr.deepfool_dataset(f, x, slots=16, chunk_size=64).margin)
        out[f"deepfool_dataset_{tag}_s"] = round(t, 3)
    df = gr.deepfool_dataset(_classifier(gr, a), x)
    bp = gr.refine_boundary(_classifier(gr, a), x, x + df.perturbation, jnp.argmax(a(x), -1))
    ok = np.nonzero(np.asarray(bp.converged))[0][:16]
    z, y, k = bp.z[ok], bp.y[ok], bp.k[ok]
    for tag, model in (("first", a), ("second_model", b), ("fresh_adapter", a)):
        f = _classifier(gr, model)
        t, _ = _wall(
            lambda f=f: (
                gr.principal_curvatures(
                    f, z, y, k, num=5, key=jax.random.key(0), method="lanczos", chunk_size=16
                ).values
            )
        )
        out[f"curvatures_{tag}_s"] = round(t, 3)
    return out


def child_first_result(root: str, arch: str) -> dict:
    gr = _child_setup(root)
    import importlib.util

    import jax

    t_start = time.perf_counter()
    shape = (32, 32, 3)
    if arch == "resnet18":
        from geomrobust.models import create_model

        model = create_model("resnet", shape, 10, key=jax.random.key(0))
    else:  # the measured checkout's WideResNet (its package, or the older single file)
        try:
            from geomrobust.models import torch as archs
        except ImportError:
            archs = importlib.import_module("geomrobust.models._torch_archs")
        from flax import nnx

        model = archs.WideResNet(28, 10, num_classes=10, rngs=nnx.Rngs(0))
    from flax import nnx

    n_params = sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    x = jax.random.uniform(jax.random.key(1), (4, *shape))
    t_built = time.perf_counter()
    f = _classifier(gr, model)
    kw = dict(slots=2, chunk_size=4, steps=3)
    t_first, _ = _wall(lambda: gr.deepfool_dataset(f, x, **kw).margin)
    t_warm, _ = _wall(lambda: gr.deepfool_dataset(f, x, **kw).margin)
    f2 = _classifier(gr, model)
    t_adapter, _ = _wall(lambda: gr.deepfool_dataset(f2, x, **kw).margin)
    return dict(
        arch=arch,
        params=n_params,
        build_s=round(t_built - t_start, 2),
        first_result_s=round(t_first, 2),
        warm_s=round(t_warm, 2),
        compile_s=round(t_first - t_warm, 2),
        fresh_adapter_s=round(t_adapter, 2),
    )


ROWS = {
    "headline": lambda root: child_headline(root),
    "second_model": lambda root: child_second_model(root),
    "first_result_resnet18": lambda root: child_first_result(root, "resnet18"),
    "first_result_wrn28_10": lambda root: child_first_result(root, "wrn28_10"),
}


def run_child(row: str, root: str, timeout: float = 3600) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", row, "--root", root],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{row} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO), help="package checkout to measure")
    p.add_argument("--only", nargs="+", choices=sorted(ROWS), default=sorted(ROWS))
    p.add_argument("--name", default="engine", help="results/NAME.{json,md}")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(ROWS[args.child](args.root)))
        return 0
    results = dict(root=args.root, load_before=[round(v, 2) for v in os.getloadavg()], rows={})
    for row in args.only:
        print(f"{row} ...", flush=True)
        results["rows"][row] = run_child(row, args.root)
        print(f"  {results['rows'][row]}", flush=True)
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# {args.name} (root {args.root})", ""]
    for row, vals in results["rows"].items():
        lines.append(f"- **{row}**: " + ", ".join(f"{k}={v}" for k, v in vals.items()))
    lines.append(f"\nload before {results['load_before']}, after {results['load_after']}")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
