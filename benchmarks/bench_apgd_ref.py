"""APGD-CE side by side with the authors' algorithm as torchattacks 3.5.1 runs it
(docs/performance.md).

On the D = 1024 LeNet of :func:`~benchmarks._common.trained_cnn` and ``N`` digits (box
[0, 1], labels the model's predictions): ``gr.apgd`` (Linf, cross-entropy, ``steps``, one
run from a random start, the CPU default ``loop="host"``) against ``torchattacks.APGD``
(Croce & Hein's code of "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020, as torchattacks ships it: ``n_restarts=1``,
``eot_iter=1``, ``rho=0.75``) on a PyTorch copy of the same LeNet built from the JAX weights
(its logits checked against the JAX model's first). Both warm (one call first), timed in
``repeat`` interleaved rounds (the best of each side), with the load average before and after:
on a shared machine read the ratio. The floor: ``steps + 1`` jitted forward + VJP passes of
the batch (``pass_s``, timed in the same rounds).
PyTorch is timed with one thread and with its default count (on a loaded 2-core machine its
threads wait on each other: 0.2 s against 0.8 s for a forward and backward pass of 100
digits), and the faster time is the reference.

Per example: whether each side broke it (the agreement of the two robust-accuracy flags) and
the cross-entropy at the highest-loss iterate of each side (both evaluated with the JAX model)
where neither broke it. The two runs start from different random points (JAX's and PyTorch's
generators; the authors draw a point on the surface of the Linf ball, ``gr.apgd`` one inside
it), so the agreement is that of two runs of one algorithm, not of one trajectory.

Needs ``torch`` and ``torchattacks`` (not dependencies of geomrobust):
``python -m benchmarks.bench_apgd_ref [N] [--eps E] [--steps S] [--name NAME]`` writes
``benchmarks/results/apgd_ref_NAME.json`` (default ``N<N>``).
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

from ._common import load, mean_time, pool, trained_cnn

BOUNDS = (0.0, 1.0)


def torch_lenet(params):
    """The benchmark's LeNet (SAME 5x5 convolutions, 2x2 max pooling, softplus, NHWC flatten)
    as a ``torch.nn.Module`` on NCHW images, with the weights of the JAX ``params``."""
    import torch
    import torch.nn.functional as F

    leaves = {jax.tree_util.keystr(p): np.asarray(v)
              for p, v in jax.tree_util.tree_leaves_with_path(params)}  # fmt: skip

    def get(layer, kind):
        (key,) = [k for k in leaves if layer in k and kind in k]
        return torch.from_numpy(np.array(leaves[key], np.float32))

    class LeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.ParameterDict()
            for name in ("conv1", "conv2"):  # flax (kh, kw, in, out) -> torch (out, in, kh, kw)
                self.w[name + "_w"] = torch.nn.Parameter(get(name, "kernel").permute(3, 2, 0, 1))
                self.w[name + "_b"] = torch.nn.Parameter(get(name, "bias"))
            for name in ("fc1", "fc2", "out"):  # flax (in, out) -> torch (out, in)
                self.w[name + "_w"] = torch.nn.Parameter(get(name, "kernel").T.contiguous())
                self.w[name + "_b"] = torch.nn.Parameter(get(name, "bias"))

        def forward(self, x):
            w = self.w
            h = F.max_pool2d(F.softplus(F.conv2d(x, w["conv1_w"], w["conv1_b"], padding=2)), 2)
            h = F.max_pool2d(F.softplus(F.conv2d(h, w["conv2_w"], w["conv2_b"], padding=2)), 2)
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # the NHWC flatten of the JAX model
            h = F.softplus(F.linear(h, w["fc1_w"], w["fc1_b"]))
            h = F.softplus(F.linear(h, w["fc2_w"], w["fc2_b"]))
            return F.linear(h, w["out_w"], w["out_b"])

    return LeNet().eval()


def _ce(logits_fn, z, y):
    lg = logits_fn(jnp.asarray(z))
    return np.asarray(-jax.nn.log_softmax(lg, -1)[jnp.arange(len(y)), jnp.asarray(y)])


def run(n: int = 100, eps: float = 0.1, steps: int = 100, seed: int = 0, repeat: int = 2):
    import torch
    import torchattacks

    logits_fn, apply, params, acc = trained_cnn(1024)
    clf = gr.Classifier(apply, params)
    x = pool(1024, n)
    y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)).astype(np.int64)
    net = torch_lenet(params)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)
    with torch.no_grad():
        lt = net(xt).numpy()
    lj = np.asarray(logits_fn(jnp.asarray(x)))
    logit_diff = float(np.max(np.abs(lt - lj)) / np.max(np.abs(lj)))
    if logit_diff > 1e-4:
        raise RuntimeError(f"the torch LeNet differs from the JAX one: {logit_diff:.2e}")
    key = jax.random.key(seed)

    def ours():
        return gr.apgd(clf, x, y, key=key, eps=eps, norm=jnp.inf, loss="ce", steps=steps,
                       restarts=1, bounds=BOUNDS)  # fmt: skip

    atk = torchattacks.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                            loss="ce", eot_iter=1, rho=0.75)  # fmt: skip

    def ref():
        return atk(xt, yt)

    @jax.jit
    def one_pass(c, z, yy):  # a forward + VJP of the summed cross-entropy: one step's model work
        def total(z):
            lg = c(z)
            return -jnp.sum(jax.nn.log_softmax(lg, -1)[jnp.arange(lg.shape[0]), yy])

        return jax.value_and_grad(total)(z)

    def floor():
        return mean_time(lambda: one_pass(clf, xj, yj))

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    before = load()
    default_threads = torch.get_num_threads()
    r = jax.block_until_ready(ours())  # warm-up
    t_ours, t_ref, t_pass = np.inf, dict.fromkeys(sorted({1, default_threads}), np.inf), np.inf
    torch.set_num_threads(1)
    ref()
    for i in range(repeat):  # interleaved: the sides share the load's swings
        t0 = time.perf_counter()
        r = jax.block_until_ready(ours())
        t_ours = min(t_ours, time.perf_counter() - t0)
        for threads in t_ref if i == 0 else [1]:  # PyTorch at one thread (and at its default
            torch.set_num_threads(threads)  # count, in the first round: slower here)
            t0 = time.perf_counter()
            ref()
            t_ref[threads] = min(t_ref[threads], time.perf_counter() - t0)
        t_pass = min(t_pass, floor())
    torch.set_num_threads(min(t_ref, key=t_ref.get))
    after = load()
    # one run of the authors' loop on every example (what ``atk`` runs on the examples it
    # attacks: all, since the labels are the model's predictions), for its best iterates
    torch.manual_seed(seed)
    x_best, still, _, _ = atk.attack_single_run(xt, yt)
    broke_ref = ~still.numpy().astype(bool)
    broke_ours = np.asarray(r.success)
    best_ref = x_best.detach().numpy().transpose(0, 2, 3, 1)
    ce_ours = _ce(logits_fn, np.asarray(r.adversarial), y)
    ce_ref = _ce(logits_fn, best_ref, y)
    neither = ~broke_ours & ~broke_ref
    rel = np.abs(ce_ours[neither] - ce_ref[neither]) / np.maximum(ce_ref[neither], 1e-12)
    linf = np.abs(np.asarray(r.adversarial) - x).reshape(n, -1).max(1)
    row = dict(
        name=f"APGD-CE Linf eps={eps} steps={steps} D=1024 N={n}", ours_s=round(t_ours, 3),
        torchattacks_s=round(min(t_ref.values()), 3),
        torchattacks_s_by_threads={str(k): round(v, 3) for k, v in t_ref.items()},
        torchattacks_over_ours=round(min(t_ref.values()) / t_ours, 2),
        torch_vs_jax_logit_rel_diff=logit_diff,
        pass_s=round(t_pass, 4), ours_over_passes=round(t_ours / ((steps + 1) * t_pass), 2),
        ours_robust_accuracy=float(1 - broke_ours.mean()),
        torchattacks_robust_accuracy=float(1 - broke_ref.mean()),
        same_broken_flag=float(np.mean(broke_ours == broke_ref)),
        broken_by_ours_only=int(np.sum(broke_ours & ~broke_ref)),
        broken_by_torchattacks_only=int(np.sum(~broke_ours & broke_ref)),
        ours_max_linf_over_eps=float(linf.max() / eps),
        unbroken_by_both=int(neither.sum()),
        median_rel_diff_best_ce=float(np.median(rel)) if rel.size else None,
        p90_rel_diff_best_ce=float(np.quantile(rel, 0.9)) if rel.size else None,
        ours_higher_best_ce=float(np.mean(ce_ours[neither] > ce_ref[neither]))
        if rel.size else None,
        load_before=before, load_after=after,
    )  # fmt: skip
    print(json.dumps(row), flush=True)
    return dict(test_accuracy=acc, cpus=os.cpu_count(), jax=jax.__version__,
                torch=torch.__version__,
                torchattacks=torchattacks.__version__, n=n, eps=eps, steps=steps, seed=seed,
                repeat=repeat, rows=[row])  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=100)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="timed calls per side, interleaved")
    ap.add_argument("--name", default=None, help="results/apgd_ref_NAME.json (default N<n>)")
    a = ap.parse_args(argv)
    out = run(a.n, a.eps, a.steps, repeat=a.repeat)
    out["command"] = "python -m benchmarks.bench_apgd_ref " + " ".join(argv or sys.argv[1:])
    name = a.name or f"N{a.n}"
    path = os.path.join(os.path.dirname(__file__), "results", f"apgd_ref_{name}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
