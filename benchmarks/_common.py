"""Shared pieces of the benchmark suite: the trained CNN, the data, timing and the load."""

from __future__ import annotations

import os
import platform
import time
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.data import load_dataset
from geomrobust.models import create_model, pure_apply
from geomrobust.search import robust_accuracy
from geomrobust.train import fit, make_optimizer, pgd_at_loss

# input shapes: digits (8x8) upsampled to 32x32 (D = 1024), and tiled to 3 channels (D = 3072)
SHAPES = {1024: (32, 32, 1), 3072: (32, 32, 3)}


def load() -> list[float]:
    """1-, 5- and 15-minute load averages (the machine is shared: report them with figures)."""
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    return dict(
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
    )


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` calls after one warm-up call (compilation excluded)."""
    out = fn()
    jax.block_until_ready(out)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return best, out


def mean_time(fn, k: int = 10) -> float:
    """Mean wall time of ``k`` calls after one warm-up call, each waited for (the per-step
    "floor" of the search benchmarks: one jitted forward + VJP of the batch)."""
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(k):
        jax.block_until_ready(fn())
    return (time.perf_counter() - t0) / k


def _digits(d: int):
    train = load_dataset("digits", "train", resize=32)
    test = load_dataset("digits", "test", resize=32)
    xtr, xte = train.images, test.images
    if d == 3072:
        xtr, xte = (np.repeat(a, 3, axis=-1) for a in (xtr, xte))
    return xtr, train.labels, xte, test.labels


@lru_cache(maxsize=2)
def trained_cnn(d: int, epochs: int = 10):
    """A LeNet (softplus, so curvature is defined) trained on the digits at dimension ``d``.

    Returns ``(logits_fn, apply, params, test_accuracy)``; the same model serves every
    benchmark at that dimension.
    """
    xtr, ytr, xte, yte = _digits(d)
    model = create_model("lenet", SHAPES[d], 10, key=jax.random.key(0), activation="softplus")
    apply, params = pure_apply(model)
    opt = make_optimizer("adam", 3e-3, epochs=epochs, steps_per_epoch=len(ytr) // 64)
    res = fit(
        apply, params, opt, xtr, ytr, key=jax.random.key(1), epochs=epochs, batch_size=64,
        progress=False,
    )  # fmt: skip
    params = res.state.params

    def logits_fn(x):
        return apply(params, x)

    acc = float(jnp.mean(jnp.argmax(logits_fn(jnp.asarray(xte)), -1) == jnp.asarray(yte)))
    return logits_fn, apply, params, acc


@lru_cache(maxsize=2)
def robust_cnn(d: int, epochs: int = 10, eps: float = 0.1, steps: int = 7):
    """:func:`trained_cnn` ``(d)`` fine-tuned by PGD adversarial training (Madry et al. 2018).

    ``epochs`` epochs of :func:`geomrobust.train.pgd_at_loss` (Linf ``eps``, ``steps`` PGD
    steps per batch, random start, box [0, 1]) with Adam (peak 2e-3, cosine), batch 64,
    starting from the standard model's parameters (50 s at D = 1024 on a shared 2-core CPU,
    load 1.5-3). Then the clean test accuracy and the accuracy under a 20-step PGD at ``eps``
    (:func:`geomrobust.search.robust_accuracy`) on the test split.

    Returns ``(logits_fn, apply, params, info)``, ``info`` a dict with ``test_accuracy``,
    ``pgd_accuracy`` (its ``eps`` and 20 steps), the training settings and ``train_s``.
    """
    xtr, ytr, xte, yte = _digits(d)
    _, apply, params, _ = trained_cnn(d)
    opt = make_optimizer("adam", 2e-3, epochs=epochs, steps_per_epoch=len(ytr) // 64)
    t0 = time.perf_counter()
    res = fit(
        apply, params, opt, xtr, ytr, key=jax.random.key(2), epochs=epochs, batch_size=64,
        loss_fn=pgd_at_loss(eps, steps=steps, bounds=(0.0, 1.0)), progress=False,
    )  # fmt: skip
    jax.block_until_ready(res.state.params)
    train_s = time.perf_counter() - t0
    params = res.state.params

    def logits_fn(x):
        return apply(params, x)

    ra = robust_accuracy(logits_fn, xte, yte, [eps], key=jax.random.key(3), steps=20,
                         bounds=(0.0, 1.0))  # fmt: skip
    info = dict(
        model=f"PGD-AT Linf eps={eps}", train_epochs=epochs, train_pgd_steps=steps,
        train_s=round(train_s, 1), test_accuracy=round(ra.clean_accuracy, 4),
        pgd_accuracy=round(float(ra.accuracy[0]), 4), pgd_eval_steps=20,
    )  # fmt: skip
    return logits_fn, apply, params, info


def pool(d: int, n: int) -> np.ndarray:
    """``n`` images: the 1797 digits (test split first), then jittered copies.

    Copies beyond the 1797 originals get Gaussian noise (sigma 0.02, clipped to [0, 1]) so that
    no two rows are identical; all rows are valid inputs in [0, 1].
    """
    xtr, _, xte, _ = _digits(d)
    base = np.concatenate([xte, xtr]).astype(np.float32)
    reps = -(-n // len(base))
    out = np.concatenate([base] * reps)[:n]
    rng = np.random.default_rng(0)
    extra = np.arange(n) >= len(base)
    noise = rng.normal(0.0, 0.02, out.shape).astype(np.float32)
    out = np.where(extra.reshape(-1, 1, 1, 1), np.clip(out + noise, 0.0, 1.0), out)
    return out.astype(np.float32)


class Rows(list):
    """A list of result rows that prints each row as it arrives (long runs show progress)."""

    def append(self, row):
        print(f"  {row['name']} | {row['reference']}: ours {row['ours']:.4g}, "
              f"ref {row['ref']:.4g}", flush=True)  # fmt: skip
        super().append(row)
