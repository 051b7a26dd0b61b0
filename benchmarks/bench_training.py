"""Training-step throughput: standard training vs PGD adversarial training (PGD-AT).

One jitted ``make_train_step`` each, on the trained CNN's architecture at D = 1024, batch 128:
clean cross-entropy against ``pgd_at_loss`` (Linf, eps 0.1, 7 steps). The ideal ratio is
about ``steps + 1`` = 8 forward+backward passes per step. PGD-AT is timed twice: with the
attack under ``lax.fori_loop`` (the default) and unrolled (``unroll=True``; on the CPU, XLA
runs loop bodies slower than straight-line code).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.train import (
    cross_entropy_loss,
    init_train_state,
    make_optimizer,
    make_train_step,
    pgd_at_loss,
)

from ._common import pool, trained_cnn


def _throughput(step, state, x, y, reps):
    import time

    key = jax.random.key(0)
    state, _ = step(key, state, x, y)  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(reps):
        state, _ = step(jax.random.fold_in(key, i), state, x, y)
    jax.block_until_ready(state)
    return reps * x.shape[0] / (time.perf_counter() - t0)


def run(d=1024, batch=128, *, reps=10, pgd_steps=7):
    _, apply, params, _ = trained_cnn(d)
    x = jnp.asarray(pool(d, batch))
    y = jnp.asarray(np.arange(batch) % 10, jnp.int32)
    opt = make_optimizer("sgd", 1e-2, epochs=1, steps_per_epoch=100, schedule="constant")
    state = init_train_state(params, opt)
    std = _throughput(make_train_step(apply, opt, cross_entropy_loss), state, x, y, reps)
    rows = []
    for unroll in (1, True):
        pgd = make_train_step(
            apply, opt, pgd_at_loss(0.1, steps=pgd_steps, unroll=unroll, bounds=(0.0, 1.0))
        )
        adv = _throughput(pgd, state, x, y, max(2, reps // 4))
        kind = "unrolled" if unroll is True else "fori_loop"
        rows.append(
            dict(name=f"PGD-AT training step ({kind}) D={d} batch={batch}", ours=batch / adv,
                 reference="standard training step", ref=batch / std,
                 target=f"PGD-AT/standard ~ {pgd_steps + 1} (steps + 1)", ok=None,
                 standard_examples_per_s=round(std, 1), pgd_at_examples_per_s=round(adv, 1),
                 pgd_steps=pgd_steps, unroll=str(unroll))
        )  # fmt: skip
    return rows
