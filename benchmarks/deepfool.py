"""DeepFool drivers side by side: floor, continuous batching, naive batched loop, per example.

Trains a LeNet on the embedded digits upsampled to 32×32 (D = 1024), then measures L2 DeepFool
(all 10 classes) on N test images:

* floor: mean iterations × one batched forward + VJP over all classes for the N examples
  (+ the clean evaluation), timed on the same model;
* ``deepfool_dataset``: continuous batching over B slots, with the loop on the host (one
  jitted call per iteration, the default on CPU) or as a ``lax.while_loop`` (accelerators);
* ``deepfool`` under ``jit``: one batched while_loop, every example runs as long as the slowest;
* a per-example loop (``deepfool`` on one example at a time, jitted once), on a subset and
  extrapolated to N.

Run: ``python benchmarks/deepfool.py [--n 500] [--slots 32] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.data import load_dataset
from geomrobust.models import create_model, pure_apply
from geomrobust.search import deepfool, deepfool_dataset
from geomrobust.search._deepfool import _evaluate as evaluate
from geomrobust.train import fit, make_optimizer


def _timed(fn, repeat=2):
    out = fn()
    jax.block_until_ready(out)  # compile + warm up
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="examples")
    ap.add_argument("--slots", type=int, default=32, help="continuous-batching slots B")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs")
    ap.add_argument("--per-example", type=int, default=25, help="subset for the per-example loop")
    args = ap.parse_args(argv)

    train = load_dataset("digits", "train", resize=32)
    test = load_dataset("digits", "test", resize=32)
    model = create_model("lenet", train.images.shape[1:], train.num_classes, key=jax.random.key(0))
    apply, params = pure_apply(model)
    opt = make_optimizer("adam", 1e-3, epochs=args.epochs, steps_per_epoch=len(train.labels) // 64)
    res = fit(
        apply,
        params,
        opt,
        train.images,
        train.labels,
        key=jax.random.key(1),
        epochs=args.epochs,
        batch_size=64,
        progress=False,
    )
    params = res.state.params

    def logits_fn(x):
        return apply(params, x)

    # the digits test split has 355 images: complete with training images up to --n
    pool = np.concatenate([test.images, train.images])
    x = jnp.asarray(pool[: args.n])
    n = x.shape[0]
    nt = len(test.labels)
    acc = float(jnp.mean(jnp.argmax(logits_fn(x[:nt]), -1) == jnp.asarray(test.labels)))

    # continuous batching (jitted inside, once per shape)
    t_cb, r_cb = _timed(lambda: deepfool_dataset(logits_fn, x, slots=args.slots, loop="host"))
    t_cbd, _ = _timed(lambda: deepfool_dataset(logits_fn, x, slots=args.slots, loop="device"))
    # naive: one batched while_loop over all N
    naive = jax.jit(lambda x: deepfool(logits_fn, x))
    t_naive, r_naive = _timed(lambda: naive(x), repeat=1)
    # floor: mean iterations × one batched forward + VJP over all classes, plus the clean one
    k = test.num_classes
    sel = jax.jit(
        lambda x: evaluate(
            logits_fn,
            x,
            lambda lg: (
                jnp.argmax(lg, -1).astype(jnp.int32),
                jnp.broadcast_to(jnp.arange(1, k), (x.shape[0], k - 1)),
            ),
        )
    )
    t_eval, _ = _timed(lambda: sel(x))
    mean_it = float(np.mean(np.asarray(r_cb.iterations)))
    t_floor = (mean_it + 1) * t_eval
    # per-example loop on a subset
    one = jax.jit(lambda xi: deepfool(logits_fn, xi))
    sub = x[: args.per_example]
    one(sub[:1]).margin.block_until_ready()
    t0 = time.perf_counter()
    for i in range(sub.shape[0]):
        one(sub[i : i + 1]).margin.block_until_ready()
    t_loop = (time.perf_counter() - t0) * n / sub.shape[0]

    a, b = r_cb, r_naive
    differ = int(np.sum(np.asarray(a.iterations) != np.asarray(b.iterations)))
    conv_differ = int(np.sum(np.asarray(a.converged) != np.asarray(b.converged)))
    both = np.asarray(a.converged) & np.asarray(b.converged) & (np.asarray(b.margin) > 0)
    rel = np.abs(np.asarray(a.margin) - np.asarray(b.margin))[both] / np.asarray(b.margin)[both]
    same = (
        f"{differ} iteration counts and {conv_differ} convergence flags differ, "
        f"max rel. margin diff where both converged {rel.max():.1e}"
    )
    it = np.asarray(r_cb.iterations)
    print(
        f"device: {jax.devices()[0].platform}  N={n}  D={int(np.prod(x.shape[1:]))}  K={k}  "
        f"test accuracy={acc:.3f} (first {nt})"
    )
    print(
        f"iterations: mean {it.mean():.2f}  max {it.max()}  converged "
        f"{float(np.mean(np.asarray(r_cb.converged))):.3f}"
    )
    print(f"continuous vs naive driver: {same}")
    print(f"{'method':<42}{'seconds':>10}{'× floor':>10}")
    rows = [
        ("floor (mean it + 1) × batched fwd+VJP", t_floor),
        (f"deepfool_dataset (B={args.slots}, host loop)", t_cb),
        (f"deepfool_dataset (B={args.slots}, while_loop)", t_cbd),
        ("deepfool jit (naive batched while_loop)", t_naive),
        (f"per-example loop (extrapolated from {sub.shape[0]})", t_loop),
    ]
    for name, t in rows:
        print(f"{name:<42}{t:>10.3f}{t / t_floor:>10.2f}")


if __name__ == "__main__":
    main()
