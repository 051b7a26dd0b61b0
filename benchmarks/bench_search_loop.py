"""The search driver's two loop forms side by side with Foolbox 3.3.4 (docs/performance.md).

On the D = 1024 LeNet of :func:`~benchmarks._common.trained_cnn`, ``N`` digits, the box
[0, 1], warm (one call first for the compilation): ``gr.fmn`` (L2, Linf; 100 steps),
``gr.cw_l2`` (``steps`` x ``binary_steps``) and ``gr.deepfool`` in the host form
(``loop="host"``: a host loop of jitted steps, the CPU default) and the device form
(``loop="device"``: one ``lax.while_loop``), against Foolbox's ``L2FMNAttack``,
``LInfFMNAttack``, ``L2CarliniWagnerAttack`` and ``L2DeepFoolAttack`` on the jitted model
(JAX through EagerPy), the same steps. The three runs of a row are timed one after the other
(best of ``repeat``), with the load average before and after: on a shared machine read the
ratios, not the absolute times. Per example: the median relative difference of the norms
where both succeed, and whether the two loop forms agree bit for bit.

``python -m benchmarks.bench_search_loop [N]`` writes ``benchmarks/results/search_loop.json``.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import geomrobust as gr
from geomrobust.search import cw_l2, deepfool_dataset, fmn

from ._common import load, pool, timed, trained_cnn

BOUNDS = (0.0, 1.0)


def _norms(x, adv, p):
    d = (np.asarray(adv) - x).reshape(len(x), -1)
    return np.abs(d).max(1) if np.isinf(p) else np.linalg.norm(d, axis=1)


def run(n: int = 100, cw_steps: int = 50, cw_binary: int = 3, repeat: int = 1):
    import foolbox as fb

    logits_fn, apply, params, acc = trained_cnn(1024)
    clf = gr.Classifier(apply, params)
    x = pool(1024, n)
    labels = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
    model = fb.JAXModel(jax.jit(logits_fn), bounds=BOUNDS)
    xj, yj = jnp.asarray(x), jnp.asarray(labels)
    cases = [
        ("FMN L2", 2.0, lambda loop: fmn(clf, x, labels, norm=2, bounds=BOUNDS, loop=loop),
         fb.attacks.L2FMNAttack(steps=100)),
        ("FMN Linf", np.inf,
         lambda loop: fmn(clf, x, labels, norm=jnp.inf, bounds=BOUNDS, loop=loop),
         fb.attacks.LInfFMNAttack(steps=100)),
        ("C&W L2", 2.0, lambda loop: cw_l2(clf, x, labels, steps=cw_steps,
                                           binary_steps=cw_binary, bounds=BOUNDS, loop=loop),
         fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw_binary, steps=cw_steps)),
        ("DeepFool L2", 2.0, lambda loop: deepfool_dataset(clf, x, labels, steps=50,
                                                           bounds=BOUNDS, loop=loop),
         fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)),
    ]  # fmt: skip
    rows = []
    for name, p, ours, attack in cases:
        before = load()
        t_host, r_host = timed(lambda o=ours: o("host"), repeat)
        t_dev, r_dev = timed(lambda o=ours: o("device"), repeat)
        t_fb, (_, clipped, s_fb) = timed(lambda a=attack: a(model, xj, yj, epsilons=None),
                                         repeat)  # fmt: skip
        after = load()
        m_fb, s_fb = _norms(x, clipped, p), np.asarray(s_fb)
        m, ok = np.asarray(r_host.margin), np.asarray(r_host.converged)
        both = ok & s_fb & (m_fb > 0)
        rel = np.abs(m[both] - m_fb[both]) / m_fb[both]
        same = all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(r_host, r_dev, strict=True))  # fmt: skip
        m_dev = np.asarray(r_dev.margin)
        fin = np.isfinite(m) & np.isfinite(m_dev)
        host_dev_rel = float(np.max(np.abs(m[fin] - m_dev[fin]) / np.maximum(m_dev[fin], 1e-30)))
        rows.append(dict(
            name=f"{name} D=1024 N={n}", host_s=round(t_host, 3), device_s=round(t_dev, 3),
            foolbox_s=round(t_fb, 3), foolbox_over_host=round(t_fb / t_host, 2),
            device_over_host=round(t_dev / t_host, 2), host_device_bitwise_equal=same,
            host_device_max_rel_margin_diff=host_dev_rel,
            host_device_same_converged=bool(np.array_equal(ok, np.asarray(r_dev.converged))),
            ours_success=float(ok.mean()), foolbox_success=float(s_fb.mean()),
            median_rel_diff_vs_foolbox=float(np.median(rel)) if rel.size else None,
            ours_smaller=float(np.mean(m[both] < m_fb[both])) if rel.size else None,
            load_before=before, load_after=after,
        ))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return dict(test_accuracy=acc, cpus=os.cpu_count(), jax=jax.__version__,
                foolbox=fb.__version__, repeat=repeat, cw_steps=cw_steps,
                cw_binary_steps=cw_binary, rows=rows)  # fmt: skip


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    out = run(n)
    path = os.path.join(os.path.dirname(__file__), "results", f"search_loop_N{n}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)
