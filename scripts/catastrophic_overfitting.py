"""Catastrophic overfitting of single-step adversarial training, reproduced on the digits.

FGSM training without random start at a large Linf radius (Wong, Rice, Kolter, ICLR 2020;
Andriushchenko & Flammarion, NeurIPS 2020): after a few epochs the PGD accuracy on held-out
data collapses while the FGSM accuracy rises, and the gradient alignment
``cos(∇ℓ(x), ∇ℓ(x + η))`` drops. The robustness monitor of :mod:`geomrobust.train` flags it
(:class:`geomrobust.train.CatastrophicOverfittingWarning`). N-FGSM (de Jorge et al. 2022)
and GradAlign (Andriushchenko & Flammarion 2020) trained with the same budget avoid it.

Writes ``<out>/catastrophic_overfitting.json`` (per-epoch histories, flags, settings) and
``<out>/catastrophic_overfitting.png`` (PGD / FGSM accuracy and gradient cosine per epoch).

    python scripts/catastrophic_overfitting.py --out runs/co --key 0
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from geomrobust.cli import OneLineParser, positive_float, positive_int, run_script, seed

DEFAULTS = {
    "resize": 16,
    "eps": 0.2,
    "epochs": 15,
    "width": 256,
    "lr": 3e-3,
    "batch_size": 64,
    "monitor": 256,
    "methods": ["fgsm", "nfgsm", "gradalign"],
    "gradalign_lam": 2.0,
}


def run_experiment(
    *,
    key: int = 0,
    resize: int | None = DEFAULTS["resize"],
    eps: float = DEFAULTS["eps"],
    epochs: int = DEFAULTS["epochs"],
    width: int = DEFAULTS["width"],
    lr: float = DEFAULTS["lr"],
    batch_size: int = DEFAULTS["batch_size"],
    monitor: int = DEFAULTS["monitor"],
    methods=tuple(DEFAULTS["methods"]),
    gradalign_lam: float = DEFAULTS["gradalign_lam"],
    train_examples: int | None = None,
    verbose: bool = True,
) -> dict:
    """Train an MLP on the digits with each single-step method and monitor every epoch.

    Returns ``{"settings": ..., "runs": {method: {"history": ..., "flagged_epochs": [...],
    "warnings": n}}}``.
    """
    import jax

    from geomrobust.data import load_dataset
    from geomrobust.models import create_model, pure_apply
    from geomrobust.train import (
        CatastrophicOverfittingWarning,
        fit,
        make_loss,
        make_optimizer,
        robustness_monitor,
    )

    tr = load_dataset("digits", "train", resize=resize)
    te = load_dataset("digits", "test", resize=resize)
    images, labels = tr.images, tr.labels
    if train_examples is not None:
        images, labels = images[:train_examples], labels[:train_examples]
    root = jax.random.key(key)
    model = create_model(
        "mlp", images.shape[1:], tr.num_classes, key=jax.random.fold_in(root, 0), widths=[width]
    )
    apply, params = pure_apply(model)
    settings = {
        "fgsm": {"eps": eps},
        "fgsm_rs": {"eps": eps},
        "nfgsm": {"eps": eps},
        "gradalign": {"eps": eps, "lam": gradalign_lam},
        "pgd": {"eps": eps, "steps": 5},
        "standard": {},
    }
    out = {
        "settings": {
            "dataset": "digits",
            "resize": resize,
            "eps": eps,
            "norm": "inf",
            "epochs": epochs,
            "model": f"mlp[{width}]",
            "optimizer": f"adam lr={lr}, constant",
            "batch_size": batch_size,
            "monitor_examples": monitor,
            "key": key,
            "methods": {m: settings[m] for m in methods},
        },
        "runs": {},
    }
    m = min(monitor, te.images.shape[0])
    for method in methods:
        t0 = time.perf_counter()
        hook = robustness_monitor(
            apply,
            te.images[:m],
            te.labels[:m],
            eps=eps,
            key=jax.random.fold_in(root, 1),
            pgd_steps=10,
            bounds=(0.0, 1.0),
        )
        opt = make_optimizer("adam", lr, epochs=epochs, steps_per_epoch=1, schedule="constant")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CatastrophicOverfittingWarning)
            res = fit(
                apply,
                params,
                opt,
                images,
                labels,
                key=jax.random.fold_in(root, 2),
                epochs=epochs,
                batch_size=batch_size,
                loss_fn=make_loss(method, bounds=(0.0, 1.0), **settings[method]),
                eval_hook=hook,
                progress=False,
            )
        n_warn = sum(issubclass(w.category, CatastrophicOverfittingWarning) for w in caught)
        h = res.history
        flagged = [e for e, f in zip(h["epoch"], h["catastrophic_overfitting"], strict=True) if f]
        out["runs"][method] = {
            "history": {
                k: h[k]
                for k in (
                    "epoch",
                    "clean_accuracy",
                    "fgsm_accuracy",
                    "pgd_accuracy",
                    "grad_cosine",
                    "train_loss",
                )
            },
            "flagged_epochs": flagged,
            "warnings": n_warn,
            "final": {
                k: h[k][-1]
                for k in ("clean_accuracy", "fgsm_accuracy", "pgd_accuracy", "grad_cosine")
            },
            "best_pgd_accuracy": max(h["pgd_accuracy"]),
            "time_s": time.perf_counter() - t0,
        }
        if verbose:
            f = out["runs"][method]["final"]
            print(
                f"{method:10s} clean {f['clean_accuracy']:.3f} FGSM {f['fgsm_accuracy']:.3f} "
                f"PGD {f['pgd_accuracy']:.3f} (best {max(h['pgd_accuracy']):.3f}) "
                f"cos {f['grad_cosine']:.3f} flagged at {flagged} "
                f"({out['runs'][method]['time_s']:.0f} s)"
            )
            print("  PGD  per epoch:", " ".join(f"{v:.2f}" for v in h["pgd_accuracy"]))
            print("  FGSM per epoch:", " ".join(f"{v:.2f}" for v in h["fgsm_accuracy"]))
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for method, r in runs.items():
        h = r["history"]
        axes[0].plot(h["epoch"], h["pgd_accuracy"], marker="o", label=method)
        axes[1].plot(h["epoch"], h["fgsm_accuracy"], marker="o", label=method)
        axes[2].plot(h["epoch"], h["grad_cosine"], marker="o", label=method)
        for e in r["flagged_epochs"]:
            axes[0].axvline(e, color="red", alpha=0.15)
    eps = result["settings"]["eps"]
    axes[0].set_title(f"PGD-10 accuracy (Linf eps={eps})")
    axes[1].set_title(f"FGSM accuracy (eps={eps})")
    axes[2].set_title("cos(grad l(x), grad l(x + eta))")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Catastrophic overfitting on digits (red: monitor flagged)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="runs/catastrophic_overfitting", help="output directory")
    p.add_argument("--eps", type=positive_float, default=DEFAULTS["eps"], help="Linf radius")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"], help="epochs")
    p.add_argument("--resize", type=positive_int, default=DEFAULTS["resize"], help="image side")
    p.add_argument("--width", type=positive_int, default=DEFAULTS["width"], help="MLP hidden width")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="Adam learning rate")
    p.add_argument("--methods", nargs="+", default=DEFAULTS["methods"], help="training methods")
    args = p.parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    from geomrobust.io import save_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_experiment(
        key=args.key,
        resize=args.resize,
        eps=args.eps,
        epochs=args.epochs,
        width=args.width,
        lr=args.lr,
        methods=tuple(args.methods),
    )
    save_json(out / "catastrophic_overfitting.json", result)
    plot(result, out / "catastrophic_overfitting.png")
    print(f"wrote {out / 'catastrophic_overfitting.json'} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
