"""Neural anisotropy directions of an architecture and its Fourier accuracy map
(Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural anisotropy directions", NeurIPS 2020).

NADs: eigenvectors of E_θ[∇f_θ(x0) ∇f_θ(x0)ᵀ] over random initialisations θ at a fixed
x0 ~ N(0, I). Accuracy map: train the architecture on the directional dataset D(v) for each
2-D Fourier direction v and record its test accuracy. Writes OUT/results.npz,
OUT/summary.json, OUT/nads.png, OUT/nads_fourier.png, OUT/accuracy_map.png.

    python scripts/nads.py --model lenet --size 8 --networks 256 --out nads
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=("lenet", "mlp", "resnet"), default="lenet")
    p.add_argument("--size", type=int, default=8, help="input images are size×size×1")
    p.add_argument("--networks", type=int, default=256, help="random initialisations")
    p.add_argument("--num", type=int, default=16, help="NADs kept")
    p.add_argument("--map-stride", type=int, default=1, help="every S-th frequency (0: no map)")
    p.add_argument("--map-steps", type=int, default=300, help="Adam steps per direction")
    p.add_argument("--map-train", type=int, default=1000, help="training examples per D(v)")
    p.add_argument("--key", type=int, default=0, help="PRNG seed")
    p.add_argument("--out", default="nads_results", help="output directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.measures import fourier_accuracy_map, fourier_magnitude, nads
    from geomrobust.models import as_logits_fn, create_model, pure_apply
    from geomrobust.plot._nads import plot_accuracy_map, plot_nads

    shape = (args.size, args.size, 1)
    key = jax.random.key(args.key)
    res = nads(
        lambda k: as_logits_fn(create_model(args.model, shape, 2, key=k)),
        shape,
        num_networks=args.networks,
        key=key,
        num=min(args.num, args.networks),
        output="difference",
    )
    vecs = np.asarray(res.eigenvectors)
    arrays = {
        "eigenvalues": np.asarray(res.eigenvalues),
        "eigenvectors": vecs,
        "fourier_magnitude": np.asarray(fourier_magnitude(vecs)),
    }
    summary = {
        "model": args.model,
        "input_shape": list(shape),
        "networks": args.networks,
        "key": args.key,
        "eigenvalues": arrays["eigenvalues"].tolist(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, _ = plot_nads(vecs, arrays["eigenvalues"])
    fig.savefig(out / "nads.png", dpi=100, bbox_inches="tight")
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    fig.savefig(out / "nads_fourier.png", dpi=100, bbox_inches="tight")
    if args.map_stride > 0:
        apply, _ = pure_apply(create_model(args.model, shape, 2, key=key))
        freqs = [
            (i, j)
            for i in range(0, args.size, args.map_stride)
            for j in range(0, args.size, args.map_stride)
        ]
        amap = fourier_accuracy_map(
            lambda k: pure_apply(create_model(args.model, shape, 2, key=k))[1],
            apply,
            shape,
            key=jax.random.fold_in(key, 1),
            frequencies=freqs,
            n_train=args.map_train,
            steps=args.map_steps,
        )
        arrays.update(
            map_grid=np.asarray(amap.grid),
            map_accuracy=np.asarray(amap.accuracy),
            map_frequencies=np.asarray(amap.frequencies),
        )
        summary["map_mean_accuracy"] = float(np.mean(arrays["map_accuracy"]))
        fig, _ = plot_accuracy_map(arrays["map_grid"], title=f"{args.model} Fourier map")
        fig.savefig(out / "accuracy_map.png", dpi=100, bbox_inches="tight")
        print(f"Fourier accuracy map: mean {summary['map_mean_accuracy']:.3f}")
    plt.close("all")
    np.savez(out / "results.npz", **arrays)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"NADs: eigenvalues {np.round(arrays['eigenvalues'][:4], 4)}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
