"""Resumable CLI runs: kill ``geomrobust margins`` / ``curvature`` mid-run (SIGKILL, SIGINT),
rerun the same command, and get results bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geomrobust.cli import main
from geomrobust.io import load_npz, settings_hash

# Runs the CLI in a subprocess, pausing after each chunk it writes (and saying so on stdout),
# so the test can interrupt it at a known point.
WRAPPER = textwrap.dedent(
    """
    import signal, sys, time
    # a user's terminal delivers Ctrl-C to a default handler; a pytest-xdist worker may start
    # its children with SIGINT ignored (inherited across exec), which would make it a no-op
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from geomrobust.io import _chunks
    save = _chunks.ChunkStore.save
    def slow(self, i, arrays):
        out = save(self, i, arrays)
        print(f"saved {i}", flush=True)
        # short sleeps: the main thread runs bytecode every 0.1 s, so a SIGINT that the kernel
        # delivers to another (XLA) thread still raises KeyboardInterrupt here, promptly
        for _ in range(300):
            time.sleep(0.1)
        return out
    _chunks.ChunkStore.save = slow
    from geomrobust.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _interrupt(argv, sig, tmp_path, after_chunk=0):
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    env = dict(os.environ, JAX_ENABLE_X64="0", GEOMROBUST_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, str(script), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:
            if line.strip() == f"saved {after_chunk}":
                proc.send_signal(sig)
                break
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code


def _same(a_dir, b_dir):
    a, b = load_npz(a_dir / "results.npz"), load_npz(b_dir / "results.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resuming"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_margins_resume_after_interrupt(checkpoint, tmp_path, sig, capsys):
    common = ["--checkpoint", str(checkpoint), "--n", "12", "--chunk-size", "4", "--no-plots"]
    argv = ["margins", *common, "--out", str(tmp_path / "run")]
    code = _interrupt(argv, sig, tmp_path)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    chunks = sorted(p.name for p in (tmp_path / "run" / "chunks").glob("chunk-*.npz"))
    assert chunks == ["chunk-00000.npz"]  # interrupted after the first of three chunks
    assert not (tmp_path / "run" / "results.npz").exists()

    # resuming with other settings refuses (exit 1, one line), unless --restart
    assert main([*argv, "--max-iter", "7"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings (deepfool_steps: 50 -> 7)" in err[0]
    assert "--restart" in err[0]

    assert main(argv) == 0  # the same command resumes
    assert main(["margins", *common, "--out", str(tmp_path / "ref")]) == 0
    _same(tmp_path / "run", tmp_path / "ref")
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"checkpoint_sha256"' in summary and '"chunk_size": 4' in summary

    assert main([*argv, "--max-iter", "7", "--restart"]) == 0


def test_curvature_resume_after_sigkill(checkpoint, tmp_path):
    common = [
        "--checkpoint", str(checkpoint), "--n", "6", "--chunk-size", "3", "--no-plots",
        "--num", "2", "--fooling-samples", "0", "--method", "dense",
    ]  # fmt: skip
    argv = ["curvature", *common, "--out", str(tmp_path / "run")]
    assert _interrupt(argv, signal.SIGKILL, tmp_path) == -signal.SIGKILL
    assert [p.name for p in (tmp_path / "run" / "chunks").glob("chunk-*.npz")] == [
        "chunk-00000.npz"
    ]
    assert main(argv) == 0
    assert main(["curvature", *common, "--out", str(tmp_path / "ref")]) == 0
    _same(tmp_path / "run", tmp_path / "ref")
    res = load_npz(tmp_path / "run" / "results.npz")
    assert np.isfinite(res["values"][res["converged"]]).all()


def _as_previous_release(chunks, new_to_old):
    """Rewrite the chunk store ``chunks`` as the previous release wrote it: the settings under
    their old names in ``store.json``, and every chunk file naming that record's digest."""
    meta = json.loads((chunks / "store.json").read_text())
    meta["settings"] = {new_to_old.get(k, k): v for k, v in meta["settings"].items()}
    meta["settings_sha256"] = settings_hash(meta["settings"])
    (chunks / "store.json").write_text(json.dumps(meta))
    for path in chunks.glob("chunk-*.npz"):
        with np.load(path) as z:
            arrays = dict(z)
        arrays["__settings_sha256__"] = np.asarray(meta["settings_sha256"])
        np.savez(path, **arrays)
    return meta["settings_sha256"]


def test_a_run_of_the_previous_release_resumes(checkpoint, tmp_path, capsys):
    """A folder whose store.json names settings by their old fields (max_iter, docs/api.md
    section 6) resumes: its chunks are read back (not recomputed, not refused)."""
    common = ["--checkpoint", str(checkpoint), "--n", "8", "--chunk-size", "4", "--no-plots"]
    run = tmp_path / "run"
    argv = ["margins", *common, "--out", str(run)]
    assert main(argv) == 0
    ref = load_npz(run / "results.npz")
    digest = _as_previous_release(run / "chunks", {"deepfool_steps": "max_iter"})
    # a chunk read back, not recomputed: its (altered) numbers come through
    first = run / "chunks" / "chunk-00000.npz"
    with np.load(first) as z:
        arrays = dict(z)
    arrays["margin"] = arrays["margin"] + 1.0
    np.savez(first, **arrays)
    (run / "results.npz").unlink()

    assert main(argv) == 0
    res = load_npz(run / "results.npz")
    np.testing.assert_array_equal(res["margin"][:4], ref["margin"][:4] + 1.0)
    np.testing.assert_array_equal(res["margin"][4:], ref["margin"][4:])
    assert json.loads((run / "chunks" / "store.json").read_text())["settings_sha256"] == digest

    # the old name with another value is still another run: refused, naming it
    capsys.readouterr()
    assert main([*argv, "--deepfool-steps", "7"]) == 1
    assert "other settings" in capsys.readouterr().err


def _strip(path, names, **changes):
    """Rewrite the chunk file ``path`` without the arrays ``names`` (as a release before
    them wrote it; its settings digest is kept), with ``changes`` applied."""
    with np.load(path) as z:
        arrays = {k: v for k, v in z.items() if k not in names}
    for k, fn in changes.items():
        arrays[k] = fn(arrays[k])
    np.savez(path, **arrays)


def test_a_run_from_before_status_codes_resumes(checkpoint, tmp_path):
    """A run folder written before status codes existed (its chunks have no ``status``)
    resumes: its chunks get SUCCESS where converged and UNKNOWN elsewhere, the chunks
    computed now their own codes, and the summary counts both (docs/api.md section 2)."""
    from geomrobust import Status

    common = ["--checkpoint", str(checkpoint), "--n", "12", "--chunk-size", "4", "--no-plots"]
    run = tmp_path / "run"
    argv = ["margins", *common, "--out", str(run)]
    assert main(argv) == 0
    ref = load_npz(run / "results.npz")
    assert ref["status"].dtype == np.int8 and (ref["status"] == Status.SUCCESS).all()
    chunks = run / "chunks"
    # chunk 0: no status, and its example 1 did not converge; chunk 1: no status; chunk 2
    # missing (computed by the resumed run, with its own status)
    first = chunks / "chunk-00000.npz"
    with np.load(first) as z:
        conv = z["converged"].copy()
    conv[1] = False
    _strip(first, {"status"}, converged=lambda c: conv, margin=lambda m: np.where(conv, m, np.inf))
    _strip(chunks / "chunk-00001.npz", {"status"})
    (chunks / "chunk-00002.npz").unlink()
    (run / "results.npz").unlink()

    assert main(argv) == 0
    res = load_npz(run / "results.npz")
    expected = ref["status"].copy()
    expected[1] = Status.UNKNOWN
    assert res["status"].dtype == np.int8
    np.testing.assert_array_equal(res["status"], expected)
    np.testing.assert_array_equal(res["converged"], res["status"] == Status.SUCCESS)
    np.testing.assert_array_equal(res["margin"][8:], ref["margin"][8:])  # recomputed
    summary = json.loads((run / "summary.json").read_text())
    status = summary["status"] if "status" in summary else summary["margins"]["status"]
    assert status == {"SUCCESS": 11, "UNKNOWN": 1}


def test_status_of_chunks_from_before_status_codes():
    """Every margin analysis's chunk gets its status arrays from its success fields: DeepFool,
    SparseFool, best (``converged``), PGD (``success`` per radius), random subspaces
    (``converged`` per draw and ``minimal_converged``); a chunk that has them is unchanged."""
    from geomrobust import Status
    from geomrobust.analyses.margins import _with_status

    s, u = Status.SUCCESS, Status.UNKNOWN
    got = _with_status({"margin": np.ones(2), "converged": np.array([True, False])})
    np.testing.assert_array_equal(got["status"], np.array([s, u], np.int8))
    assert got["status"].dtype == np.int8 and "minimal_status" not in got
    got = _with_status({"success": np.array([[True, False, False]])})  # (C, E)
    np.testing.assert_array_equal(got["status"], [[s, u, u]])
    got = _with_status({"converged": np.array([[True, False]]),
                        "minimal_converged": np.array([False])})  # fmt: skip
    np.testing.assert_array_equal(got["status"], [[s, u]])
    np.testing.assert_array_equal(got["minimal_status"], [u])
    saved = np.array([Status.MAX_STEPS], np.int8)
    got = _with_status({"converged": np.array([False]), "status": saved})
    np.testing.assert_array_equal(got["status"], saved)
