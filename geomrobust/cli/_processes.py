"""A subcommand run as one of several JAX processes (``--distributed``, JAX's multi-controller
runtime; docs/performance.md): :func:`start_processes` joins the run and checks that every
process runs the same command; every process computes its share of the chunks, the results
meet through collectives, and process 0 writes (:func:`writes_outputs`); each process has its
own chunk store (:func:`store_folder`), which records the process layout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from geomrobust.engine._processes import ProcessFailure, agree, allgather_blocks
from geomrobust.io._chunks import _is_own_chunk
from geomrobust.parallel import initialize

from ._errors import CLIError, user_errors
from ._locks import OutputLocks
from ._settings import options_record

__all__ = [
    "agree_all",
    "hold_run_out",
    "layout",
    "other_layouts",
    "remove_store",
    "start_processes",
    "store_folder",
    "writes_outputs",
]


def layout(args: argparse.Namespace) -> tuple[int, int]:
    return getattr(args, "process_layout", (0, 1))


def store_folder(out: str | os.PathLike, index: int, count: int) -> Path:
    """The chunk store of process ``index`` of ``count``: ``OUT/chunks`` for one process,
    ``OUT/chunks-process-I-of-P`` for several (each process writes only its own)."""
    name = "chunks" if count == 1 else f"chunks-process-{index}-of-{count}"
    return Path(out).expanduser() / name


def other_layouts(out: Path, index: int, count: int) -> list[Path]:
    """Chunk stores in ``out`` written by runs with another process layout."""
    found = []
    for p in sorted(out.glob("chunks*")):
        if not p.is_dir() or p == store_folder(out, index, count):
            continue
        if p.name == "chunks" or p.name.startswith("chunks-process-"):
            if p.name.startswith("chunks-process-") and p.name.endswith(f"-of-{count}"):
                continue  # another process of this layout
            found.append(p)
    return found


def remove_store(folder: Path) -> None:
    """Remove a chunk store's own files (chunk files with a digest, ``store.json``) and the
    folder when nothing else is left; files that vanish meanwhile (another process of a
    shared filesystem removing them too) are fine."""
    for q in list(folder.glob("chunk-*.npz")):
        if _is_own_chunk(q):
            q.unlink(missing_ok=True)
    (folder / "store.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def agree_all(ok: bool, what: str) -> None:
    try:
        agree(ok, what)
    except ProcessFailure as e:
        raise CLIError(str(e), 1) from e


def start_processes(args: argparse.Namespace) -> tuple[int, int]:
    """Join the multi-process run asked for by ``--distributed`` / ``--coordinator``
    (:func:`geomrobust.parallel.initialize`) and check that every process runs the same
    command; ``(process_index, process_count)``, ``(0, 1)`` without those options. The
    layout is kept on ``args`` (``args.process_layout``)."""
    wanted = (
        getattr(args, "distributed", False)
        or getattr(args, "coordinator", None) is not None
        or getattr(args, "num_processes", None) is not None
        or getattr(args, "process_id", None) is not None
    )
    if not wanted:
        args.process_layout = (0, 1)
        return args.process_layout
    with user_errors(2, "--distributed: "):
        layout = initialize(
            args.coordinator,
            args.num_processes,
            args.process_id,
            heartbeat_timeout=args.heartbeat_timeout,
        )
    args.process_layout = layout
    if layout[1] > 1:
        _same_command(args)
    return layout


def _same_command(args: argparse.Namespace) -> None:
    """Every process was started with the same options (but its own ``--process-id``):
    one collective, which also connects the processes before any work starts."""
    record = {
        k: v
        for k, v in options_record(args).items()
        if k not in ("process_id", "process_layout", "coordinator")
    }
    text = json.dumps(record, sort_keys=True, default=str).encode()
    digest = np.frombuffer(hashlib.sha256(text).digest(), np.uint8)[None]
    try:
        (got,) = allgather_blocks([digest], 1)
    except ProcessFailure as e:
        raise CLIError(str(e), 1) from e
    differ = [j for j in range(got.shape[0]) if not np.array_equal(got[j, 0], digest[0])]
    if differ:
        raise CLIError(
            f"processes {differ} were started with other options than process "
            f"{args.process_layout[0]}: start every process with the same command",
            2,
        )


def writes_outputs(args: argparse.Namespace) -> bool:
    """Whether this process writes the results, summary and figures (process 0)."""
    return layout(args)[0] == 0


def hold_run_out(outputs: OutputLocks, out: str | os.PathLike, args: argparse.Namespace) -> Path:
    """:meth:`OutputLocks.hold` for a command's ``--out``: process 0 locks ``out``, another
    process of a ``--distributed`` run its own chunk store folder (it writes nothing else)."""
    i, p = layout(args)
    if i == 0:
        return outputs.hold(out)
    outputs.hold(store_folder(out, i, p))
    return Path(out).expanduser()
