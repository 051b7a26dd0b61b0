"""No subcommand ends in a Python traceback on a user's mistake or an environment fault: each
one is run in-process (``geomrobust.cli.main``) with bad arguments and faults (an output path
that is a file, a folder in the way, disk full, another run holding ``--out``, a chunk folder
it did not create, damaged or crafted checkpoints, an empty dataset selection, a diverging
training run) and must exit with code 1 or 2 and ONE line on stderr naming the problem, and
leave nothing half-written. One subprocess checks ``ulimit -f`` (SIGXFSZ)."""

import errno
import json
import os
import shlex
import subprocess
import sys

import jax
import pytest

from geomrobust.cli import main
from geomrobust.io import lock_folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from geomrobust.models import create_model
    from geomrobust.train import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mlp"
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0), activation="softplus")
    save_checkpoint(path, model, {"dataset": "digits"})
    return path


def _edited(checkpoint, tmp_path, fn):
    import shutil

    dst = tmp_path / "edited"
    shutil.copytree(checkpoint, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    fn(meta)
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


def _file(tmp_path, checkpoint, monkeypatch):
    (tmp_path / "out").write_text("not a folder")
    return tmp_path / "out"


def _results_folder(tmp_path, checkpoint, monkeypatch):
    (tmp_path / "out" / "results.npz").mkdir(parents=True)
    return tmp_path / "out"


def _foreign_chunks(tmp_path, checkpoint, monkeypatch):
    (tmp_path / "out" / "chunks").mkdir(parents=True)
    (tmp_path / "out" / "chunks" / "thesis.tex").write_text("precious")
    return tmp_path / "out"


def _disk_full(monkeypatch):
    from geomrobust.io import _files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full)


M = ["margins", "--checkpoint", "CK", "--n", "4", "--chunk-size", "4", "--no-plots"]
C = ["curvature", "--checkpoint", "CK", "--n", "2", "--no-plots"]
S = ["slice", "--checkpoint", "CK", "--n", "1", "--resolution", "5", "--no-plots"]
D = ["diagnose", "--checkpoint", "CK", "--n", "2", "--what", "linearity", "--eps", "0.1"]
N = ["nads", "--num-networks", "2", "--num", "1", "--no-plots"]
R = ["report", "--checkpoint", "CK", "--n", "4", "--quick", "--stages", "accuracy"]
T = ["train", "--model", "mlp", "--epochs", "1"]
W = ["import-torch", "--arch", "resnet18", "--num-classes", "10"]

