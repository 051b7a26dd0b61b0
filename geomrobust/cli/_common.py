"""Helpers shared by the ``geomrobust`` subcommands.

A subcommand parses its options, turns them into the settings of its analysis
(:mod:`geomrobust.analyses`), calls the analysis once and writes what it returns:

* :class:`CLIError` is the one error type below :func:`geomrobust.cli.main`, which prints it
  as ONE line ``geomrobust <command>: error: ...`` and exits with its code (2: bad arguments
  or inputs, 1: failures at run time); :func:`user_errors` turns library errors into it;
* :func:`add_model_data_args` adds the options every analysis command takes (checkpoint,
  dataset, split, number of examples, output directory, chunk size, PRNG key);
* :func:`load_model_and_data` turns them into ``(classifier, ArrayDataset, metadata)``;
* :func:`settings_from_args` builds an analysis' settings from the parsed options;
* :func:`show_progress` says whether to draw the progress bars
  (:func:`geomrobust.engine.progress_bar`, through the analyses' ``progress=True``);
* :func:`write_results` writes ``results.npz`` + ``summary.json`` atomically
  (:mod:`geomrobust.io`), :func:`save_figure` a PNG;
* :func:`add_resume_args` / :func:`open_run_store` make a long run resumable: its results are
  written per chunk (``OUT/chunks``, :class:`geomrobust.io.ChunkStore`) and the same command
  resumes after an interruption; other settings refuse unless ``--restart``;
* :func:`add_distributed_args` / :func:`start_processes` run a command as one of several
  JAX processes (``--distributed``): every process computes its share of the chunks, the
  results meet through collectives, process 0 writes (:func:`writes_outputs`), each
  process's chunk store records the process layout;
* :func:`locked_out` holds the lock of ``--out`` for the whole run, so a second run into the
  same folder stops at once with "another run holds OUT" (exit code 1).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from geomrobust.io import atomic_write, lock_folder, save_json, save_npz

__all__ = [
    "CLIError",
    "OneLineParser",
    "add_distributed_args",
    "add_model_data_args",
    "add_resume_args",
    "finite_float",
    "held_outputs",
    "hold_out",
    "load_model_and_data",
    "locked_out",
    "nonnegative_float",
    "nonnegative_int",
    "one_line",
    "open_run_store",
    "options_record",
    "os_message",
    "parse_resize",
    "positive_float",
    "positive_int",
    "run_script",
    "save_figure",
    "seed",
    "settings_from_args",
    "show_progress",
    "start_processes",
    "user_errors",
    "warnings_as_lines",
    "write_results",
    "writes_outputs",
]

DEFAULT_DATASET = "digits"


class CLIError(Exception):
    """An error of a subcommand: ``message`` is printed as one line, ``exit_code`` returned
    (2: bad arguments or inputs, 1: failures at run time)."""

    def __init__(self, message, exit_code: int = 1):
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.exit_code = int(exit_code)


#: Library errors a user's input can cause: reported as one line, never a traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, KeyError)


@contextlib.contextmanager
def user_errors(exit_code: int, prefix: str = "") -> Iterator[None]:
    """Turn the library errors of a block (:data:`USER_ERRORS`) into a :class:`CLIError`
    with ``exit_code``, the message prefixed by ``prefix`` (e.g. ``"--devices: "``)."""
    try:
        yield
    except CLIError:
        raise
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError):
            message = os_message(e)
        raise CLIError(f"{prefix}{message}", exit_code) from e


def os_message(e: OSError) -> str:
    """An ``OSError`` as one readable line: ``path: cause`` (no ``[Errno N]`` prefix)."""
    if not e.strerror:
        return one_line(e)
    names = [n for n in (e.filename, e.filename2) if n is not None]
    return one_line(" -> ".join(map(os.fspath, names)) + f": {e.strerror}" if names else e.strerror)


@contextlib.contextmanager
def warnings_as_lines(command: str) -> Iterator[None]:
    """Print the warnings of a block once each, as one line ``geomrobust <command>:
    warning: ...`` on stderr (a chunked analysis can warn once per chunk)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {one_line(w.message)}"
        if text not in seen:
            seen.add(text)
            print(f"geomrobust {command}: warning: {text}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are ONE line ``prog: error: ...`` on stderr, exit code 2
    (the ``geomrobust`` command's parsers and every script under ``scripts/``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


#: Errors of a script's inputs (a missing checkpoint, a bad setting): exit code 2.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, ImportError, FileNotFoundError,
                 NotADirectoryError, IsADirectoryError)  # fmt: skip


def run_script(main, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run a script's ``main(argv) -> int`` under the command's rules: a library error that the
    user's inputs caused (:data:`_INPUT_ERRORS`, or a :class:`CLIError` with its own code) is
    ONE line ``prog: error: ...`` with exit code 2, an environment fault (another
    ``OSError``, ``MemoryError``) one line with exit code 1, never a traceback. Use it as
    ``sys.exit(run_script(main))`` with an :class:`OneLineParser` for the arguments."""
    prog = prog or Path(sys.argv[0]).name
    try:
        return int(main(argv) or 0)
    except CLIError as e:
        print(f"{prog}: error: {one_line(e.message)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError):
            message = os_message(e)
        print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {os_message(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return 1


def one_line(message) -> str:
    """An error message as one line (a CLI error is one line on stderr)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def positive_int(text: str) -> int:
    """argparse type: an integer ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number(text: str, kind, ok, expected: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (ok(value) and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ``>= 0``."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number ``> 0``."""
    return _number(text, float, lambda v: v > 0, "a positive finite number")


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` refused)."""
    return _number(text, float, lambda v: True, "a finite number")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number ``>= 0``."""
    return _number(text, float, lambda v: v >= 0, "a finite number >= 0")


def seed(text: str) -> int:
    """argparse type: a PRNG seed, an integer in ``[-2**63, 2**63)``."""
    return _number(text, int, lambda v: -(2**63) <= v < 2**63, "an integer seed in [-2**63, 2**63)")


def parse_resize(text: str) -> int | tuple[int, int]:
    """argparse type: ``S`` (an S×S image) or ``HxW``."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"expected a size S or HxW (e.g. 32 or 28x28), got {text!r}"
        )
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def add_model_data_args(parser: argparse.ArgumentParser, *, checkpoint_required: bool = True):
    """Add ``--checkpoint --dataset --data-dir --resize --split --n --out --chunk-size --key``.

    ``--dataset`` and ``--resize`` default to what the checkpoint was trained on (its
    metadata), else ``digits`` at native size.
    """
    g = parser.add_argument_group("model and data")
    g.add_argument(
        "--checkpoint",
        metavar="DIR",
        required=checkpoint_required,
        help="checkpoint directory written by `geomrobust train --out DIR`",
    )
    g.add_argument(
        "--dataset",
        metavar="NAME",
        default=None,
        help=f"dataset to evaluate on; None means the checkpoint's dataset, else "
        f"{DEFAULT_DATASET!r} (digits, mnist, fashion_mnist, cifar10, svhn_cropped)",
    )
    g.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="TFDS data directory (None: $GEOMROBUST_DATA_DIR or ~/.cache/geomrobust/...)",
    )
    g.add_argument(
        "--resize",
        metavar="S|HxW",
        type=parse_resize,
        default=None,
        help="resize images to S×S or H×W; None means the checkpoint's setting",
    )
    g.add_argument("--split", default="test", help="dataset split (a TFDS split name)")
    g.add_argument(
        "--n",
        metavar="N",
        type=positive_int,
        default=None,
        help="use the first N examples of the split (deterministic); None means all",
    )
    g.add_argument("--out", metavar="DIR", default=None, help="directory for the results")
    g.add_argument(
        "--chunk-size",
        metavar="C",
        type=positive_int,
        default=128,
        help="examples per jitted chunk (bounds peak memory)",
    )
    g.add_argument("--key", metavar="INT", type=seed, default=0, help="PRNG seed")
    return g


def parse_devices(text: str) -> str | int:
    """argparse type: ``all`` or a positive number of devices."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a positive number of devices, got {text!r}"
        ) from None


def parse_box(text: str):
    """argparse type: ``auto``, ``none`` or ``LO,HI`` (the box of the searches)."""
    t = text.strip().lower()
    if t in ("auto", "none"):
        return t
    try:
        lo, hi = (float(v) for v in t.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or LO,HI, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"expected LO < HI, finite, got {text!r}")
    return (lo, hi)


def add_box_arg(group) -> None:
    """``--box auto|none|LO,HI``: the box every perturbed input must stay in."""
    group.add_argument(
        "--box",
        dest="bounds",
        metavar="auto|none|LO,HI",
        type=parse_box,
        default="auto",
        help="box of the searches: auto = [0, 1] when the images lie in [0, 1] (a perturbed "
        "image stays an image; a band with no boundary inside it is reported as such), none, "
        "or LO,HI",
    )


def add_deepfool_args(group) -> None:
    """``--overshoot --deepfool-steps``: the L2 DeepFool search (margins, boundary points)."""
    group.add_argument(
        "--overshoot",
        type=nonnegative_float,
        default=0.02,
        help="DeepFool overshoot η (the step is (1 + η) r)",
    )
    group.add_argument(
        "--deepfool-steps",
        "--max-iter",
        dest="deepfool_steps",
        type=positive_int,
        default=50,
        help="DeepFool steps (--max-iter: the old name)",
    )


def add_devices_arg(group) -> None:
    """``--devices all|N``: spread the chunks over local devices (results unchanged)."""
    group.add_argument(
        "--devices",
        metavar="all|N",
        type=parse_devices,
        default=None,
        help="run one --chunk-size chunk per device at a time on all (or the first N) local "
        "devices; results are bit-for-bit those of one device (default: one device). On the "
        "CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices",
    )


def cli_devices(args: argparse.Namespace) -> list | None:
    """The devices of ``--devices`` (None: one device). Raises ValueError naming the fix
    when more devices are asked for than exist."""
    from geomrobust.parallel import resolve_devices

    devs = resolve_devices(getattr(args, "devices", None))
    return devs if devs is not None and len(devs) > 1 else None


def load_model_and_data(args: argparse.Namespace):
    """Load ``args.checkpoint`` and the first ``args.n`` examples of the requested split.

    Returns
    -------
    (classifier, data, metadata)
        ``classifier`` the checkpoint's :class:`geomrobust.Classifier`;
        ``data`` an ``ArrayDataset`` (the first ``n`` examples, in dataset order);
        ``metadata`` the checkpoint's metadata plus ``checkpoint_path`` and
        ``checkpoint_sha256``, and the resolved ``eval_dataset`` / ``eval_resize`` /
        ``eval_split``.

    Raises
    ------
    ValueError, FileNotFoundError
        No ``--checkpoint``, an unreadable checkpoint, missing data, or data that does not
        fit the model; the message is one line that the subcommand can print.
    """
    from geomrobust.data import load_dataset
    from geomrobust.models import as_classifier
    from geomrobust.train import checkpoint_hash, load_checkpoint

    if not getattr(args, "checkpoint", None):
        raise ValueError(
            "no --checkpoint given: train a model first, e.g. "
            "`geomrobust train --dataset digits --model lenet --out runs/lenet`, then pass "
            "--checkpoint runs/lenet"
        )
    ckpt = load_checkpoint(args.checkpoint)
    meta = dict(ckpt.metadata)
    dataset = args.dataset or meta.get("dataset") or DEFAULT_DATASET
    resize = args.resize if args.resize is not None else meta.get("resize")
    if isinstance(resize, list):
        resize = tuple(resize)
    data = load_dataset(
        dataset, args.split, data_dir=getattr(args, "data_dir", None), resize=resize
    )
    n = getattr(args, "n", None)
    if n is not None:
        data = data._replace(images=data.images[:n], labels=data.labels[:n])
    expected = tuple(meta.get("input_shape") or ())
    if expected and tuple(data.images.shape[1:]) != expected:
        raise ValueError(
            f"dataset {dataset!r} (resize={resize}) has images of shape "
            f"{tuple(data.images.shape[1:])}, but the checkpoint {args.checkpoint} expects "
            f"{expected}; pass --resize or a matching --dataset"
        )
    if meta.get("num_classes") is not None and data.num_classes != meta["num_classes"]:
        raise ValueError(
            f"dataset {dataset!r} has {data.num_classes} classes, but the checkpoint "
            f"{args.checkpoint} has {meta['num_classes']} outputs"
        )
    meta.update(
        checkpoint_path=os.fspath(Path(args.checkpoint).absolute()),
        checkpoint_sha256=checkpoint_hash(args.checkpoint),
        eval_dataset=dataset,
        eval_resize=list(resize) if isinstance(resize, tuple) else resize,
        eval_split=args.split,
    )
    return as_classifier(ckpt.model), data, meta


def show_progress() -> bool | None:
    """True when the progress bars should show: stderr is a terminal, or
    ``$GEOMROBUST_PROGRESS`` is ``1`` (the rule of :func:`geomrobust.engine.progress_bar`);
    None otherwise (no bars)."""
    env = os.environ.get("GEOMROBUST_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes"):
        return True
    if env in ("0", "false", "no"):
        return None
    return True if sys.stderr.isatty() else None


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Write a matplotlib figure to ``path`` (PNG, tight bounding box) atomically and close
    it; a failed write is a :class:`CLIError` (exit code 1) naming the file and the cause."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    with user_errors(1):
        atomic_write(path, buf.getvalue())


@contextlib.contextmanager
def locked_out(out: str | os.PathLike, *, entry: bool = False) -> Iterator[Path]:
    """Hold the lock of the output folder ``out`` for a block (:func:`geomrobust.io.lock_folder`).

    A second run into the same ``out`` fails at once with a :class:`CLIError` (exit code 1)
    "another run holds OUT", without touching the first run's files. ``entry=True`` locks
    ``out`` as an entry of its parent (an output replaced as a whole: a checkpoint).
    """
    out = Path(out).expanduser()
    with contextlib.ExitStack() as stack:
        with user_errors(1):
            if entry:
                stack.enter_context(lock_folder(out.parent, what="--out", entry=out.name))
            else:
                stack.enter_context(lock_folder(out, what="--out"))
        yield out


_HELD: list = []  # [ExitStack, set of held paths] while main() runs a subcommand


@contextlib.contextmanager
def held_outputs() -> Iterator[None]:
    """The scope of :func:`hold_out`: the locks taken inside are released at its end
    (:func:`geomrobust.cli.main` runs every subcommand inside it)."""
    with contextlib.ExitStack() as stack:
        _HELD.append((stack, set()))
        try:
            yield
        finally:
            _HELD.pop()


def hold_out(out: str | os.PathLike, *, entry: bool = False) -> Path:
    """Take the lock of ``out`` (:func:`locked_out`) until the subcommand ends; returns ``out``.

    Call it as soon as the output path is known, before anything is read from or written to
    it. A second call for the same path is a no-op. Outside :func:`held_outputs` the lock is
    held until the process exits.
    """
    out = Path(out).expanduser()
    if not _HELD:
        _HELD.append((contextlib.ExitStack(), set()))
    stack, held = _HELD[-1]
    key = (os.fspath(out.absolute()), entry)
    if key not in held:
        stack.enter_context(locked_out(out, entry=entry))
        held.add(key)
    return out


def options_record(args: argparse.Namespace) -> dict:
    """The parsed options as a JSON-serializable dict (callables dropped)."""
    out = {}
    for k, v in vars(args).items():
        if callable(v):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def settings_from_args(cls, args: argparse.Namespace, **overrides):
    """The settings dataclass ``cls`` of an analysis from the options of the same names
    (lists become tuples), ``overrides`` taking precedence."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, f.name):
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def add_resume_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--restart``: discard partial results computed with other settings."""
    parser.add_argument(
        "--restart",
        "--overwrite",
        dest="restart",
        action="store_true",
        help="flag: start over, discarding the per-chunk results in OUT/chunks (by default an "
        "interrupted run resumes there, and a run with other settings refuses to mix results)",
    )


def _layout(args: argparse.Namespace) -> tuple[int, int]:
    return getattr(args, "process_layout", (0, 1))


def store_folder(out: str | os.PathLike, index: int, count: int) -> Path:
    """The chunk store of process ``index`` of ``count``: ``OUT/chunks`` for one process,
    ``OUT/chunks-process-I-of-P`` for several (each process writes only its own)."""
    name = "chunks" if count == 1 else f"chunks-process-{index}-of-{count}"
    return Path(out).expanduser() / name


def _other_layouts(out: Path, index: int, count: int) -> list[Path]:
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
    from geomrobust.analyses import settings_record
    from geomrobust.io import open_chunk_store

    i, p = _layout(args)
    record = settings_record(settings)
    for k in ("dataset", "resize", "split", "n"):
        if hasattr(args, k):
            record[k] = options_record(args)[k]
    record.update(num_examples=int(n), checkpoint_sha256=meta.get("checkpoint_sha256"))
    if p > 1:
        record.update(process_index=i, process_count=p)
    out = Path(out).expanduser()
    others = _other_layouts(out, i, p) if out.is_dir() else []
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
            _remove_store(q)
    if p > 1:
        _agree_all(error is None, "opening the chunk stores")
    if error is not None:
        raise error
    with user_errors(1):
        return open_chunk_store(store_folder(out, i, p), record, overwrite=bool(args.restart))


def _remove_store(folder: Path) -> None:
    """Remove a chunk store's own files (chunk files with a digest, ``store.json``) and the
    folder when nothing else is left; files that vanish meanwhile (another process of a
    shared filesystem removing them too) are fine."""
    from geomrobust.io._chunks import _is_own_chunk

    for q in list(folder.glob("chunk-*.npz")):
        if _is_own_chunk(q):
            q.unlink(missing_ok=True)
    (folder / "store.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _agree_all(ok: bool, what: str) -> None:
    from geomrobust.engine._processes import ProcessFailure, agree

    try:
        agree(ok, what)
    except ProcessFailure as e:
        raise CLIError(str(e), 1) from e


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    """``--distributed --coordinator --num-processes --process-id --heartbeat-timeout``."""
    g = parser.add_argument_group(
        "several processes (JAX multi-controller runtime; docs/performance.md)"
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="flag: run as one of several processes (one per host; start every process with "
        "the same command): the chunks are shared out, results meet through JAX collectives, "
        "process 0 writes the outputs. The layout is detected under SLURM, Open MPI and on "
        "cloud TPUs; elsewhere give --coordinator --num-processes --process-id",
    )
    g.add_argument(
        "--coordinator", metavar="HOST:PORT", default=None,
        help="address of process 0's coordination service (implies --distributed)",
    )  # fmt: skip
    g.add_argument(
        "--num-processes", metavar="P", type=positive_int, default=None,
        help="number of processes (with --process-id and --coordinator)",
    )  # fmt: skip
    g.add_argument(
        "--process-id", metavar="I", type=nonnegative_int, default=None,
        help="this process's index in [0, P)",
    )  # fmt: skip
    g.add_argument(
        "--heartbeat-timeout", metavar="S", type=positive_int, default=100,
        help="seconds after which a silent process counts as lost and every process stops",
    )  # fmt: skip


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
    from geomrobust.parallel import initialize

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
    import hashlib
    import json

    from geomrobust.engine._processes import ProcessFailure, allgather_blocks

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
    return _layout(args)[0] == 0


def hold_run_out(out: str | os.PathLike, args: argparse.Namespace) -> Path:
    """:func:`hold_out` for a command's ``--out``: process 0 locks ``out``, another process
    of a ``--distributed`` run its own chunk store folder (it writes nothing else)."""
    i, p = _layout(args)
    if i == 0:
        return hold_out(out)
    hold_out(store_folder(out, i, p))
    return Path(out).expanduser()


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
    from geomrobust import __version__

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
