"""Argument types and the option groups shared by the ``geomrobust`` subcommands.

Only :mod:`argparse` and the standard library: the parsers are built, and ``--help``
answered, before JAX or NumPy is imported (the subcommands' implementations are imported on
dispatch, :mod:`geomrobust.cli`).

* argument types (:func:`positive_int`, :func:`positive_float`, :func:`seed`,
  :func:`parse_resize`, ...) raise :class:`argparse.ArgumentTypeError`, which argparse prints
  as one line with exit code 2;
* :func:`add_analysis_command` makes the parser of an analysis subcommand with
  :func:`add_model_data_args`, the options every analysis command takes (checkpoint,
  dataset, split, number of examples, output directory, chunk size, PRNG key), with
  :func:`add_box_arg`, :func:`add_deepfool_args`, :func:`add_devices_arg`,
  :func:`add_resume_args` and :func:`add_distributed_args` for the commands that need them.
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "DEFAULT_DATASET",
    "OneLineParser",
    "add_analysis_command",
    "add_box_arg",
    "add_deepfool_args",
    "add_devices_arg",
    "add_distributed_args",
    "add_model_data_args",
    "add_n_arg",
    "add_resize_arg",
    "add_resume_args",
    "finite_float",
    "nonnegative_float",
    "nonnegative_int",
    "parse_box",
    "parse_devices",
    "parse_resize",
    "positive_float",
    "positive_int",
    "seed",
]

DEFAULT_DATASET = "digits"


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are ONE line ``prog: error: ...`` on stderr, exit code 2
    (the ``geomrobust`` command's parsers and every script under ``scripts/``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


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
    add_resize_arg(g, "resize images to S×S or H×W; None means the checkpoint's setting")
    g.add_argument("--split", default="test", help="dataset split (a TFDS split name)")
    add_n_arg(g, "use the first N examples of the split (deterministic); None means all")
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


def add_n_arg(group, help: str) -> None:
    """``--n N``: how many examples (a positive integer, default None; ``help`` says what
    None means)."""
    group.add_argument("--n", metavar="N", type=positive_int, default=None, help=help)


def add_resize_arg(group, help: str) -> None:
    """``--resize S|HxW`` (:func:`parse_resize`, default None; ``help`` says what None
    means)."""
    group.add_argument("--resize", metavar="S|HxW", type=parse_resize, default=None, help=help)


def add_analysis_command(
    subparsers, name: str, *, help: str, description: str, devices: bool, resume: bool
) -> argparse.ArgumentParser:
    """The parser of the analysis subcommand ``name`` (``geomrobust NAME``): the options of
    :func:`add_model_data_args` and :func:`add_distributed_args`, with ``--devices``
    (:func:`add_devices_arg`) and ``--restart`` (:func:`add_resume_args`) where asked; each
    option's help shows its default."""
    p = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = add_model_data_args(p)
    if devices:
        add_devices_arg(g)
    if resume:
        add_resume_args(p)
    add_distributed_args(p)
    return p


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