# name: (argv with OUT/CK placeholders, setup(tmp_path, checkpoint, monkeypatch) -> OUT or
#        None, exit code, text the one stderr line must hold)
CASES = {
    # bad arguments: exit 2 at parse time
    "train --lr inf": ([*T, "--lr", "inf"], None, 2, "--lr: expected a positive finite"),
    "train --lr -1": ([*T, "--lr", "-1"], None, 2, "--lr: expected a positive finite"),
    "train --weight-decay nan": ([*T, "--weight-decay", "nan"], None, 2, "finite number >= 0"),
    "train --momentum inf": ([*T, "--momentum", "inf"], None, 2, "finite number >= 0"),
    "train --eps nan": ([*T, "--method", "pgd", "--eps", "nan"], None, 2, "--eps: expected"),
    "train --monitor -1": ([*T, "--monitor", "-1"], None, 2, "integer >= 0"),
    "train --key 2**70": ([*T, "--key", str(2**70)], None, 2, "integer seed"),
    "diagnose --alpha nan": ([*D, "--alpha", "nan"], None, 2, "--alpha: expected a finite"),
    "diagnose --steps 0": ([*D, "--steps", "0"], None, 2, "positive integer"),
    "slice --index -1": ([*S, "--index", "-1"], None, 2, "--index: expected an integer >= 0"),
    "slice --extent inf": ([*S, "--extent", "inf"], None, 2, "positive finite"),
    "nads --map-lr nan": ([*N, "--map-lr", "nan"], None, 2, "positive finite"),
    "import-torch --std nan": ([*W, "w.pt", "--out", "o", "--std", "nan"], None, 2, "finite"),
    # the output path is a file
    "margins --out a file": ([*M, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "curvature --out a file": ([*C, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "slice --out a file": ([*S, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "diagnose --out a file": ([*D, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "nads --out a file": ([*N, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "report --out a file": ([*R, "--out", "OUT"], _file, 1, "exists and is not a folder"),
    "train --out a file": ([*T, "--out", "OUT"], _file, 1, "exists and is not empty"),
    # a folder where a results file goes; a disk that is full
    "margins results.npz is a folder": (
        [*M, "--out", "OUT"],
        _results_folder,
        1,
        "results.npz: it is a folder",
    ),
    "margins disk full": (
        [*M, "--out", "OUT"],
        lambda t, c, mp: _disk_full(mp) or t / "out",
        1,
        "no space left on the device",
    ),
    # another run holds --out (the lock is held by the test)
    "margins --out locked": ([*M, "--out", "OUT"], "lock", 1, "another run holds"),
    "curvature --out locked": ([*C, "--out", "OUT"], "lock", 1, "another run holds"),
    "slice --out locked": ([*S, "--out", "OUT"], "lock", 1, "another run holds"),
    "diagnose --out locked": ([*D, "--out", "OUT"], "lock", 1, "another run holds"),
    "nads --out locked": ([*N, "--out", "OUT"], "lock", 1, "another run holds"),
    "report --out locked": ([*R, "--out", "OUT"], "lock", 1, "another run holds"),
    "train --out locked": ([*T, "--out", "OUT"], "lock-entry", 1, "another run holds"),
    "import-torch --out locked": (
        [*W, "CK", "--out", "OUT"],
        "lock-entry",
        1,
        "another run holds",
    ),
    # a chunk folder it did not create
    "margins foreign chunks": (
        [*M, "--out", "OUT", "--restart"],
        _foreign_chunks,
        1,
        "not created by geomrobust",
    ),
    # untrusted checkpoints, an empty selection
    "margins string format_version": (
        [*M, "--checkpoint", "EDIT:format_version", "--out", "OUT"],
        None,
        1,
        "'format_version' must be an integer",
    ),
    "curvature edited activation": (
        [*C, "--checkpoint", "EDIT:activation", "--out", "OUT"],
        None,
        2,
        "does not match the hash recorded at save time",
    ),
    "report edited activation": (
        [*R, "--checkpoint", "EDIT:activation", "--out", "OUT"],
        None,
        2,
        "does not match the hash",
    ),
    "margins --split test[:0]": (
        [*M, "--split", "test[:0]", "--out", "OUT"],
        None,
        1,
        "selects no examples",
    ),
    "slice --split test[abc]": (
        [*S, "--split", "test[abc]", "--out", "OUT"],
        None,
        2,
        "cannot read the split",
    ),
    "import-torch missing weights": (
        [*W, "OUT/none.pt", "--out", "OUT/ck"],
        None,
        2,
        "no such file",
    ),
    # a diverging training run writes no checkpoint
    "train diverges": (
        [*T, "--lr", "1e12", "--batch-size", "256", "--monitor", "0", "--out", "OUT"],
        None,
        1,
        "training diverged",
    ),
}

EDITS = {
    "format_version": lambda m: m.update(format_version="2"),
    "activation": lambda m: m["model_config"].update(activation="relu"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_fault_is_one_line_and_an_exit_code(case, checkpoint, tmp_path, capsys, monkeypatch):
    argv, setup, code, text = CASES[case]
    out = tmp_path / "out"
    lock = None
    if setup == "lock":
        lock = lock_folder(out)
    elif setup == "lock-entry":
        lock = lock_folder(tmp_path, entry="out")
    elif setup is not None:
        out = setup(tmp_path, checkpoint, monkeypatch)

    def resolve(a):
        if a.startswith("EDIT:"):
            return str(_edited(checkpoint, tmp_path, EDITS[a[5:]]))
        return a.replace("OUT", str(out)).replace("CK", str(checkpoint))

    argv = [resolve(a) for a in argv]
    monkeypatch.setenv("GEOMROBUST_PROGRESS", "0")
    if lock is not None:
        lock.__enter__()
        # the healthy run's temporary file: the second run must not delete it
        healthy = (out if setup == "lock" else tmp_path) / f".results.npz.{os.getpid()}-ab.tmp"
        healthy.write_bytes(b"being written")
    before = _listing(tmp_path)
    try:
        try:
            got = main(argv)
        except SystemExit as e:
            got = e.code
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if ": error: " in line]
    assert got == code, err
    assert len(errors) == 1 and errors[-1] == err[-1], err
    assert err[-1].startswith("geomrobust") and text in err[-1], err
    assert not any("Traceback" in line for line in err), err
    # nothing half-written: no results, no checkpoint, no temporary file
    after = _listing(tmp_path)
    new = sorted(after - before)
    assert not [p for p in new if p.endswith((".tmp", "results.npz", "summary.json"))], new
    assert not [p for p in new if p.endswith("metadata.json")], new
    assert lock is None or healthy.read_bytes() == b"being written"


def _listing(root):
    return {os.fspath(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_file_size_limit_is_one_line_not_a_crash(checkpoint, tmp_path):
    """``ulimit -f``: the process is not killed by SIGXFSZ; the write fails with one line."""
    out = tmp_path / "out"
    env = dict(os.environ, JAX_ENABLE_X64="0", GEOMROBUST_PROGRESS="0", PYTHONDONTWRITEBYTECODE="1")
    argv = [a.replace("CK", str(checkpoint)) for a in M] + ["--out", str(out)]
    # ulimit -f 2: 1 KiB; store.json fits, results.npz (perturbations of 4 images) does not
    command = f"ulimit -f 2; exec {shlex.quote(sys.executable)} -m geomrobust {shlex.join(argv)}"
    proc = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env=env, timeout=300
    )
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, err)
    assert len(err) == 1 and "file too large" in err[0] and "cannot write" in err[0], err
    assert not (out / "results.npz").exists() and not list(out.rglob("*.tmp"))


def test_write_results_leaves_no_results_without_a_summary(tmp_path, monkeypatch, capsys):
    """Disk full while writing summary.json: results.npz (already renamed) is removed again,
    since summary.json marks a complete result; the error is one CLIError line, exit 1."""
    import numpy as np

    from geomrobust.cli import CLIError, _outputs
    from geomrobust.io import _files

    calls = []
    real = _files.os.fsync

    def full_on_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(_files.os, "fsync", full_on_second)
    with pytest.raises(CLIError, match=r"summary\.json: no space left") as info:
        _outputs.write_results(tmp_path / "r", {"margin": np.ones(3)}, {"median": 1.0})
    assert info.value.exit_code == 1 and "[Errno" not in info.value.message
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == []
