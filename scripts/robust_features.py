"""Robust and non-robust features (Ilyas, Santurkar, Tsipras, Engstrom, Tran, Madry,
"Adversarial Examples Are Not Bugs, They Are Features", NeurIPS 2019) and linear-probe
transfer of standard vs robust features (Salman, Ilyas, Engstrom, Kapoor, Madry, "Do
Adversarially Robust ImageNet Models Transfer Better?", NeurIPS 2020), on 16×16 digits.

1. Train a standard LeNet and a PGD-AT LeNet (L∞ ε = 0.1) on the digits (D).
2. Robustified dataset D_R (section 3.1 of Ilyas et al.): for every training image x, start
   from another random training image and minimise ``||g(x_r) - g(x)||²`` over ``x_r ∈ [0,1]``
   (Adam), ``g`` the robust model's penultimate layer; label ``y``. Also the same construction
   with the standard model's features (D_NR-features, their control).
3. Non-robust relabelled dataset D_det (section 3.2): targeted L2 PGD (ε = 1.0) of the standard
   model from x towards ``t = (y + 1) mod 10``; keep the successes, labelled ``t``. To a human,
   every image still shows its digit ``y``: only non-robust features say ``t``.
4. Train standard models on D_R, on the standard-feature control and on D_det; report clean
   and PGD (L∞) accuracy on the ORIGINAL test set.
5. Linear probes: logistic regression on the frozen penultimate features of the standard and
   the robust model, trained on a second task (digits flipped left-right, and rotated by 90°),
   test accuracy.

The paper's claims, checked on digits: a standard model trained on D_R is more robust than one
trained on D (robust features suffice for robustness); a model trained on D_det reaches
accuracy well above chance (10 %) on the original test set (non-robust features generalise);
and robust features transfer at least as well as standard ones under a linear probe.

Writes OUT/summary.json (settings and every accuracy), OUT/results.npz (a few images of each
dataset) and OUT/robust_features.png.

    python scripts/robust_features.py --out robust_features
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, positive_float, positive_int, run_script, seed


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs of every training run")
    p.add_argument("--resize", type=positive_int, default=16, help="digits resized to S×S")
    p.add_argument(
        "--eps", type=positive_float, default=0.1, help="L∞ radius of PGD-AT and evaluation"
    )
    p.add_argument("--robustify-steps", type=positive_int, default=300, help="Adam steps of D_R")
    p.add_argument(
        "--attack-eps", type=positive_float, default=1.0, help="L2 radius of D_det's attack"
    )
    p.add_argument(
        "--attack-steps", type=positive_int, default=100, help="PGD steps of D_det's attack"
    )
    p.add_argument("--n-eval", type=positive_int, default=355, help="test examples evaluated")
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="robust_features", help="output directory")
    return p.parse_args(argv)


def _train(apply, params0, x, y, loss, *, epochs, key):
    from geomrobust.train import fit, make_optimizer

    steps = max(x.shape[0] // 64, 1)
    opt = make_optimizer("adam", 3e-3, epochs=epochs, steps_per_epoch=steps)
    res = fit(apply, params0, opt, x, y, key=key, epochs=epochs, batch_size=64, loss_fn=loss,
              progress=False)  # fmt: skip
    return res.state.params


def _evaluate(clf, x, y, eps, key):
    from geomrobust.search import robust_accuracy

    ra = robust_accuracy(clf, x, y, [eps], key=key, attack="pgd", bounds=(0.0, 1.0), steps=10)
    return {"clean_accuracy": float(ra.clean_accuracy), "pgd_accuracy": float(ra.accuracy[0])}


def _robustify(features, x, starts, *, steps, lr=0.01):
    """``argmin_{x_r ∈ [0,1]} ||g(x_r) - g(x)||²`` by Adam from ``starts``, one program."""
    import jax
    import jax.numpy as jnp
    import optax

    target = jax.lax.stop_gradient(features(x))
    opt = optax.adam(lr)

    def loss(z):
        return jnp.sum((features(z) - target) ** 2)

    @jax.jit
    def run(z0):
        def step(carry, _):
            z, s = carry
            g = jax.grad(loss)(z)
            u, s = opt.update(g, s, z)
            return (jnp.clip(optax.apply_updates(z, u), 0, 1), s), None

        (z, _), _ = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
        rel = jnp.linalg.norm((features(z) - target).reshape(z.shape[0], -1), axis=1) / (
            jnp.linalg.norm(target.reshape(z.shape[0], -1), axis=1) + 1e-12
        )
        return z, rel

    return run(jnp.asarray(starts))


def _probe(features, xtr, ytr, xte, yte, *, key, steps=500):
    """Logistic regression on frozen features (Adam 1e-2, L2 1e-4): test accuracy."""
    import jax
    import jax.numpy as jnp
    import optax

    ftr, fte = (np.asarray(features(jnp.asarray(v))) for v in (xtr, xte))
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    k = int(max(ytr.max(), yte.max())) + 1
    params = {"w": jnp.zeros((ftr.shape[1], k)), "b": jnp.zeros(k)}
    opt = optax.adam(1e-2)

    def loss(p):
        logits = ftr @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean()
        return ce + 1e-4 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def run(p):
        def step(c, _):
            p, s = c
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    del key
    p = run(params)
    return float(np.mean(np.argmax(fte @ np.asarray(p["w"]) + np.asarray(p["b"]), -1) == yte))


def run_experiment(args) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp

    from geomrobust.data import load_dataset
    from geomrobust.models import Classifier, create_model, layer_splits, pure_apply
    from geomrobust.search import pgd
    from geomrobust.train import make_loss

    t_start = time.perf_counter()
    root = jax.random.key(args.key)
    tr = load_dataset("digits", "train", resize=args.resize)
    te = load_dataset("digits", "test", resize=args.resize)
    xtr, ytr = np.asarray(tr.images), np.asarray(tr.labels)
    xte, yte = np.asarray(te.images[: args.n_eval]), np.asarray(te.labels[: args.n_eval])
    model = create_model("lenet", xtr.shape[1:], 10, key=jax.random.fold_in(root, 0),
                         activation="softplus", pool="avg")  # fmt: skip
    apply, params0 = pure_apply(model)
    std_loss = make_loss("standard")
    pgd_loss = make_loss("pgd", eps=args.eps, steps=5, bounds=(0.0, 1.0))
    ekey = jax.random.fold_in(root, 9)
    ep = dict(epochs=args.epochs)

    def classifier(params):
        return Classifier(apply, params)

    def features_of(params):
        from flax import nnx

        m = create_model("lenet", xtr.shape[1:], 10, key=jax.random.key(0),
                         activation="softplus", pool="avg")  # fmt: skip
        nnx.update(m, params)
        return layer_splits(m)["fc2"][0]

    results, images = {"settings": vars(args)}, {}
    t = time.perf_counter()
    p_std = _train(apply, params0, xtr, ytr, std_loss, key=jax.random.fold_in(root, 1), **ep)
    p_rob = _train(apply, params0, xtr, ytr, pgd_loss, key=jax.random.fold_in(root, 2), **ep)
    results["D: standard training"] = _evaluate(classifier(p_std), xte, yte, args.eps, ekey)
    results["D: PGD-AT"] = _evaluate(classifier(p_rob), xte, yte, args.eps, ekey)
    print(f"[1/5] standard and PGD-AT models on D ({time.perf_counter() - t:.0f} s): "
          f"{results['D: standard training']}, {results['D: PGD-AT']}", flush=True)  # fmt: skip

    # 2. robustified datasets: robust features, and the standard-feature control
    t = time.perf_counter()
    rng = np.random.default_rng(args.key)
    starts = xtr[rng.permutation(xtr.shape[0])]
    g_rob, g_std = features_of(p_rob), features_of(p_std)
    x_r, rel_r = _robustify(g_rob, jnp.asarray(xtr), starts, steps=args.robustify_steps)
    x_s, rel_s = _robustify(g_std, jnp.asarray(xtr), starts, steps=args.robustify_steps)
    results["robustify_relative_feature_error"] = {
        "robust": float(np.median(np.asarray(rel_r))),
        "standard": float(np.median(np.asarray(rel_s))),
    }
    print(f"[2/5] robustified datasets ({time.perf_counter() - t:.0f} s), median relative "
          f"feature error {results['robustify_relative_feature_error']}", flush=True)  # fmt: skip

    # 3. non-robust relabelled dataset: targeted L2 PGD of the standard model to y + 1
    t = time.perf_counter()
    target = (ytr + 1) % 10
    adv = pgd(classifier(p_std), xtr, ytr, key=None, eps=args.attack_eps, norm=2,
              steps=args.attack_steps, random_start=False, target=jnp.asarray(target),
              bounds=(0.0, 1.0))  # fmt: skip
    ok = np.asarray(adv.success)
    x_det, y_det = np.asarray(adv.adversarial)[ok], target[ok]
    results["D_det_kept_fraction"] = float(ok.mean())
    print(f"[3/5] D_det ({time.perf_counter() - t:.0f} s): {100 * ok.mean():.0f} % of the "
          "targeted attacks succeeded and are kept", flush=True)  # fmt: skip

    # 4. standard training on each new dataset, evaluated on the original test set
    t = time.perf_counter()
    for name, (x, y), k in (
        ("D_R (robust features): standard training", (np.asarray(x_r), ytr), 3),
        ("D_R control (standard features): standard training", (np.asarray(x_s), ytr), 4),
        ("D_det (non-robust features, labels y+1): standard training", (x_det, y_det), 5),
    ):
        p = _train(apply, params0, x, y, std_loss, key=jax.random.fold_in(root, k), **ep)
        results[name] = _evaluate(classifier(p), xte, yte, args.eps, ekey)
    print(f"[4/5] models on D_R, its control and D_det ({time.perf_counter() - t:.0f} s)",
          flush=True)  # fmt: skip

    # 5. linear probes on frozen features, on two shifted tasks
    t = time.perf_counter()
    tasks = {
        "flipped left-right": lambda v: v[:, :, ::-1],
        "rotated 90°": lambda v: np.rot90(v, 1, (1, 2)),
    }
    probes = {}
    for task, tf in tasks.items():
        a, b = np.ascontiguousarray(tf(xtr)), np.ascontiguousarray(tf(xte))
        probes[task] = {
            "standard features": _probe(g_std, a, ytr, b, yte, key=root),
            "robust features": _probe(g_rob, a, ytr, b, yte, key=root),
        }
    results["linear_probe_accuracy"] = probes
    print(f"[5/5] linear probes ({time.perf_counter() - t:.0f} s): {probes}", flush=True)
    results["seconds"] = time.perf_counter() - t_start
    for name, v in (("original", xtr), ("robustified", np.asarray(x_r)),
                    ("control", np.asarray(x_s)), ("det", x_det)):  # fmt: skip
        images[name] = v[:10]
    images["det_labels"] = y_det[:10]
    return results, images


def verdicts(r: dict) -> dict:
    """The paper's qualitative claims, each True/False on this run."""
    d_std, d_r = r["D: standard training"], r["D_R (robust features): standard training"]
    ctrl = r["D_R control (standard features): standard training"]
    det = r["D_det (non-robust features, labels y+1): standard training"]
    probes = r["linear_probe_accuracy"]
    return {
        "D_R gives more PGD accuracy than D (standard training)": d_r["pgd_accuracy"]
        > d_std["pgd_accuracy"],
        "D_R gives more PGD accuracy than its standard-feature control": d_r["pgd_accuracy"]
        > ctrl["pgd_accuracy"],
        "D_det generalises above chance (10 %) to the original test set": det["clean_accuracy"]
        > 0.2,
        "robust features transfer at least as well under a linear probe": all(
            v["robust features"] >= v["standard features"] for v in probes.values()
        ),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.io import save_json, save_npz

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, images = run_experiment(args)
    results["claims"] = verdicts(results)
    save_json(out / "summary.json", {"key": args.key, **results})
    save_npz(out / "results.npz", images)
    fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
    for row, name in zip(axes, ("original", "robustified", "control", "det"), strict=True):
        for j, ax in enumerate(row):
            ax.imshow(images[name][j, ..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel({"original": "D", "robustified": "D_R", "control": "control",
                           "det": "D_det"}[name], fontsize=8)  # fmt: skip
    for j, ax in enumerate(axes[3]):
        ax.set_title(f"label {images['det_labels'][j]}", fontsize=7)
    fig.savefig(out / "robust_features.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    for k, v in results.items():
        if isinstance(v, dict) and "clean_accuracy" in v:
            print(f"{k}: clean {v['clean_accuracy']:.3f}, PGD@{args.eps} {v['pgd_accuracy']:.3f}")
    for claim, ok in results["claims"].items():
        print(f"{'reproduced' if ok else 'NOT reproduced'}: {claim}")
    print(f"{results['seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
