"""LeNet convolutions on the CPU: XLA's ``lax.conv`` against the im2col matrix product.

The same weights, the same function (``LeNet(conv="xla")`` vs ``LeNet(conv="im2col")``; the
default ``conv="auto"`` is im2col on the CPU), three workloads, each jitted and warm (best of
3 after a warm-up):

* ``train``: one SGD step (forward, parameter gradients, update) of the classic LeNet-5 of
  the NADs paper (32×32×1, VALID, 400-wide flatten), batch 128: the Fourier accuracy map's
  inner loop (1,580 of them per direction with the authors' recipe);
* ``train_same``: the same with the package's default SAME-padded LeNet;
* ``input_vjp``: forward + 10-class input VJP over a batch of 500 (the DeepFool step) on the
  SAME LeNet at 32×32.

``python -m benchmarks.bench_conv [--name NAME]`` writes ``benchmarks/results/NAME.{json,md}``
(default ``conv``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _best(fn, *args, repeat=3):
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def _model(padding, impl):
    import jax

    from geomrobust.models import create_model

    model = create_model("lenet", (32, 32, 1), 10, key=jax.random.key(0), padding=padding)
    model.conv_impl = impl
    return model


def measure(steps: int = 20) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from geomrobust.models import pure_apply

    x = jax.random.normal(jax.random.key(1), (128, 32, 32, 1))
    y = jax.random.randint(jax.random.key(2), (128,), 0, 10)
    xs = jax.random.uniform(jax.random.key(3), (500, 32, 32, 1))
    rows = {}
    for name, padding in (("train", "VALID"), ("train_same", "SAME")):
        out = {}
        for impl in ("xla", "im2col"):
            apply, params = pure_apply(_model(padding, impl))

            def loss(p, x, y, apply=apply):
                return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

            @jax.jit
            def train(p, x, y, loss=loss):
                def body(p, _):
                    g = jax.grad(loss)(p, x, y)
                    return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), None

                return jax.lax.scan(body, p, None, length=steps)[0]

            out[impl] = _best(train, params, x, y) / steps
        rows[name] = out
    out = {}
    for impl in ("xla", "im2col"):
        apply, params = pure_apply(_model("SAME", impl))

        @jax.jit
        def vjp(p, x, apply=apply):
            _, pull = jax.vjp(lambda z: apply(p, z), x)
            return jax.vmap(pull)(jnp.eye(10)[:, None, :].repeat(x.shape[0], 1))

        out[impl] = _best(vjp, params, xs)
    rows["input_vjp"] = out
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="conv")
    args = p.parse_args(argv)
    import jax

    rows = measure()
    load = os.getloadavg()[0]
    result = {"backend": jax.default_backend(), "jax": jax.__version__, "load": load, "rows": rows}
    lines = [
        f"LeNet convolutions, {jax.default_backend()}, jax {jax.__version__}, load {load:.1f}",
        "",
        "| workload | lax.conv | im2col | speed-up |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        unit, scale = ("ms / step", 1e3) if name.startswith("train") else ("s", 1.0)
        lines.append(
            f"| {name} | {r['xla'] * scale:.2f} {unit} | {r['im2col'] * scale:.2f} {unit} | "
            f"{r['xla'] / r['im2col']:.1f}× |"
        )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
