"""``geomrobust nads``: neural anisotropy directions and the Fourier accuracy map of a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ._common import one_line, parse_resize, positive_int, progress_bar, write_results

__all__ = ["add_parser", "run"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW or HxWxC (e.g. 8x8x1), got {text!r}")
    return shape if len(shape) == 3 else (*shape, 1)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "nads",
        help="neural anisotropy directions (NADs) of an architecture, and its Fourier map",
        description=(
            "Eigen-decomposition of E_θ[∇f_θ(x0) ∇f_θ(x0)ᵀ] over random initialisations θ of "
            "an architecture at a fixed x0 ~ N(0, I) (the two-class logit difference f_1 - f_0 "
            "is the scalar output), streamed over batches of networks. With --accuracy-map, "
            "also train the architecture on the directional datasets D(v) for 2-D Fourier "
            "directions v and map the test accuracies. The architecture comes from "
            "--checkpoint (its configuration, not its weights) or from --model."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("architecture")
    g.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="take the architecture (not the weights) from this checkpoint",
    )
    g.add_argument(
        "--model",
        choices=("mlp", "lenet", "resnet"),
        default="lenet",
        help="architecture when no --checkpoint is given",
    )
    g.add_argument(
        "--config",
        metavar="JSON",
        default="{}",
        help='extra model options as JSON, e.g. \'{"activation": "softplus"}\'',
    )
    g.add_argument(
        "--input-shape",
        metavar="HxWxC",
        type=_shape,
        default=None,
        help="input shape; None means the checkpoint's, else 8x8x1",
    )
    g.add_argument(
        "--resize",
        metavar="S|HxW",
        type=parse_resize,
        default=None,
        help="alternative to --input-shape: S×S or H×W with the checkpoint's channels",
    )
    n = p.add_argument_group("NADs")
    n.add_argument("--num-networks", type=positive_int, default=256, help="initialisations")
    n.add_argument("--batch", type=positive_int, default=32, help="networks per jitted batch")
    n.add_argument("--num", type=positive_int, default=16, help="NADs kept and plotted")
    n.add_argument("--out", metavar="DIR", default=None, help="directory for the results")
    n.add_argument("--key", metavar="INT", type=int, default=0, help="PRNG seed")
    m = p.add_argument_group("Fourier accuracy map")
    m.add_argument("--accuracy-map", action="store_true", help="compute the accuracy map")
    m.add_argument(
        "--map-stride",
        type=positive_int,
        default=1,
        help="use every S-th frequency along each axis (speed)",
    )
    m.add_argument("--map-train", type=positive_int, default=1000, help="training examples")
    m.add_argument("--map-test", type=positive_int, default=500, help="test examples")
    m.add_argument("--map-steps", type=positive_int, default=300, help="Adam steps per direction")
    m.add_argument("--map-lr", type=float, default=1e-2, help="Adam learning rate")
    m.add_argument("--map-chunk", type=positive_int, default=16, help="directions per vmap")
    m.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.set_defaults(func=run)
    return p


def _architecture(args):
    """``(name, config, input_shape)`` from the checkpoint metadata or the options."""
    config = json.loads(args.config)
    if not isinstance(config, dict):
        raise ValueError(f"--config must be a JSON object, got {args.config!r}")
    shape = (8, 8, 1)
    name = args.model
    if args.checkpoint:
        meta_path = Path(args.checkpoint) / "metadata.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no checkpoint metadata at {meta_path}")
        mc = dict(json.loads(meta_path.read_text())["model_config"])
        name = mc.pop("name")
        shape = tuple(mc.pop("input_shape"))
        mc.pop("num_classes", None)
        config = {**mc, **config}
    if args.input_shape is not None:
        shape = args.input_shape
    elif args.resize is not None:
        hw = (args.resize, args.resize) if isinstance(args.resize, int) else args.resize
        shape = (*hw, shape[-1])
    return name, config, tuple(int(s) for s in shape)


def run(args: argparse.Namespace) -> int:
    import jax

    from geomrobust.measures import fourier_accuracy_map, fourier_magnitude, nads
    from geomrobust.models import as_logits_fn, create_model, pure_apply

    try:
        name, config, shape = _architecture(args)
        create_model(name, shape, 2, key=jax.random.key(0), **config)  # fail early
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        print(f"geomrobust nads: error: {one_line(e)}", file=sys.stderr)
        return 2
    d = int(np.prod(shape))
    num = min(args.num, d, args.num_networks)
    key = jax.random.key(args.key)
    out = Path(args.out or "nads_results")

    def init_fn(k):
        return as_logits_fn(create_model(name, shape, 2, key=k, **config))

    with progress_bar(1, "nads") as bar:
        res = nads(init_fn, shape, num_networks=args.num_networks, key=key, batch=args.batch,
                   num=num, output="difference")  # fmt: skip
        bar.update(1)
    vecs = np.asarray(res.eigenvectors)
    mags = np.asarray(fourier_magnitude(vecs))
    arrays = dict(eigenvalues=np.asarray(res.eigenvalues), eigenvectors=vecs,
                  fourier_magnitude=mags, x0=np.asarray(res.x0))  # fmt: skip
    summary = dict(
        command="nads", model=name, model_config=config, input_shape=list(shape),
        num_networks=args.num_networks, eigenvalues=arrays["eigenvalues"].tolist(),
    )  # fmt: skip
    amap = None
    if args.accuracy_map:
        apply, _ = pure_apply(create_model(name, shape, 2, key=key, **config))

        def init_params(k):
            return pure_apply(create_model(name, shape, 2, key=k, **config))[1]

        freqs = [(i, j) for i in range(0, shape[0], args.map_stride)
                 for j in range(0, shape[1], args.map_stride)]  # fmt: skip
        with progress_bar(len(freqs), "accuracy map") as bar:
            amap = fourier_accuracy_map(
                init_params, apply, shape, key=jax.random.fold_in(key, 1), frequencies=freqs,
                n_train=args.map_train, n_test=args.map_test, steps=args.map_steps,
                learning_rate=args.map_lr, chunk_size=args.map_chunk, progress=bar.update,
            )  # fmt: skip
        arrays.update(map_accuracy=np.asarray(amap.accuracy), map_grid=np.asarray(amap.grid),
                      map_frequencies=np.asarray(amap.frequencies))  # fmt: skip
        summary.update(map_mean_accuracy=float(np.mean(arrays["map_accuracy"])),
                       map_min_accuracy=float(np.min(arrays["map_accuracy"])))  # fmt: skip
    write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, arrays, amap is not None)
    msg = f"nads: top eigenvalue {float(arrays['eigenvalues'][0]):.4g}"
    if amap is not None:
        msg += f"; Fourier map mean accuracy {summary['map_mean_accuracy']:.1%}"
    print(f"{msg}; results in {out}")
    return 0


def _plots(out, arrays, with_map):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomrobust.plot._nads import plot_accuracy_map, plot_nads

    fig, _ = plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    fig.savefig(out / "nads.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    fig.savefig(out / "nads_fourier.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    if with_map:
        fig, _ = plot_accuracy_map(arrays["map_grid"])
        fig.savefig(out / "accuracy_map.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
