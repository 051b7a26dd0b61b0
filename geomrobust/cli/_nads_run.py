"""``geomrobust nads``: the implementation, imported when the command runs.

Neural anisotropy directions and the Fourier accuracy map of a model. The parser and its
options are in ``cli/_nads.py`` (:mod:`geomrobust.cli._dispatch`).
"""

from __future__ import annotations

import argparse
import json

import jax

from geomrobust.analyses import Architecture, NADSettings, nads, settings_record
from geomrobust.io import open_chunk_store
from geomrobust.plot import plot_accuracy_map, plot_nads
from geomrobust.train import load_metadata

from ._errors import user_errors, warnings_as_lines
from ._locks import OutputLocks
from ._outputs import save_figure, write_results
from ._progress import show_progress
from ._settings import settings_from_args

__all__ = ["run"]


def _architecture(args):
    """The :class:`geomrobust.analyses.Architecture` of the checkpoint or the options."""
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


def run(args: argparse.Namespace, outputs: OutputLocks) -> int:
    with user_errors(2):
        arch = _architecture(args)
        arch.create(jax.random.key(0))  # fail early
    settings = settings_from_args(NADSettings, args)
    out = outputs.hold(args.out or "nads_results")
    store = None
    if settings.accuracy_map:  # per-chunk map results in OUT/chunks: a rerun resumes there
        record = {
            **settings_record(settings),
            "architecture": arch.name,
            "model_config": dict(arch.config),
            "input_shape": list(arch.input_shape),
        }
        with user_errors(1):
            store = open_chunk_store(out / "chunks", record, overwrite=bool(args.restart))
    with user_errors(1), warnings_as_lines("nads"):
        arrays, summary = nads.compute(arch, None, settings, store=store, progress=show_progress())
    summary = {"command": "nads", **summary}
    write_results(out, arrays, summary, args=args)
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
    fig, _ = plot_nads(arrays["eigenvectors"], arrays["eigenvalues"])
    save_figure(fig, out / "nads.png", dpi=110)
    fig, _ = plot_nads(arrays["fourier_magnitude"], arrays["eigenvalues"], fourier=True)
    save_figure(fig, out / "nads_fourier.png", dpi=110)
    if with_map:
        save_figure(plot_accuracy_map(arrays["map_grid"])[0], out / "accuracy_map.png", dpi=110)
