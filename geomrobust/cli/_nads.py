"""``geomrobust nads``: neural anisotropy directions and the Fourier accuracy map of a model."""

from __future__ import annotations

import argparse
import json

from . import _common as common

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
        type=common.parse_resize,
        default=None,
        help="alternative to --input-shape: S×S or H×W with the checkpoint's channels",
    )
    n = p.add_argument_group("NADs")
    n.add_argument("--num-networks", type=common.positive_int, default=256, help="initialisations")
    n.add_argument(
        "--batch", type=common.positive_int, default=32, help="networks per jitted batch"
    )
    n.add_argument("--num", type=common.positive_int, default=16, help="NADs kept and plotted")
    n.add_argument("--out", metavar="DIR", default=None, help="directory for the results")
    n.add_argument("--key", metavar="INT", type=common.seed, default=0, help="PRNG seed")
    m = p.add_argument_group("Fourier accuracy map")
    m.add_argument("--accuracy-map", action="store_true", help="compute the accuracy map")
    m.add_argument(
        "--map-stride",
        type=common.positive_int,
        default=1,
        help="use every S-th frequency along each axis (speed)",
    )
    m.add_argument("--map-train", type=common.positive_int, default=1000, help="training examples")
    m.add_argument("--map-test", type=common.positive_int, default=500, help="test examples")
    m.add_argument(
        "--map-steps", type=common.positive_int, default=300, help="Adam steps per direction"
    )
    m.add_argument("--map-lr", type=common.positive_float, default=1e-2, help="Adam learning rate")
    m.add_argument("--map-chunk", type=common.positive_int, default=16, help="directions per vmap")
    m.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    common.add_resume_args(p)
    p.set_defaults(func=run)
    return p


def _architecture(args):
    """The :class:`geomrobust.analyses.Architecture` of the checkpoint or the options."""
    from geomrobust.analyses import Architecture
    from geomrobust.train import load_metadata

    config = json.loads(args.config)
    if not isinstance(config, dict):
        raise ValueError(f"--config must be a JSON object, got {args.config!r}")
    if args.checkpoint:
        arch = Architecture.from_metadata(load_metadata(args.checkpoint), config)
    else:
        arch = Architecture(args.model, config, (8, 8, 1))
    shape = arch.input_shape
    if args.input_shape is not None:
        shape = args.input_shape
    elif args.resize is not None:
        hw = (args.resize, args.resize) if isinstance(args.resize, int) else args.resize
        shape = (*hw, shape[-1])
    return arch._replace(input_shape=tuple(int(v) for v in shape))


def run(args: argparse.Namespace) -> int:
    import jax

    from geomrobust.analyses import NADSettings, nads, settings_record
    from geomrobust.io import open_chunk_store

    with common.user_errors(2):
        arch = _architecture(args)
        arch.create(jax.random.key(0))  # fail early
    settings = common.settings_from_args(NADSettings, args)
    out = common.hold_out(args.out or "nads_results")
    store = None
    if settings.accuracy_map:  # per-chunk map results in OUT/chunks: a rerun resumes there
        record = {
            **settings_record(settings),
            "architecture": arch.name,
            "model_config": dict(arch.config),
            "input_shape": list(arch.input_shape),
        }
        with common.user_errors(1):
            store = open_chunk_store(out / "chunks", record, overwrite=bool(args.restart))
    with common.user_errors(1), common.warnings_as_lines("nads"):
        arrays, summary = nads.compute(
            arch, None, settings, store=store, progress=common.show_progress()
        )
    summary = {"command": "nads", **summary}
    common.write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, arrays, settings.accuracy_map)
    msg = f"nads: top eigenvalue {float(arrays['eigenvalues'][0]):.4g}"
    if settings.accuracy_map:
        msg += f"; Fourier map mean accuracy {summary['map_mean_accuracy']:.1%}"
    print(f"{msg}; results in {out}")
    return 0


def _plots(out, arrays, with_map):
    import matplotlib

    matplotlib.use("Agg")
    from geomrobust.plot import plot_accuracy_map, plot_nads

    fig, _ = plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    common.save_figure(fig, out / "nads.png", dpi=110)
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    common.save_figure(fig, out / "nads_fourier.png", dpi=110)
    if with_map:
        common.save_figure(
            plot_accuracy_map(arrays["map_grid"])[0], out / "accuracy_map.png", dpi=110
        )
