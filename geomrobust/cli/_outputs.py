"""What a subcommand writes into ``--out``: ``results.npz`` + ``summary.json`` (atomically,
:mod:`geomrobust.io`), PNG figures, the resumable per-chunk store, and the parsed options as
the record and the settings of a run.

* :func:`write_results` writes ``results.npz`` + ``summary.json`` atomically, :func:`save_figure`
  a PNG; a failed write is a :class:`~geomrobust.cli._errors.CLIError` (exit code 1);
* :func:`open_run_store` makes a long run resumable: its results are written per chunk
  (``OUT/chunks``, :class:`geomrobust.io.ChunkStore`) and the same command resumes after an
  interruption; other settings refuse unless ``--restart``;
* with ``--distributed``, each process has its own store (:mod:`geomrobust.cli._processes`);
* :func:`compute_analysis` runs an analysis' ``compute`` with all of that: ``--out`` held
  against another run, the store, the progress bar, warnings as one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geomrobust import __version__
from geomrobust.analyses import settings_record
from geomrobust.io import atomic_write, open_chunk_store, save_json, save_npz

from ._errors import CLIError, os_message, user_errors, warnings_as_lines
from ._locks import OutputLocks
from ._processes import (
    agree_all,
    hold_run_out,
    layout,
    other_layouts,
    remove_store,
    store_folder,
)
from ._progress import show_progress
from ._settings import options_record

__all__ = [
    "compute_analysis",
    "open_run_store",
    "save_figure",
    "write_results",
]


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Write a matplotlib figure to ``path`` (PNG, tight bounding box) atomically and close
    it; a failed write is a :class:`CLIError` (exit code 1) naming the file and the cause."""
    import matplotlib.pyplot as plt  # imported by the commands that draw, when they draw

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    with user_errors(1):
        atomic_write(path, buf.getvalue())


def open_run_store(out: Path, settings, args: argparse.Namespace, meta: Mapping, n: int):
    """The resumable chunk store of this run: ``out/chunks`` (one process), or this
    process's ``out/chunks-process-I-of-P`` (``--distributed``).

    Its settings are the analysis' ``settings`` (what changes the numbers), the data
    selection (``--dataset --resize --split --n``), the number of examples ``n``, the
    checkpoint's SHA-256 (so results of another model are never mixed in) and, with several
    processes, the process layout (so each chunk file names the process that wrote it). A
    folder holding the chunks of another layout is refused unless ``--restart``, which
    removes them: a changed layout re-plans from scratch, it never mixes.
    """
    i, p = layout(args)
    record = settings_record(settings)
    for k in ("dataset", "resize", "split", "n"):
        if hasattr(args, k):
            record[k] = options_record(args)[k]
    record.update(num_examples=int(n), checkpoint_sha256=meta.get("checkpoint_sha256"))
    if p > 1:
        record.update(process_index=i, process_count=p)
    out = Path(out).expanduser()
    others = other_layouts(out, i, p) if out.is_dir() else []
    error = None
    if others and not args.restart:
        error = CLIError(
            f"{out} holds the per-chunk results of a run with another process layout "
            f"({', '.join(q.name for q in others[:3])}); rerun with that layout to resume, or "
            "pass --restart to discard them",
            1,
        )
    elif others:
        for q in others:  # --restart: each process removes what it can see, tolerantly
            remove_store(q)
    if p > 1:
        agree_all(error is None, "opening the chunk stores")
    if error is not None:
        raise error
    with user_errors(1):
        return open_chunk_store(
            store_folder(out, i, p),
            record,
            overwrite=bool(args.restart),
            renamed=getattr(type(settings), "__renamed__", None),  # an older release's run
        )


def compute_analysis(
    analysis,
    command: str,
    clf,
    data,
    settings,
    meta: Mapping,
    args: argparse.Namespace,
    outputs: OutputLocks,
    out: Path | None,
    **options,
):
    """``analysis.compute(clf, data, settings, ...)`` for the subcommand ``command``.

    With an ``out`` folder, the folder is held (:func:`hold_run_out`: another run into the
    same ``--out`` stops here) and the results are written per chunk to the resumable store
    of :func:`open_run_store` (an interrupted run resumes there); without, nothing is stored.
    Bad inputs are a :class:`CLIError` with exit code 1, warnings one line each
    (:func:`warnings_as_lines`), with the progress bar of :func:`show_progress`. ``options``
    go to ``compute`` as they are (``devices``, ``splits``). Returns ``(arrays, summary)``.
    """
    store = None
    if out is not None:
        hold_run_out(outputs, out, args)
        store = open_run_store(out, settings, args, meta, int(data.images.shape[0]))
    with user_errors(1), warnings_as_lines(command):
        return analysis.compute(
            clf, data, settings, store=store, progress=show_progress(), **options
        )


def write_results(
    out_dir: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    summary: Mapping,
    *,
    args: argparse.Namespace | None = None,
) -> Path:
    """Write ``out_dir/results.npz`` (``arrays``) and ``out_dir/summary.json`` atomically.

    Each file is written to a temporary name in ``out_dir`` and renamed, so a reader never
    sees a half-written file. ``summary.json`` holds ``summary`` plus ``settings`` (the
    parsed options when ``args`` is given), ``geomrobust_version`` and ``created``.
    Non-finite floats are written as the strings ``"inf"``, ``"-inf"``, ``"nan"``.
    """
    out = Path(out_dir).expanduser()
    record = dict(summary)
    if args is not None:
        record.setdefault("settings", options_record(args))
    record.setdefault("geomrobust_version", __version__)
    record.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:  # a failed write (disk full, a folder in the way, ...) is one line, exit code 1
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"--out {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        save_npz(out / "results.npz", arrays)
        try:
            save_json(out / "summary.json", record)
        except OSError:
            # summary.json marks a complete result: no results.npz without its summary
            with contextlib.suppress(OSError):
                (out / "results.npz").unlink()
            raise
    except OSError as e:
        raise CLIError(os_message(e), 1) from e
    return out
