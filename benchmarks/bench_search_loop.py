"""The search driver side by side with Foolbox 3.3.4 (docs/performance.md).

On the D = 1024 LeNet of :func:`~benchmarks._common.trained_cnn`, ``N`` digits, the box
[0, 1], warm (one call first for the compilation; Foolbox warmed with 2 steps, its eager
operations depending on shapes only): ``gr.fmn`` (L2, Linf; ``--fmn-steps``), ``gr.cw_l2``
(``--cw-binary-steps`` x ``--cw-steps``, initial constant ``--cw-const``, step size 0.01,
without and with early abort, the same on both sides) and ``gr.deepfool_dataset``
(``--deepfool-steps``, all classes, overshoot 0.02) in the host form (``loop="host"``: a host
loop of jitted steps, the CPU default) and, with ``--forms host device``, the device form
(``loop="device"``: one ``lax.while_loop``), against Foolbox's ``L2FMNAttack``,
``LInfFMNAttack``, ``L2CarliniWagnerAttack`` and ``L2DeepFoolAttack`` on the jitted model
(JAX through EagerPy), the same steps. The timed calls of a row are interleaved (``--repeat``
rounds of one call per side, the best of each), with the load average before and after: on a
shared machine read the ratios, not the absolute times. Per row: the steps each side took per
example (ours: ``iterations``; Foolbox: the examples its model evaluated, counted, over
``N``), the success rates (Foolbox's C&W returns the zero image where it found nothing: not a
success here), the median and 90th percentile relative difference of the norms where both
succeed, and with the device form whether the two loop forms agree. The floor of a step is one
jitted forward + VJP of the margin on the whole batch (``pass_s``, timed in the same rounds):
``host_over_passes`` and ``foolbox_over_passes`` divide each side's time by as many passes as
it took steps (FMN, C&W).

``python -m benchmarks.bench_search_loop [N] [--only ...] [--name NAME]`` writes
``benchmarks/results/search_loop_NAME.json`` (default ``N<N>``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import geomrobust as gr
from geomrobust.search import cw_l2, deepfool_dataset, fmn
from geomrobust.search._fmn import margin_and_grad

from ._common import load, mean_time, pool, trained_cnn

BOUNDS = (0.0, 1.0)


def _norms(x, adv, p):
    d = (np.asarray(adv) - x).reshape(len(x), -1)
    return np.abs(d).max(1) if np.isinf(p) else np.linalg.norm(d, axis=1)


CASES = ("fmn_l2", "fmn_linf", "cw", "cw_abort", "deepfool")


def run(n: int = 100, only=CASES, forms=("host", "device"), fmn_steps: int = 100,
        cw_steps: int = 50, cw_binary: int = 3, cw_const: float = 1.0, df_steps: int = 50,
        repeat: int = 1):  # fmt: skip
    """The rows ``only`` (names of :data:`CASES`) on ``n`` digits; ``forms``: our loop forms
    to time (``"host"`` first; ``"device"`` adds the ``while_loop`` column)."""
    import foolbox as fb

    logits_fn, apply, params, acc = trained_cnn(1024)
    clf = gr.Classifier(apply, params)
    x = pool(1024, n)
    labels = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
    jitted, calls = jax.jit(logits_fn), [0]

    def counted(z):  # Foolbox's model: count the examples it evaluates
        calls[0] += z.shape[0]
        return jitted(z)

    model = fb.JAXModel(counted, bounds=BOUNDS)
    xj, yj = jnp.asarray(x), jnp.asarray(labels)
    cw = dict(
        steps=cw_steps, binary_steps=cw_binary, initial_const=cw_const, stepsize=0.01, bounds=BOUNDS
    )
    fb_cw = dict(
        binary_search_steps=cw_binary, steps=cw_steps, initial_const=cw_const, stepsize=0.01
    )
    fb_warm = dict(fb_cw, binary_search_steps=1, steps=2)
    cases = {
        "fmn_l2": ("FMN L2", 2.0,
                   lambda loop: fmn(clf, x, labels, norm=2, steps=fmn_steps, bounds=BOUNDS,
                                    loop=loop),
                   fb.attacks.L2FMNAttack(steps=fmn_steps), fb.attacks.L2FMNAttack(steps=2)),
        "fmn_linf": ("FMN Linf", np.inf,
                     lambda loop: fmn(clf, x, labels, norm=jnp.inf, steps=fmn_steps,
                                      bounds=BOUNDS, loop=loop),
                     fb.attacks.LInfFMNAttack(steps=fmn_steps),
                     fb.attacks.LInfFMNAttack(steps=2)),
        "cw": ("C&W L2, no early abort", 2.0,
               lambda loop: cw_l2(clf, x, labels, abort_early=False, loop=loop, **cw),
               fb.attacks.L2CarliniWagnerAttack(abort_early=False, **fb_cw),
               fb.attacks.L2CarliniWagnerAttack(abort_early=False, **fb_warm)),
        "cw_abort": ("C&W L2, early abort on both sides", 2.0,
                     lambda loop: cw_l2(clf, x, labels, abort_early=True, loop=loop, **cw),
                     fb.attacks.L2CarliniWagnerAttack(abort_early=True, **fb_cw),
                     fb.attacks.L2CarliniWagnerAttack(abort_early=True, **fb_warm)),
        "deepfool": ("DeepFool L2", 2.0,
                     lambda loop: deepfool_dataset(clf, x, labels, steps=df_steps,
                                                   bounds=BOUNDS, loop=loop),
                     fb.attacks.L2DeepFoolAttack(steps=df_steps, candidates=10,
                                                 overshoot=0.02),
                     fb.attacks.L2DeepFoolAttack(steps=2, candidates=10, overshoot=0.02)),
    }  # fmt: skip

    @jax.jit
    def one_pass(c, z, yy):  # a forward + VJP of the margin on the batch: one step's model work
        return margin_and_grad(c, z, yy)[1:]

    def floor():
        return mean_time(lambda: one_pass(clf, xj, yj))

    rows = []
    for key in only:
        name, p, ours, attack, warm = cases[key]
        before = load()
        runs = {form: (lambda o=ours, f=form: o(f)) for form in forms}
        runs["foolbox"] = lambda a=attack: a(model, xj, yj, epsilons=None)
        # warm-up (compilation): ours with the same settings (its programs are keyed on the
        # step budget), Foolbox with 2 steps (its eager operations depend on shapes only)
        res = {k: jax.block_until_ready(fn()) for k, fn in runs.items() if k != "foolbox"}
        jax.block_until_ready(warm(model, xj, yj, epsilons=None))
        times = dict.fromkeys(runs, np.inf)
        calls[0], t_pass = 0, np.inf
        for _ in range(repeat):  # interleaved: the sides share the load's swings
            for k, fn in runs.items():
                t0 = time.perf_counter()
                res[k] = jax.block_until_ready(fn())
                times[k] = min(times[k], time.perf_counter() - t0)
            t_pass = min(t_pass, floor())
        fb_evals = calls[0] / (n * repeat)
        after = load()
        t_fb, (_, clipped, s_fb) = times["foolbox"], res["foolbox"]
        r_host = res["host"]
        m_fb, s_fb = _norms(x, clipped, p), np.asarray(s_fb)
        fallback = 0
        if key.startswith("cw"):  # Foolbox's C&W returns the zero image where it found nothing
            blank = np.all(np.asarray(clipped).reshape(n, -1) == 0, axis=1)
            fallback, s_fb = int(blank.sum()), s_fb & ~blank
        m, ok = np.asarray(r_host.margin), np.asarray(r_host.converged)
        both = ok & s_fb & (m_fb > 0)
        rel = np.abs(m[both] - m_fb[both]) / m_fb[both]
        row = dict(
            name=f"{name} D=1024 N={n}", case=key, host_s=round(times["host"], 3),
            foolbox_s=round(t_fb, 3), foolbox_over_host=round(t_fb / times["host"], 2),
            ours_steps_per_example=float(np.mean(np.asarray(r_host.iterations))),
            foolbox_evals_per_example=round(fb_evals, 2),
            ours_success=float(ok.mean()), foolbox_success=float(s_fb.mean()),
            foolbox_zero_image_fallbacks=fallback,
            same_success_as_foolbox=float(np.mean(ok == s_fb)),
            median_rel_diff_vs_foolbox=float(np.median(rel)) if rel.size else None,
            p90_rel_diff_vs_foolbox=float(np.quantile(rel, 0.9)) if rel.size else None,
            ours_smaller=float(np.mean(m[both] < m_fb[both])) if rel.size else None,
            load_before=before, load_after=after,
        )  # fmt: skip
        if not key.startswith("deepfool"):  # one model pass per step (DeepFool: K VJPs)
            steps = row["ours_steps_per_example"]
            row.update(pass_s=round(t_pass, 4),
                       host_over_passes=round(times["host"] / (steps * t_pass), 2),
                       foolbox_over_passes=round(t_fb / (fb_evals * t_pass), 2))  # fmt: skip
        if "device" in res:
            r_dev = res["device"]
            m_dev = np.asarray(r_dev.margin)
            fin = np.isfinite(m) & np.isfinite(m_dev)
            row.update(
                device_s=round(times["device"], 3),
                device_over_host=round(times["device"] / times["host"], 2),
                host_device_bitwise_equal=all(
                    np.array_equal(np.asarray(a), np.asarray(b))
                    for a, b in zip(r_host, r_dev, strict=True)),
                host_device_max_rel_margin_diff=float(
                    np.max(np.abs(m[fin] - m_dev[fin]) / np.maximum(m_dev[fin], 1e-30))),
                host_device_same_converged=bool(
                    np.array_equal(ok, np.asarray(r_dev.converged))),
            )  # fmt: skip
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    return dict(test_accuracy=acc, cpus=os.cpu_count(), jax=jax.__version__,
                foolbox=fb.__version__, repeat=repeat, n=n, forms=list(forms),
                fmn_steps=fmn_steps, cw_steps=cw_steps, cw_binary_steps=cw_binary,
                cw_initial_const=cw_const, cw_stepsize=0.01,
                deepfool_steps=df_steps, rows=rows)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=100)
    ap.add_argument("--only", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--forms", nargs="+", choices=("host", "device"), default=["host", "device"])
    ap.add_argument("--fmn-steps", type=int, default=100)
    ap.add_argument("--cw-steps", type=int, default=50)
    ap.add_argument("--cw-binary-steps", type=int, default=3)
    ap.add_argument("--cw-const", type=float, default=1.0)
    ap.add_argument("--deepfool-steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=1, help="timed calls per side, interleaved")
    ap.add_argument("--name", default=None, help="results/search_loop_NAME.json (default N<n>)")
    a = ap.parse_args(argv)
    if a.forms[0] != "host":
        a.forms = ["host"] + [f for f in a.forms if f != "host"]
    out = run(a.n, a.only, tuple(dict.fromkeys(a.forms)), a.fmn_steps, a.cw_steps,
              a.cw_binary_steps, a.cw_const, a.deepfool_steps, a.repeat)  # fmt: skip
    out["command"] = "python -m benchmarks.bench_search_loop " + " ".join(argv or sys.argv[1:])
    path = os.path.join(os.path.dirname(__file__), "results",
                        f"search_loop_{a.name or f'N{a.n}'}.json")  # fmt: skip
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
