"""DeepFool L2 (all 10 classes, box [0, 1]) on the trained CNN, side by side with references.

For each input dimension D and each N, in the same run, on the same model and images:

* ``geomrobust``: :func:`geomrobust.search.deepfool_dataset` (continuous batching);
* floor: (mean iterations + 1) × one batched forward + VJP over the 9 other classes for the N
  examples (the clean evaluation counts as one), timed on the same model;
* Foolbox 3 ``L2DeepFoolAttack`` (JAX backend via EagerPy, same steps / candidates /
  overshoot / bounds), batch = N, on the jitted model, warm;
* a per-example loop: ``deepfool`` jitted for one example, called on a subset and
  extrapolated to N.

Then the same floor and Foolbox rows on a PGD-trained model
(:func:`~benchmarks._common.robust_cnn`: the LeNet fine-tuned by PGD-AT, Linf eps 0.1), at
the first D and the first N only. Adversarial training moves the boundary (larger margins)
and changes its curvature, hence the number of DeepFool iterations each example takes and
their spread, on which the batched driver's cost depends: these rows check that its standing
against the floor and Foolbox holds on such a model. The info keys carry the model's clean
and PGD accuracy, the iteration counts and the median margin (compare them with the
standard model's rows). Measured: the PGD-AT model's margins are about 40% larger, but its
mean iteration count is no higher (about 2): more examples converge in one step, as on a
locally flatter boundary.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.search import deepfool, deepfool_dataset
from geomrobust.search._deepfool import _evaluate as evaluate

from ._common import Rows, pool, robust_cnn, timed, trained_cnn

BOUNDS = (0.0, 1.0)


def _floor_eval(logits_fn, k):
    def select(lg):
        y = jnp.argmax(lg, -1).astype(jnp.int32)
        others = jnp.arange(k)[None, :] + jnp.zeros_like(y)[:, None]
        others = jnp.sort(jnp.where(others == y[:, None], k, others), -1)[:, : k - 1]
        return y, others

    return jax.jit(lambda x: evaluate(logits_fn, x, select)[3])


def _floor_time(floor_eval, x, batch=500):
    """One batched forward + VJP over N examples, in batches of ``batch`` (a single batch of
    5,000 images × 9 cotangents would not fit in memory): time of one batch × N / batch."""
    xb = jnp.asarray(x[: min(batch, len(x))])
    t, _ = timed(lambda: floor_eval(xb))
    return t * len(x) / xb.shape[0]


def _foolbox(logits_fn, x, labels, repeat):
    import foolbox as fb

    # the reference's best ordinary use: the model jitted, as a Foolbox user writes it (an
    # unjitted NNX apply costs an eager merge per call and inflated our lead ~1.8x)
    model = fb.JAXModel(jax.jit(logits_fn), bounds=BOUNDS)
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    xj, yj = jnp.asarray(x), jnp.asarray(labels)

    def run():
        _, clipped, success = attack(model, xj, yj, epsilons=None)
        return clipped, success

    t, (clipped, success) = timed(run, repeat=repeat)
    margin = np.linalg.norm((np.asarray(clipped) - x).reshape(len(x), -1), axis=1)
    return t, margin, np.asarray(success)


def run(
    dims=(1024, 3072), ns=(500, 5000), *, slots=64, per_example=20, foolbox_max_n=500,
    robust=True,
):  # fmt: skip
    """Rows for the results table (see ``benchmarks.run``); ``robust``: add the PGD-trained
    model's rows (D = ``dims[0]``, N = ``ns[0]``)."""
    rows = Rows()
    for d in dims:
        rows += _one(d, ns, slots, per_example, foolbox_max_n)
    if robust:
        rows += _robust(dims[0], ns[0], slots, foolbox=ns[0] <= foolbox_max_n)
    return rows


def _measure(logits_fn, floor_eval, x, slots):
    """Our time and result on ``x``, the floor time, and the info shared by the rows."""
    t_ours, _ = timed(
        lambda: deepfool_dataset(logits_fn, x, bounds=BOUNDS, slots=slots).margin, repeat=2
    )
    res = deepfool_dataset(logits_fn, x, bounds=BOUNDS, slots=slots)
    it = np.asarray(res.iterations)
    conv = np.asarray(res.converged)
    t_floor = (it.mean() + 1.0) * _floor_time(floor_eval, x)
    margins = np.asarray(res.margin)[conv]
    info = dict(
        mean_iterations=round(float(it.mean()), 3), max_iterations=int(it.max()),
        converged=round(float(np.mean(conv)), 4), slots=slots,
        median_margin=round(float(np.median(margins)), 4) if margins.size else None,
    )  # fmt: skip
    return t_ours, res, t_floor, info


