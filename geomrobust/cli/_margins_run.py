"""``geomrobust margins``: the implementation, imported when the command runs.

Minimal perturbations, attacks and subspace margins of a checkpoint. The parser and its options
are in ``cli/_margins.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geomrobust import plot
from geomrobust.analyses import MarginSettings, margins

from ._errors import user_errors
from ._loading import cli_devices, load_model_and_data
from ._locks import OutputLocks
from ._outputs import compute_analysis, save_figure, write_results
from ._processes import start_processes, writes_outputs
from ._settings import settings_from_args

__all__ = ["run"]


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    with user_errors(2):
        settings = settings_from_args(MarginSettings, args)
    start_processes(args)
    with user_errors(2, "--devices: "):
        devs = cli_devices(args)
    with user_errors(1):
        clf, data, meta = load_model_and_data(args)
    out = Path(args.out or f"runs/margins-{args.method}-{args.norm}-{args.subspaces}")
    arrays, summary = compute_analysis(
        margins, "margins", clf, data, settings, meta, args, outputs, out, devices=devs
    )
    summary["model"] = meta
    if not writes_outputs(args):  # --distributed: process 0 writes
        return 0
    write_results(out, arrays, summary, args=args)
    if not args.no_plots:
        _plots(out, data, arrays, summary, settings)
    print(_headline(summary), file=sys.stdout)
    print(f"results written to {out}", file=sys.stdout)
    return 0


def _plots(out: Path, data, arrays: dict, summary: dict, s) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
        save_figure(fig, out / name)


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
    status = summary.get("status", {})  # the searches' codes by name (one search: flat)
    failed = {k: v for k, v in status.items() if k != "SUCCESS" and isinstance(v, int)}
    if failed:
        s += ", not converged: " + ", ".join(f"{k} {v}" for k, v in failed.items())
    return s
