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
import sys
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, nonnegative_int, positive_int, run_script, seed


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=("lenet", "mlp", "resnet"), default="lenet")
    p.add_argument("--size", type=positive_int, default=8, help="input images are size×size×1")
    p.add_argument("--networks", type=positive_int, default=256, help="random initialisations")
    p.add_argument("--num", type=positive_int, default=16, help="NADs kept")
    p.add_argument(
        "--map-stride", type=nonnegative_int, default=1, help="every S-th frequency (0: no map)"
    )
    p.add_argument("--map-steps", type=positive_int, default=300, help="Adam steps per direction")
    p.add_argument(
        "--map-train", type=positive_int, default=1000, help="training examples per D(v)"
    )
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="nads_results", help="output directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.analyses import Architecture, NADSettings, nads
    from geomrobust.io import save_json, save_npz
    from geomrobust.plot import plot_accuracy_map, plot_nads

    shape = (args.size, args.size, 1)
    settings = NADSettings(
        num_networks=args.networks,
        num=args.num,
        accuracy_map=args.map_stride > 0,
        map_stride=max(args.map_stride, 1),
        map_steps=args.map_steps,
        map_train=args.map_train,
        key=args.key,
    )
    arrays, summary = nads.compute(Architecture(args.model, {}, shape), None, settings)
    summary = {**summary, "model": args.model, "networks": args.networks, "key": args.key}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, _ = plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    fig.savefig(out / "nads.png", dpi=100, bbox_inches="tight")
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    fig.savefig(out / "nads_fourier.png", dpi=100, bbox_inches="tight")
    if settings.accuracy_map:
        fig, _ = plot_accuracy_map(arrays["map_grid"], title=f"{args.model} Fourier map")
        fig.savefig(out / "accuracy_map.png", dpi=100, bbox_inches="tight")
        print(f"Fourier accuracy map: mean {summary['map_mean_accuracy']:.3f}")
    plt.close("all")
    save_npz(out / "results.npz", arrays)
    save_json(out / "summary.json", summary)
    print(f"NADs: eigenvalues {np.round(arrays['eigenvalues'][:4], 4)}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
