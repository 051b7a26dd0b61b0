"""Several processes on JAX's multi-controller runtime, through the CLI.

Two local CPU processes join one run (``--coordinator 127.0.0.1:PORT --num-processes 2
--process-id I``, a free port, short timeouts); the chunks are shared out, the results meet
through ``process_allgather`` and process 0 writes them: ``margins``, ``curvature`` and a
report stage must give files bit-identical to a one-process run. A process killed mid-run
must end the other one with one clear line, in bounded time, and a rerun must resume from
the chunks both wrote.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geomrobust.engine import process_chunks

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 500  # seconds: a run that takes longer has hung (a loaded 2-core CI machine)

# One Python process runs several commands (one JAX start-up): argv lists as JSON.
WORKER = textwrap.dedent(
    """
    import json, sys
    from geomrobust.cli import main
    for argv in json.loads(sys.argv[1]):
        rc = main(argv)
        print("rc", rc, flush=True)
        if rc:
            sys.exit(rc)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), GEOMROBUST_PROGRESS="0")
    # the suite's XLA flags (tests/conftest.py), without a simulated device count: one
    # CPU device per process
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    return env


def _start(commands, extra=()):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps([[*c, *extra] for c in commands])],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dist(i: int, port: int):
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id",
            str(i), "--heartbeat-timeout", "60"]  # fmt: skip


def _finish(procs):
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            logs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return logs


def _commands(ckpt, out: Path):
    data = ["--checkpoint", str(ckpt), "--n", "11", "--chunk-size", "3"]  # 4 chunks: 2 + 2
    return [
        ["margins", *data, "--out", str(out / "margins"), "--no-plots"],
        [
            "curvature",
            *data,
            "--out",
            str(out / "curvature"),
            "--num",
            "2",
            "--fooling-samples",
            "4",
            "--no-plots",
        ],
        [
            "report",
            "--checkpoint",
            str(ckpt),
            "--n",
            "5",
            "--quick",
            "--stages",
            "margins",
            "--out",
            str(out / "report"),
        ],
    ]


def _npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_two_processes_through_the_cli_match_one(checkpoint, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # the one-process run first: the two processes then load its compiled programs from the
    # session's persistent compilation cache instead of both compiling them at once
    logs = _finish([_start(_commands(checkpoint, one))])
    port = _free_port()
    logs += _finish([_start(_commands(checkpoint, two), _dist(i, port)) for i in range(2)])
    for rc, out, err in logs:
        assert rc == 0, err[-3000:]
        assert out.count("rc 0") == 3
    for cmd in ("margins", "curvature"):
        a, b = _npz(one / cmd / "results.npz"), _npz(two / cmd / "results.npz")
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{cmd} {k}")
        sa = json.loads((one / cmd / "summary.json").read_text())
        sb = json.loads((two / cmd / "summary.json").read_text())
        for k in ("settings", "created", "model", "metadata"):
            sa.pop(k, None), sb.pop(k, None)
        assert sa == sb
        # each process wrote its own chunks, with the layout in the settings
        for i, chunks in ((0, [0, 1]), (1, [2, 3])):
            store = two / cmd / f"chunks-process-{i}-of-2"
            assert sorted(p.name for p in store.glob("chunk-*.npz")) == [
                f"chunk-{c:05d}.npz" for c in chunks
            ]
            meta = json.loads((store / "store.json").read_text())["settings"]
            assert (meta["process_index"], meta["process_count"]) == (i, 2)
        assert not (two / cmd / "chunks").exists()
    ra = json.loads((one / "report" / "results.json").read_text())["sections"]
    rb = json.loads((two / "report" / "results.json").read_text())["sections"]
    assert ra == rb
    a = _npz(one / "report" / "stages" / "margins.npz")
    b = _npz(two / "report" / "stages" / "margins.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_killed_process_ends_the_other_and_a_rerun_resumes(checkpoint, tmp_path):
    out = tmp_path / "m"
    cmd = ["margins", "--checkpoint", str(checkpoint), "--n", "40", "--chunk-size", "2",
           "--out", str(out), "--no-plots", "--slots", "2"]  # fmt: skip
    port = _free_port()
    procs = [_start([cmd], _dist(i, port)) for i in range(2)]
    store1 = out / "chunks-process-1-of-2"
    t0 = time.monotonic()
    try:
        while not list(store1.glob("chunk-*.npz")):
            assert time.monotonic() - t0 < TIMEOUT, "process 1 wrote no chunk"
            assert procs[1].poll() is None, procs[1].communicate()[1][-3000:]
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        rc0, _, err0 = _finish(procs[:1])[0]
        waited = time.monotonic() - t_kill
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    procs[1].wait()
    lines = [ln for ln in err0.splitlines() if ln.strip()]
    assert rc0 == 1, err0[-3000:]
    assert lines[-1].startswith("geomrobust margins: error: lost contact with another process")
    assert "rerun the same command to resume" in lines[-1]
    assert waited < 60  # no hang: the lost connection is noticed at the next collective
    assert not (out / "results.npz").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in store1.glob("chunk-*.npz")}
    assert 0 < len(kept) < 10  # killed mid-run
    port = _free_port()
    procs = [_start([cmd], _dist(i, port)) for i in range(2)]
    for rc, _, err in _finish(procs):
        assert rc == 0, err[-3000:]
    ref = _start([[*cmd[:-5], "--out", str(tmp_path / "ref"), "--no-plots", "--slots", "2"]])
    for rc, _, err in _finish([ref]):  # after the pair: its programs come from the cache
        assert rc == 0, err[-3000:]
    for name, mtime in kept.items():  # resumed: the finished chunks were read, not rewritten
        assert (store1 / name).stat().st_mtime_ns == mtime
    a, b = _npz(out / "results.npz"), _npz(tmp_path / "ref" / "results.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_changed_process_layout_is_refused(checkpoint, tmp_path):
    from geomrobust.cli import main

    out = tmp_path / "m"
    (out / "chunks-process-1-of-3").mkdir(parents=True)
    (out / "chunks-process-1-of-3" / "store.json").write_text("{}")
    argv = ["margins", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(out),
            "--no-plots"]  # fmt: skip
    assert main(argv) == 1
    assert main([*argv, "--restart"]) == 0
    assert not (out / "chunks-process-1-of-3").exists()


@pytest.mark.parametrize("n", [0, 1, 7, 22])
@pytest.mark.parametrize("p", [1, 2, 3, 8])
def test_process_chunks_tile_the_chunks(n, p):
    blocks = [process_chunks(n, process_index=i, process_count=p) for i in range(p)]
    covered = [c for b in blocks for c in b]
    assert covered == list(range(n))  # contiguous, ordered, disjoint
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_process_chunks_defaults_and_errors():
    assert process_chunks(10) == range(10)  # one process: everything
    with pytest.raises(ValueError, match="process_index"):
        process_chunks(10, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="n_chunks"):
        process_chunks(-1)


def test_initialize_errors():
    from geomrobust.parallel import initialize

    with pytest.raises(ValueError, match="both --num-processes and --process-id"):
        initialize("127.0.0.1:1", 2, None)
    with pytest.raises(ValueError, match="--process-id must lie"):
        initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match="--coordinator"):
        initialize(None, 2, 0)
