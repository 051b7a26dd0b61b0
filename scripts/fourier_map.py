"""The Fourier accuracy map of the NADs paper on 32×32 directional data: LeNet vs logistic
regression (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural anisotropy directions",
NeurIPS 2020, figure 2; published: logistic regression 100 % at every frequency, LeNet about
56 % on average, above chance only along a few bands).

For each 2-D Fourier direction ``v`` (every ``--stride``-th frequency of the 32×32 grid), train
the architecture from scratch on ``D(v)``: ``x = y (ε/2) v + (I - v vᵀ) n``, ``n ~ N(0, σ² I)``,
``ε = 1``, ``σ = 3`` (the authors' values), and record its test accuracy. Two recipes:

- ``--recipe authors``: as in the authors' code (``directional_bias.py``, ``utils.train``,
  ``models.LeNet`` / ``LogReg``): the classic LeNet-5 (VALID convolutions, 400-wide flatten)
  and logistic regression with PyTorch's initialisation; plain SGD (no momentum, no weight
  decay) at 0.5 decaying linearly to 0, gradients clipped to global norm 0.5, 20 epochs of
  10,000 examples reshuffled each epoch in batches of 128 (79 per epoch, 1,580 steps);
  10,000 test examples;
- ``--recipe fast`` (default): Adam 1e-2, 300 steps of 64 from 1,000 examples, the default of
  ``geomrobust nads --accuracy-map``.

Writes OUT/<model>/results.npz and summary.json (the settings, mean / min / max accuracy, the
fraction of frequencies above 60 %), OUT/accuracy_maps.png, and OUT/results.npz (arrays
``<model>__<name>``) and OUT/summary.json with every model. Progress is shown per chunk of
directions; an interrupted run resumes from its finished chunks (``--restart`` starts over).

    python scripts/fourier_map.py --out fourier_map            # fast recipe, every 2nd freq.
    python scripts/fourier_map.py --recipe authors --stride 4  # the authors' training
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from geomrobust.cli import OneLineParser, positive_int, run_script, seed

RECIPES = {
    "fast": dict(map_train=1000, map_steps=300, map_batch=64, map_lr=1e-2,
                 map_optimizer="adam", map_schedule="constant"),
    "authors": dict(map_train=10000, map_steps=20 * 79, map_batch=128, map_lr=0.5,
                    map_optimizer="sgd", map_schedule="linear", map_clip=0.5,
                    map_sampling="epoch"),
}  # fmt: skip
TEST = {"fast": 2000, "authors": 10000}
#: the architectures' options per recipe (the authors' are PyTorch's LeNet-5 and nn.Linear)
ARCH_OPTIONS = {
    "fast": {"lenet": {"conv": "auto"}, "logreg": {}},
    "authors": {
        "lenet": {"padding": "VALID", "init": "pytorch", "conv": "auto"},
        "logreg": {"init": "pytorch"},
    },
}

#: the published means (the authors' ``docs/data/dft_accuracies.csv``, 16×16 grid of 32×32)
PUBLISHED = {"lenet": 0.56, "logreg": 1.0}

MODELS = {
    "lenet": ("lenet", {}),  # conv 5×5 (6, 16) -> ReLU -> max pool, dense 120, 84: LeNet-5
    "logreg": ("mlp", {"widths": ()}),  # logistic regression: one affine layer
}


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=["lenet", "logreg"])
    p.add_argument("--recipe", choices=tuple(RECIPES), default="fast")
    p.add_argument("--size", type=positive_int, default=32, help="images are size×size×1")
    p.add_argument(
        "--stride", type=positive_int, default=2, help="every S-th frequency on each axis"
    )
    p.add_argument(
        "--test",
        type=positive_int,
        default=None,
        help="test examples per direction (default 10,000 authors, 2,000 fast)",
    )
    p.add_argument("--chunk", type=positive_int, default=16, help="directions trained at once")
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="fourier_map", help="output directory")
    p.add_argument("--restart", action="store_true", help="discard finished chunks")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.analyses import Architecture, NADSettings, nads
    from geomrobust.io import open_chunk_store, save_json, save_npz
    from geomrobust.plot import plot_accuracy_map

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = (args.size, args.size, 1)
    every = {}
    for name in args.models:
        arch_name, config = MODELS[name]
        arch = Architecture(arch_name, {**config, **ARCH_OPTIONS[args.recipe][name]}, shape)
        settings = NADSettings(
            num_networks=64, accuracy_map=True, map_stride=args.stride,
            map_test=args.test or TEST[args.recipe],
            map_chunk=args.chunk, key=args.key, **RECIPES[args.recipe],
        )  # fmt: skip
        record = {"script": "fourier_map", "model": name, "architecture": arch._asdict(),
                  "recipe": args.recipe, "settings": vars(settings)}  # fmt: skip
        store = open_chunk_store(out / name / "chunks", record, overwrite=args.restart)
        t0 = time.perf_counter()
        arrays, summary = nads.compute(arch, None, settings, store=store, progress=True)
        acc = arrays["map_accuracy"]
        summary = {
            **summary, "model": name, "recipe": args.recipe, "settings": vars(settings),
            "map_max_accuracy": float(np.max(acc)),
            "fraction_above_60": float(np.mean(acc > 0.6)),
            "published_mean_accuracy": PUBLISHED[name], "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        save_npz(out / name / "results.npz", arrays)
        save_json(out / name / "summary.json", summary)
        every[name] = (arrays, summary)
        print(
            f"{name}: mean accuracy {summary['map_mean_accuracy']:.3f} (published "
            f"{PUBLISHED[name]:.2f}), min {summary['map_min_accuracy']:.3f}, max "
            f"{summary['map_max_accuracy']:.3f}, {100 * summary['fraction_above_60']:.0f} % of "
            f"{acc.size} frequencies above 60 %, {summary['seconds']:.0f} s"
        )
    fig, axes = plt.subplots(
        1, len(every), figsize=(4.6 * len(every), 4.0), squeeze=False, layout="constrained"
    )
    for ax, (name, (arrays, _)) in zip(axes[0], every.items(), strict=True):
        plot_accuracy_map(
            arrays["map_grid"],
            ax=ax,
            title=f"{name}, {args.recipe} recipe",
            stride=args.stride,
            centered=True,
        )
    fig.savefig(out / "accuracy_maps.png", dpi=100, bbox_inches="tight")
    plt.close("all")
    models = {name: s for name, (_, s) in every.items()}
    save_npz(
        out / "results.npz", {f"{n}__{k}": v for n, (a, _) in every.items() for k, v in a.items()}
    )
    save_json(out / "summary.json", {"key": args.key, "recipe": args.recipe, "models": models})
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
