"""The Hold-me-tight experiment: DCT-subspace margins of models trained on original,
frequency-flipped and low-pass digits (Ortiz-Jimenez et al., NeurIPS 2020).

Trains one small network per data variant (original; flipped = IDCT(flip(DCT(x))); low-pass =
DCT frequencies below --cutoff), then measures the L2 DeepFool margin of test examples inside
K×K diagonal DCT blocks. Expected: small margins where the discriminative information is
(low frequency for digits), large (invariance) elsewhere; flipping the data flips the profile.
Writes OUT/results.npz, OUT/summary.json and OUT/subspace_margins.png.

    python scripts/subspace_margins.py --out hmt --epochs 20 --n 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, positive_int, run_script, seed


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=("mlp", "lenet"), default="mlp", help="architecture")
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs per variant")
    p.add_argument("--n", type=positive_int, default=100, help="test examples measured")
    p.add_argument("--block", type=positive_int, default=2, help="DCT block size K")
    p.add_argument("--stride", type=positive_int, default=1, help="DCT block stride T")
    p.add_argument("--cutoff", type=positive_int, default=4, help="low-pass cutoff frequency")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["original", "flipped", "low_pass"],
        choices=("original", "flipped", "low_pass"),
        help="data variants",
    )
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="subspace_margins", help="output directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.data import dct_flip, load_dataset, low_pass
    from geomrobust.io import save_json, save_npz
    from geomrobust.measures import dct_subspaces, subspace_margins, summarize_bands
    from geomrobust.models import create_model, pure_apply
    from geomrobust.train import evaluate, fit, make_optimizer

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    transforms = {
        "original": lambda a: a,
        "flipped": lambda a: np.asarray(dct_flip(jnp.asarray(a))),
        "low_pass": lambda a: np.asarray(low_pass(jnp.asarray(a), args.cutoff)),
    }
    bases = dct_subspaces(train.images.shape[1:], args.block, args.stride)
    key = jax.random.key(args.key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays, summary = (
        {},
        {
            "key": args.key,
            "block": args.block,
            "stride": args.stride,
            "n_bands": len(bases),
            "model": args.model,
            "variants": {},
        },
    )
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, name in enumerate(args.variants):
        tr, te = transforms[name](train.images), transforms[name](test.images)
        k = jax.random.fold_in(key, i)
        cfg = {"widths": [128, 128]} if args.model == "mlp" else {"pool": "avg"}
        model = create_model(args.model, tr.shape[1:], 10, key=k, activation="softplus", **cfg)
        apply, params = pure_apply(model)
        opt = make_optimizer("adam", 3e-3, epochs=args.epochs, steps_per_epoch=len(tr) // 64)
        params = fit(
            apply,
            params,
            opt,
            tr,
            train.labels,
            key=k,
            epochs=args.epochs,
            batch_size=64,
            progress=False,
        ).state.params
        acc = evaluate(apply, params, te, test.labels).accuracy
        r = subspace_margins(
            lambda z, p=params, a=apply: a(p, z), jnp.asarray(te[: args.n]), None, bases
        )
        s = summarize_bands(r.margin, r.converged)
        arrays[f"{name}_margin"] = np.asarray(r.margin)
        arrays[f"{name}_converged"] = np.asarray(r.converged)
        summary["variants"][name] = {
            "test_accuracy": acc,
            "median": [None if not np.isfinite(v) else float(v) for v in s.median],
            "n_unconverged": s.n_unconverged.tolist(),
        }
        ax.plot(s.median, marker="o", label=f"{name} (acc {acc:.2f})")
        ax.fill_between(np.arange(len(bases)), s.q25, s.q75, alpha=0.2)
        print(f"{name}: accuracy {acc:.3f}, median margin per band {np.round(s.median, 3)}")
    ax.set_yscale("log")
    ax.set_xlabel("DCT band (low -> high frequency)")
    ax.set_ylabel("median L2 margin in the band")
    ax.set_title("Margins in DCT subspaces")
    ax.legend(fontsize=8)
    fig.savefig(out / "subspace_margins.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    save_npz(out / "results.npz", arrays)
    save_json(out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
