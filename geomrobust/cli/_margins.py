"""``geomrobust margins``: minimal perturbations, attacks and subspace margins of a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _common as common

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "margins",
        help="margins (DeepFool), attacks (PGD, SparseFool) and subspace margins",
        description=(
            "Measure how far the examples of a dataset are from the decision boundary of a "
            "checkpoint: minimal perturbations by DeepFool (L2 / Linf), robust accuracy "
            "under PGD, sparse perturbations by SparseFool, and margins inside DCT frequency "
            "bands (Hold me tight!) or random subspaces. Writes results.npz, summary.json "
            "and PNG plots to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    common.add_devices_arg(common.add_model_data_args(p))
    common.add_resume_args(p)
    common.add_distributed_args(p)
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("deepfool", "pgd", "sparsefool", "best"),
        default="deepfool",
        help="boundary search; best: the smallest perturbation over DeepFool, FMN and (L2) "
        "C&W, with DeepFool's overestimate ratio",
    )
    g.add_argument(
        "--norm", choices=("2", "inf"), default="2", help="Lp norm (deepfool, pgd, best)"
    )
    g.add_argument("--fmn-steps", type=common.positive_int, default=100, help="FMN steps (best)")
    g.add_argument(
        "--cw-steps", type=common.positive_int, default=100, help="C&W steps per constant (best)"
    )
    g.add_argument(
        "--cw-binary-steps", type=common.positive_int, default=5,
        help="C&W constants tried by the binary search (best)",
    )  # fmt: skip
    g.add_argument(
        "--subspaces",
        choices=("none", "dct", "random"),
        default="none",
        help="deepfool L2 only: margins inside DCT bands or random subspaces",
    )
    common.add_deepfool_args(g)
    g.add_argument(
        "--slots",
        type=common.positive_int,
        default=32,
        help="continuous-batching working set of the DeepFool driver",
    )
    g.add_argument(
        "--eps",
        type=common.positive_float,
        nargs="+",
        default=None,
        help="PGD radii; None means 8/255-scaled defaults for the norm",
    )
    g.add_argument("--steps", type=common.positive_int, default=10, help="PGD steps")
    common.add_box_arg(g)
    g.add_argument(
        "--lambda", dest="lambda_", type=common.positive_float, default=3.0, help="SparseFool λ"
    )
    g.add_argument(
        "--block",
        type=common.positive_int,
        default=None,
        help="DCT block side K; None means min(8, H // 4)",
    )
    g.add_argument(
        "--stride",
        type=common.positive_int,
        default=None,
        help="DCT diagonal stride T; None means 1 up to 28 pixels, else 2",
    )
    g.add_argument(
        "--subspace-dim",
        type=common.positive_int,
        default=None,
        help="random-subspace dimension m; None means D // 16",
    )
    g.add_argument("--draws", type=common.positive_int, default=3, help="random subspaces drawn")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomrobust.analyses import MarginSettings, margins

    with common.user_errors(2):
        settings = common.settings_from_args(MarginSettings, args)
    common.start_processes(args)
    with common.user_errors(2, "--devices: "):
        devs = common.cli_devices(args)
    with common.user_errors(1):
        clf, data, meta = common.load_model_and_data(args)
    out = Path(args.out or f"runs/margins-{args.method}-{args.norm}-{args.subspaces}")
    common.hold_run_out(out, args)  # another run into the same --out stops here
    n = int(data.images.shape[0])
    store = common.open_run_store(out, settings, args, meta, n)  # an interrupted run resumes there
    with common.user_errors(1), common.warnings_as_lines("margins"):
        arrays, summary = margins.compute(
            clf, data, settings, store=store, progress=common.show_progress(), devices=devs
        )
    summary["model"] = meta
    if not common.writes_outputs(args):  # --distributed: process 0 writes
        return 0
    common.write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, data, arrays, summary, settings)
    print(_headline(summary), file=sys.stdout)
    print(f"results written to {out}", file=sys.stdout)
    return 0


def _plots(out: Path, data, arrays: dict, summary: dict, s) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from geomrobust import plot

    clean = arrays["labels"] == data.labels
    figs = {}
    if s.method in ("deepfool", "best") and s.subspaces == "none":
        ok = arrays["converged"]
        figs["margins.png"] = plot.plot_margin_distribution(
            {f"L{s.norm}": arrays["margin"][clean]}, {f"L{s.norm}": ok[clean]}
        )[0]
    elif s.subspaces == "dct":
        figs["subspace_profile.png"] = plot.plot_subspace_profile(
            arrays["margin"][:, clean], arrays["converged"][:, clean]
        )[0]
    elif s.subspaces == "random":
        m = f"random m={summary['dim']}"
        figs["margins.png"] = plot.plot_margin_distribution(
            {"minimal": arrays["minimal_margin"], m: arrays["margin"]},
            {"minimal": arrays["minimal_converged"], m: arrays["converged"]},
        )[0]
    elif s.method == "pgd":
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(arrays["epsilons"], arrays["accuracy"], "o-")
        ax.set_xlabel(f"ε (L{s.norm})")
        ax.set_ylabel("robust accuracy (PGD)")
        figs["robust_accuracy.png"] = fig
    if "perturbation" in arrays:
        figs["perturbations.png"] = plot.plot_perturbation_grid(
            data.images,
            arrays["perturbation"],
            labels=data.labels,
            adv_labels=arrays["adv_label"],
        )[0]
    for name, fig in figs.items():
        common.save_figure(fig, out / name)


def _headline(summary: dict) -> str:
    norm = "L1" if summary["method"] == "sparsefool" else f"L{summary['norm']}"
    s = f"{summary['method']} {norm}: clean accuracy {summary['clean_accuracy']:.3f}"
    if "margin" in summary and summary["margin"].get("n_valid"):
        s += f", median margin {summary['margin']['median']:.4g}, rho {summary['rho']:.4g}"
    if summary.get("deepfool_ratio", {}).get("n"):
        r = summary["deepfool_ratio"]
        s += (
            f", DeepFool/minimal ratio median {r['median']:.4g} (90th percentile "
            f"{r['p90']:.4g}, above 1.05: {r['above_1_05']:.3f})"
        )
    if "robust_accuracy" in summary:
        s += ", robust accuracy " + ", ".join(
            f"{float(k):.4g}: {v:.3f}" for k, v in summary["robust_accuracy"].items()
        )
    if "bands" in summary:
        med = summary["bands"]["median"]
        s += f", median margin per DCT band: lowest {med[0]:.4g}, highest {med[-1]:.4g}"
        none_in_box = summary.get("n_no_boundary_in_box")
        if none_in_box and any(none_in_box):
            s += (
                f" (bands with no boundary inside the box for some examples: "
                f"{sum(1 for v in none_in_box if v)} of {len(none_in_box)}; their margins are "
                "lower bounds, counted as such)"
            )
    if "median_ratio" in summary:
        s += (
            f", random/minimal margin ratio {summary['median_ratio']:.3g} "
            f"(flat boundary: {summary['predicted_ratio']:.3g})"
        )
    if "sparsity" in summary and summary["sparsity"].get("n_valid"):
        s += f", median changed fraction {summary['sparsity']['median']:.3g}"
    return s