def _foolbox_row(name, logits_fn, x, res, t_ours, info):
    """Foolbox's L2 DeepFool on the same model and images, against ``t_ours``."""
    labels = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
    t_fb, m_fb, s_fb = _foolbox(logits_fn, x, labels, repeat=1)
    ok = np.asarray(res.converged) & s_fb & (np.asarray(res.margin) > 0)
    agree = np.median(np.abs(np.asarray(res.margin)[ok] - m_fb[ok]) / m_fb[ok])
    return dict(name=name, ours=t_ours, reference="Foolbox 3.3.4 L2DeepFoolAttack (JAX)",
                ref=t_fb, target="ref/ours >= 1.5", ok=t_fb / t_ours >= 1.5,
                foolbox_success=round(float(s_fb.mean()), 4),
                median_rel_margin_diff_vs_foolbox=float(agree), **info)  # fmt: skip


def _robust(d, n, slots, foolbox):
    """Floor (and Foolbox) rows for the PGD-trained model at dimension ``d``, N = ``n``."""
    rows = Rows()
    logits_fn, _, _, model = robust_cnn(d)
    x = pool(d, n)
    t_ours, res, t_floor, info = _measure(logits_fn, _floor_eval(logits_fn, 10), x, slots)
    info = dict(D=d, N=n, **model, **info)
    name = f"DeepFool L2 PGD-AT model D={d} N={n}"
    rows.append(
        dict(name=name, ours=t_ours, reference="floor", ref=t_floor,
             target="ours/ref <= 1.3", ok=t_ours / t_floor <= 1.3, **info)
    )  # fmt: skip
    if foolbox:
        rows.append(_foolbox_row(name, logits_fn, x, res, t_ours, info))
    return rows


def _one(d, ns, slots, per_example, foolbox_max_n):
    rows = Rows()
    logits_fn, _, _, acc = trained_cnn(d)
    k = 10
    floor_eval = _floor_eval(logits_fn, k)
    one = jax.jit(lambda xi, f=logits_fn: deepfool(f, xi, bounds=BOUNDS))
    times = {}
    for n in ns:
        x = pool(d, n)
        t_ours, res, t_floor, info = _measure(logits_fn, floor_eval, x, slots)
        times[n] = t_ours
        info = dict(D=d, N=n, test_accuracy=round(acc, 4), **info)
        rows.append(
            dict(name=f"DeepFool L2 D={d} N={n}", ours=t_ours, reference="floor",
                 ref=t_floor, target="ours/ref <= 1.3", ok=t_ours / t_floor <= 1.3, **info)
        )  # fmt: skip
        # per-example loop on a subset, extrapolated
        sub = x[:per_example]
        jax.block_until_ready(one(sub[:1]))
        t0 = time.perf_counter()
        for i in range(len(sub)):
            jax.block_until_ready(one(sub[i : i + 1]).margin)
        t_loop = (time.perf_counter() - t0) * n / len(sub)
        rows.append(
            dict(name=f"DeepFool L2 D={d} N={n}", ours=t_ours,
                 reference=f"per-example loop (jit, extrapolated from {len(sub)})",
                 ref=t_loop, target="", ok=None, **info)
        )  # fmt: skip
        if n <= foolbox_max_n:
            rows.append(_foolbox_row(f"DeepFool L2 D={d} N={n}", logits_fn, x, res, t_ours, info))
    if len(ns) >= 2:
        n0, n1 = min(ns), max(ns)
        ratio = times[n1] / times[n0]
        rows.append(
            dict(name=f"DeepFool L2 D={d} scaling N={n0}->{n1}", ours=times[n1],
                 reference=f"N={n0} x {n1 // n0}", ref=times[n0] * n1 / n0,
                 target="time ratio within 10% of N ratio",
                 ok=abs(ratio / (n1 / n0) - 1) <= 0.1, time_ratio=round(ratio, 3))
        )  # fmt: skip
    return rows
