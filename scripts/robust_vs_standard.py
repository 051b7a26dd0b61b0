"""Headline experiment: does robust training give larger margins and flatter boundaries?

A standard, a PGD-trained (Linf) and a CURE-trained LeNet (softplus, average pooling: a C²
network, so curvatures and Hessians are defined) on the embedded digits resized to 16×16,
compared on

* clean accuracy and FGSM / PGD robust accuracy over a list of Linf epsilons;
* the L2 DeepFool margin distribution and normalized robustness ρ;
* the DCT-subspace margin profile ("Hold me tight!", 8×8 DCT blocks, stride 2);
* the top principal curvatures of the boundary at (refined) DeepFool boundary points;
* the top eigenvalues of the input-space Hessian of the loss;
* the boundary thickness (Yang et al. 2020, DeepFool endpoints).

Writes ``<out>/robust_vs_standard.json`` and ``<out>/robust_vs_standard.png``.

    python scripts/robust_vs_standard.py --out runs/robust_vs_standard --key 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, positive_float, positive_int, run_script, seed


def _q(a) -> dict:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "n": 0}
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return {"median": q50, "q25": q25, "q75": q75, "mean": float(a.mean()), "n": int(a.size)}


def run_experiment(
    *,
    key: int = 0,
    resize: int = 16,
    epochs: int = 15,
    eps: float = 0.1,
    cure_h: float = 0.5,
    cure_lam: float = 1.0,
    n_eval: int = 200,
    n_geom: int = 24,
    epsilons=(0.05, 0.1, 0.15, 0.2),
    verbose: bool = True,
) -> dict:
    import jax
    import jax.numpy as jnp

    from geomrobust.analyses import boundary_points
    from geomrobust.data import load_dataset
    from geomrobust.measures import (
        dct_subspaces,
        loss_hessian_eigs,
        normalized_robustness,
        principal_curvatures,
        subspace_margins,
        summarize_bands,
        thickness,
    )
    from geomrobust.models import create_model, pure_apply
    from geomrobust.search import deepfool_dataset, robust_accuracy
    from geomrobust.train import fit, make_loss, make_optimizer

    tr = load_dataset("digits", "train", resize=resize)
    te = load_dataset("digits", "test", resize=resize)
    root = jax.random.key(key)
    model = create_model(
        "lenet",
        tr.images.shape[1:],
        tr.num_classes,
        key=jax.random.fold_in(root, 0),
        channels=[8, 16],
        hidden=[64, 32],
        activation="softplus",
        pool="avg",
    )
    apply, params0 = pure_apply(model)
    methods = {
        "standard": make_loss("standard"),
        "pgd": make_loss("pgd", eps=eps, steps=5, bounds=(0.0, 1.0)),
        "cure": make_loss("cure", h=cure_h, lam=cure_lam),
    }
    xe = jnp.asarray(te.images[:n_eval])
    ye = jnp.asarray(te.labels[:n_eval])
    xg, yg = xe[:n_geom], ye[:n_geom]
    bands = dct_subspaces(tr.images.shape[1:], block=8, stride=2)
    out = {
        "settings": {
            "dataset": f"digits {resize}x{resize}",
            "model": "lenet [8,16] conv, [64,32] dense, softplus, avg pool",
            "epochs": epochs,
            "optimizer": "adam 3e-3 cosine, batch 64",
            "pgd": {"eps": eps, "norm": "inf", "steps": 5},
            "cure": {"h": cure_h, "lam": cure_lam},
            "n_eval": n_eval,
            "n_geom": n_geom,
            "epsilons": list(epsilons),
            "dct_bands": "8x8 blocks, stride 2",
            "key": key,
        },
        "models": {},
    }
    for name, loss_fn in methods.items():
        t0 = time.perf_counter()
        steps = tr.images.shape[0] // 64
        opt = make_optimizer("adam", 3e-3, epochs=epochs, steps_per_epoch=steps)
        res = fit(
            apply,
            params0,
            opt,
            tr.images,
            tr.labels,
            key=jax.random.fold_in(root, 1),
            epochs=epochs,
            batch_size=64,
            loss_fn=loss_fn,
            progress=False,
        )
        p = res.state.params
        fn = jax.jit(lambda z, p=p: apply(p, z))
        r = {"train_time_s": time.perf_counter() - t0}
        for attack in ("fgsm", "pgd"):
            ra = robust_accuracy(
                fn,
                xe,
                ye,
                list(epsilons),
                key=jax.random.fold_in(root, 2),
                attack=attack,
                bounds=(0.0, 1.0),
            )
            r["clean_accuracy"] = ra.clean_accuracy
            r[f"{attack}_accuracy"] = [float(a) for a in ra.accuracy]
        df = deepfool_dataset(fn, xe, ye, norm=2)
        ok = np.asarray(df.converged) & (np.asarray(df.margin) > 0)
        r["deepfool_margin"] = _q(np.asarray(df.margin)[ok])
        r["deepfool_margins"] = np.asarray(df.margin)[ok].tolist()
        r["rho"] = normalized_robustness(df.margin, xe, df.converged)
        sm = subspace_margins(fn, xg, yg, bands)
        bs = summarize_bands(sm.margin, sm.converged)
        r["dct_profile"] = {
            k: np.asarray(getattr(bs, k)).tolist() for k in ("median", "q25", "q75")
        }
        # boundary points: DeepFool's points of the first n_geom examples, bisected onto
        # the boundary (the pipeline of `geomrobust curvature`)
        bp = boundary_points(fn, xg, yg, deepfool=jax.tree.map(lambda a: a[:n_geom], df))
        good = np.asarray(bp.valid)
        cv = principal_curvatures(
            fn, bp.z[good], bp.y[good], bp.k[good], num=6, key=jax.random.fold_in(root, 3)
        )
        vals = np.asarray(cv.values)[np.asarray(cv.converged)]
        r["curvature_top_abs"] = _q(np.abs(vals[:, 0])) if vals.size else _q([])
        r["curvature_mean_abs_top6"] = float(np.mean(np.abs(vals))) if vals.size else None
        he = loss_hessian_eigs(fn, xg, yg, num=5, key=jax.random.fold_in(root, 4))
        hv = np.asarray(he.values)[np.asarray(he.converged)]
        r["loss_hessian_top"] = _q(hv[:, 0]) if hv.size else _q([])
        th = thickness(fn, xe, ye)
        r["thickness"] = {"mean": th.mean, "valid": int(np.sum(th.valid))}
        r["time_s"] = time.perf_counter() - t0
        out["models"][name] = r
        if verbose:
            print(
                f"{name:9s} clean {r['clean_accuracy']:.3f} PGD@{eps} "
                f"{r['pgd_accuracy'][list(epsilons).index(eps)]:.3f} "
                f"DeepFool median {r['deepfool_margin']['median']:.3f} rho {r['rho']:.3f} "
                f"|kappa_1| median {r['curvature_top_abs']['median']:.3f} "
                f"lambda_max(H_loss) median {r['loss_hessian_top']['median']:.3g} "
                f"thickness {th.mean:.3f} ({r['time_s']:.0f} s)"
            )
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    eps = result["settings"]["epsilons"]
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    for name, r in models.items():
        ax[0].plot([0, *eps], [r["clean_accuracy"], *r["pgd_accuracy"]], marker="o", label=name)
        ax[1].hist(r["deepfool_margins"], bins=30, alpha=0.5, label=name)
        prof = r["dct_profile"]
        xs = np.arange(len(prof["median"]))
        ax[2].plot(xs, prof["median"], marker="o", label=name)
        ax[2].fill_between(xs, prof["q25"], prof["q75"], alpha=0.2)
    ax[0].set(title="PGD accuracy (Linf)", xlabel="eps", ylabel="accuracy")
    ax[1].set(title="L2 DeepFool margins", xlabel="margin")
    ax[2].set(title="DCT-band margins (low -> high freq.)", xlabel="band", yscale="log")
    names = list(models)
    curv = [models[n]["curvature_top_abs"]["median"] for n in names]
    hess = [models[n]["loss_hessian_top"]["median"] for n in names]
    xs = np.arange(len(names))
    ax[3].bar(xs - 0.2, curv, 0.4, label="median |top curvature|")
    ax3 = ax[3].twinx()
    ax3.bar(xs + 0.2, hess, 0.4, color="C1", label="median top loss-Hessian eig")
    ax[3].set_xticks(xs, names)
    ax[3].set_title("curvature (left, blue) / loss Hessian (right, orange)")
    for a in ax[:3]:
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="runs/robust_vs_standard", help="output directory")
    p.add_argument("--epochs", type=positive_int, default=15, help="training epochs per model")
    p.add_argument("--eps", type=positive_float, default=0.1, help="PGD-AT Linf radius")
    p.add_argument("--resize", type=positive_int, default=16, help="image side")
    args = p.parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    from geomrobust.io import save_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_experiment(key=args.key, epochs=args.epochs, eps=args.eps, resize=args.resize)
    result["total_time_s"] = time.perf_counter() - t0
    save_json(out / "robust_vs_standard.json", result)
    plot(result, out / "robust_vs_standard.png")
    print(f"wrote {out}/robust_vs_standard.json and .png in {result['total_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
