"""Minimal-norm searches (FMN L2 / Linf, C&W L2) on the trained LeNet, side by side with
Foolbox 3, DeepFool's overestimate ratio, and the gradient-masking checks.

On the same model (the D = 1024 LeNet of :func:`~benchmarks._common.trained_cnn`), the same
N images and the box [0, 1]:

* ``gr.fmn`` (L2, Linf; 100 steps, the authors' defaults) against Foolbox's
  ``L2FMNAttack`` / ``LInfFMNAttack`` (its defaults: 100 steps, the same schedule), and
  ``gr.cw_l2`` against ``L2CarliniWagnerAttack`` with the same budget (``steps`` Adam steps
  per constant, ``binary_steps`` constants, step 0.01, first constant 1e-3; Foolbox aborts
  early by default, ours does not). Foolbox runs on the jitted model, warm. Reported: both
  times, and per example (where both succeed) the median relative difference of the minimal
  norms, ``median |ours - fb| / fb``, and the fraction where ours is smaller.
* ``gr.minimal_margin`` (DeepFool, FMN, C&W) on the standard and the PGD-trained LeNet
  (:func:`~benchmarks._common.robust_cnn`): the distribution of ``||r_DeepFool|| /
  ||r_min||`` and which search found the minimum.
* ``gr.masking_checks`` on both models (Linf, eps 0.03, 0.05, 0.1; 20 attack steps, 200
  square queries; labels: the standard model's predictions): the flags (none are expected)
  and the worst-case accuracy. These two rows time one call, compilation included.

Foolbox 3.3.4's ``L2FMNAttack.project`` scales by ``min(1, norms / norms)`` (always 1), so its
L2 FMN never projects onto the ε-ball: it is normalized gradient descent on the logit margin
with the same step schedule, keeping the smallest adversarial point. Its L2 norms are then
larger than ours; the Linf version projects (clipping) and is the method of the paper.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.search import cw_l2, fmn, masking_checks, minimal_margin

from ._common import Rows, load, pool, robust_cnn, timed, trained_cnn

BOUNDS = (0.0, 1.0)


def _agree(ours, ok_ours, fb, ok_fb):
    both = ok_ours & ok_fb & (fb > 0)
    rel = np.abs(ours[both] - fb[both]) / fb[both]
    return dict(
        both_success=round(float(both.mean()), 4),
        median_rel_diff_vs_foolbox=round(float(np.median(rel)), 4) if rel.size else None,
        ours_smaller=round(float(np.mean(ours[both] < fb[both])), 4) if rel.size else None,
        median_ours=round(float(np.median(ours[both])), 4) if rel.size else None,
        median_foolbox=round(float(np.median(fb[both])), 4) if rel.size else None,
    )


def _foolbox(logits_fn, x, labels, attack, p):
    import foolbox as fb

    model = fb.JAXModel(jax.jit(logits_fn), bounds=BOUNDS)
    xj, yj = jnp.asarray(x), jnp.asarray(labels)

    def run():
        _, clipped, success = attack(model, xj, yj, epsilons=None)
        return clipped, success

    t, (clipped, success) = timed(run, repeat=1)
    d = (np.asarray(clipped) - x).reshape(len(x), -1)
    norm = np.abs(d).max(1) if np.isinf(p) else np.linalg.norm(d, axis=1)
    return t, norm, np.asarray(success)


def run(n: int = 200, d: int = 1024, cw_steps: int = 100, cw_binary: int = 5, robust=True,
        parts=("fmn", "cw", "minimal", "masking"), check_steps=20, check_queries=200):  # fmt: skip
    """Rows for the results table; ``parts``: which of the FMN, C&W, minimal-margin and
    masking-check rows to run."""
    import foolbox as fb

    rows = Rows()
    logits_fn, _, _, acc = trained_cnn(d)
    x = pool(d, n)
    labels = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
    base = dict(D=d, N=n, test_accuracy=round(acc, 4))
    cases = [
        ("FMN L2", lambda: fmn(logits_fn, x, labels, norm=2, bounds=BOUNDS), 2.0,
         fb.attacks.L2FMNAttack(steps=100), "Foolbox 3.3.4 L2FMNAttack (JAX)"),
        ("FMN Linf", lambda: fmn(logits_fn, x, labels, norm=jnp.inf, bounds=BOUNDS), np.inf,
         fb.attacks.LInfFMNAttack(steps=100), "Foolbox 3.3.4 LInfFMNAttack (JAX)"),
        ("C&W L2", lambda: cw_l2(logits_fn, x, labels, steps=cw_steps, binary_steps=cw_binary,
                                 bounds=BOUNDS), 2.0,
         fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw_binary, steps=cw_steps),
         "Foolbox 3.3.4 L2CarliniWagnerAttack (JAX)"),
        ("C&W L2 abort_early", lambda: cw_l2(logits_fn, x, labels, steps=cw_steps,
                                             binary_steps=cw_binary, abort_early=True,
                                             bounds=BOUNDS), 2.0,
         fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw_binary, steps=cw_steps),
         "Foolbox 3.3.4 L2CarliniWagnerAttack (JAX)"),
    ]  # fmt: skip
    want = {"FMN": "fmn" in parts, "C&W": "cw" in parts}
    fb_runs = {}  # Foolbox once per attack (both C&W rows compare with the same run)
    for name, ours_fn, p, attack, ref in cases:
        if not want[name.split()[0]]:
            continue
        before = load()
        t_ours, res = timed(lambda f=ours_fn: f().margin, repeat=1)
        res = ours_fn()
        if ref not in fb_runs:
            fb_runs[ref] = _foolbox(logits_fn, x, labels, attack, p)
        t_fb, m_fb, s_fb = fb_runs[ref]
        info = dict(base, **_agree(np.asarray(res.margin), np.asarray(res.converged), m_fb, s_fb),
                    ours_success=round(float(np.mean(res.converged)), 4),
                    foolbox_success=round(float(s_fb.mean()), 4), load_before=before,
                    load_after=load())  # fmt: skip
        if name.startswith("C&W"):
            info.update(steps=cw_steps, binary_steps=cw_binary, foolbox_abort_early=True,
                        ours_abort_early=name.endswith("abort_early"),
                        ours_mean_steps=round(float(np.mean(res.iterations)), 1))  # fmt: skip
        rows.append(dict(name=f"{name} D={d} N={n}", ours=t_ours, reference=ref, ref=t_fb,
                         target="ref/ours >= 1", ok=t_fb / t_ours >= 1.0, **info))  # fmt: skip
    models = [("standard", logits_fn, dict(test_accuracy=round(acc, 4)))]
    if not ({"minimal", "masking"} & set(parts)):
        return rows
    if robust:
        r_fn, _, _, r_info = robust_cnn(d)
        models.append(("PGD-AT", r_fn, r_info))
    for mname, fn, minfo in models:
        minfo = {("model_" + k if k == "model" else k): v for k, v in minfo.items()}
        if "minimal" in parts:
            before = load()
            cw_kw = dict(steps=cw_steps, binary_steps=cw_binary)
            t0 = time.perf_counter()  # one call, compilation included
            mm = minimal_margin(fn, x, bounds=BOUNDS, cw_kw=cw_kw)
            jax.block_until_ready(mm.margin)
            t_min = time.perf_counter() - t0
            ratio = np.asarray(mm.deepfool_ratio)
            pos = np.asarray(mm.converged) & (np.asarray(mm.margin) > 0) & np.isfinite(ratio)
            r = ratio[pos]
            found = np.asarray(mm.found_by)
            info = dict(
                base, model=mname, **minfo, searches=list(mm.searches),
                ratio_median=round(float(np.median(r)), 4),
                ratio_p90=round(float(np.quantile(r, 0.9)), 4), ratio_max=round(float(r.max()), 4),
                ratio_above_1_05=round(float(np.mean(r > 1.05)), 4),
                found_by={s: round(float(np.mean(found == i)), 4)
                          for i, s in enumerate(mm.searches)},
                median_min_margin=round(float(np.median(np.asarray(mm.margin)[pos])), 4),
                load_before=before, load_after=load(),
            )  # fmt: skip
            rows.append(dict(name=f"minimal_margin L2 {mname} D={d} N={n}", ours=t_min,
                             reference="(DeepFool ratio; no reference)", ref=t_min, target="",
                             ok=None, **info))  # fmt: skip
        if "masking" in parts:
            before = load()
            t0 = time.perf_counter()  # one call, compilation included
            chk = masking_checks(
                fn,
                x,
                labels,
                [0.03, 0.05, 0.1],
                key=jax.random.key(0),
                bounds=BOUNDS,
                steps=check_steps,
                square_steps=check_queries,
            )
            t_chk = time.perf_counter() - t0  # fmt: skip
            info = dict(
                base, model=mname, flags=list(chk.flags), epsilons=[0.03, 0.05, 0.1],
                steps=check_steps, queries=check_queries,
                labels="the standard model's predictions",
                accuracy={k: [round(float(v), 4) for v in a] for k, a in chk.accuracy.items()},
                worst_case=[round(float(v), 4) for v in chk.worst_case],
                large_eps=chk.large_eps, large_eps_accuracy=chk.large_eps_accuracy,
                load_before=before, load_after=load(),
            )  # fmt: skip
            rows.append(dict(name=f"masking_checks Linf {mname} D={d} N={n}", ours=t_chk,
                             reference="(flags expected: none)", ref=t_chk, target="no flags",
                             ok=len(chk.flags) == 0, **info))  # fmt: skip
    return rows
