"""bfloat16 forward passes: what mixed precision does to DeepFool margins, and its cost.

On accelerators with bf16 matrix units a bf16 forward pass can be markedly faster than a
float32 one; the question for margin measurements is what it does to the numbers. On the
trained CNN (D = 1024) and ``N`` digits from ``pool``, DeepFool L2 (all classes, box [0, 1],
``deepfool_dataset``, 64 slots) runs twice on the same images:

* float32: the model as trained (the reference);
* mixed precision: the parameters cast to bfloat16 once, the input cast to bfloat16 inside
  the logits function and the logits cast back to float32. DeepFool's iterates, its
  accumulated step and the margins stay float32; the gradients flow back through the casts,
  so they are computed in bfloat16 (8 bits of mantissa) and returned as float32.

The DeepFool row reports ``ours`` = bf16 time and ``ref`` = f32 time (same backend, named in
the row; no target: on a CPU, bf16 is emulated and the ratio says nothing about a GPU), and
in its info keys: the fraction of examples whose clean predicted label differs between the
two, the converged fraction of each, the median and 90th percentile of the relative margin
difference ``|m_bf16 - m_f32| / m_f32`` over the examples converged in both, the fraction of
those whose adversarial label differs, and, the practical check, the fraction of the bf16
adversarial points ``x + r_bf16`` (overshoot included) that the *float32* model
misclassifies: a bf16 margin only bounds the float32 model's margin where that flip is real
(also with the bf16 perturbation scaled by 1.05 and 1.1, i.e. a larger overshoot).
A second row times one batched forward pass of the ``N`` images (bf16 vs f32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.search import deepfool_dataset

from ._common import Rows, pool, timed, trained_cnn

BOUNDS = (0.0, 1.0)


def bf16_params(params):
    """The floating leaves of ``params`` cast to bfloat16 (once, outside the logits)."""
    return jax.tree.map(
        lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a, params
    )


def bf16_logits(apply, p16):
    """``x -> float32(apply(p16, bf16(x)))``: bf16 compute, float32 in and out."""

    def logits_fn(x):
        return apply(p16, x.astype(jnp.bfloat16)).astype(jnp.float32)

    return logits_fn


def _frac(mask) -> float | None:
    return round(float(np.mean(mask)), 4) if np.size(mask) else None


def run(d=1024, n=500, *, slots=64):
    """Rows for the results table (see ``benchmarks.run``)."""
    rows = Rows()
    f32, apply, params, acc = trained_cnn(d)
    p16 = bf16_params(params)
    f16 = bf16_logits(apply, p16)
    x = pool(d, n)
    # the dtype the model computes its logits in, before the cast back (bfloat16 expected)
    compute = jax.eval_shape(apply, p16, jax.ShapeDtypeStruct(x.shape, jnp.bfloat16)).dtype
    xj = jnp.asarray(x)
    backend = jax.default_backend()

    # one batched forward pass of the N images
    fwd32, fwd16 = jax.jit(f32), jax.jit(f16)
    t_f32, lg32 = timed(lambda: fwd32(xj))
    t_f16, lg16 = timed(lambda: fwd16(xj))
    pred32, pred16 = np.asarray(jnp.argmax(lg32, -1)), np.asarray(jnp.argmax(lg16, -1))
    max_logit_diff = float(np.max(np.abs(np.asarray(lg16) - np.asarray(lg32))))
    rows.append(
        dict(name=f"forward pass D={d} N={n} ({backend})", ours=t_f16,
             reference="float32 forward pass", ref=t_f32, target="", ok=None, D=d, N=n,
             backend=backend, label_differs=_frac(pred16 != pred32),
             max_abs_logit_diff=round(max_logit_diff, 4),
             compute_dtype=str(compute))
    )  # fmt: skip

    def margins(fn):
        t, _ = timed(lambda: deepfool_dataset(fn, x, bounds=BOUNDS, slots=slots).margin, repeat=2)
        return t, deepfool_dataset(fn, x, bounds=BOUNDS, slots=slots)

    t32, r32 = margins(f32)
    t16, r16 = margins(f16)
    c32, c16 = np.asarray(r32.converged), np.asarray(r16.converged)
    m32, m16 = np.asarray(r32.margin), np.asarray(r16.margin)
    both = c32 & c16 & (m32 > 0)
    rel = np.abs(m16[both] - m32[both]) / m32[both]
    adv_differs = np.asarray(r16.adv_label)[both] != np.asarray(r32.adv_label)[both]

    # does the bf16 perturbation flip the float32 model?
    def flips32(scale):
        adv = jnp.clip(xj + scale * jnp.asarray(r16.perturbation), *BOUNDS)
        return _frac((np.asarray(jnp.argmax(fwd32(adv), -1)) != pred32)[c16])

    it32, it16 = np.asarray(r32.iterations), np.asarray(r16.iterations)
    rows.append(
        dict(name=f"DeepFool L2 bf16 margins D={d} N={n} ({backend})", ours=t16,
             reference="float32 DeepFool", ref=t32, target="", ok=None, D=d, N=n,
             backend=backend, compute_dtype=str(compute), slots=slots,
             test_accuracy=round(acc, 4),
             label_differs=_frac(pred16 != pred32),
             converged_f32=_frac(c32), converged_bf16=_frac(c16),
             converged_both=int(both.sum()),
             median_rel_margin_diff=round(float(np.median(rel)), 5) if rel.size else None,
             p90_rel_margin_diff=round(float(np.percentile(rel, 90)), 5) if rel.size else None,
             max_rel_margin_diff=round(float(np.max(rel)), 5) if rel.size else None,
             adv_label_differs=_frac(adv_differs),
             bf16_adv_flips_f32=flips32(1.0),
             bf16_adv_x1_05_flips_f32=flips32(1.05),
             bf16_adv_x1_1_flips_f32=flips32(1.1),
             mean_iterations_f32=round(float(it32.mean()), 3),
             mean_iterations_bf16=round(float(it16.mean()), 3),
             median_margin_f32=round(float(np.median(m32[c32])), 4) if c32.any() else None,
             time_ratio=round(t16 / t32, 3))
    )  # fmt: skip
    return rows
