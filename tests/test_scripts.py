"""scripts/: each analysis script answers --help and completes a tiny run with its outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"


def _run(args, tmp_path, timeout=300):
    # GEOMROBUST_CACHE_DIR: the session's cache (tests/conftest.py), so the report's quick
    # model is trained once and compiled programs are shared with the other tests
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )


#: every analysis script (make_torch_fixtures.py needs PyTorch and never runs in CI)
ANALYSES = sorted(p.stem for p in SCRIPTS.glob("*.py") if p.stem != "make_torch_fixtures")


@pytest.mark.parametrize("name", ANALYSES)
def test_help(name, capsys):
    """Every script answers --help (in this process: its parser is built before any heavy
    import) with an explicit --key and --out, and documents every option."""
    mod = _script_module(name)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage:") and "--key" in text and "--out" in text
    options = set(re.findall(r"(?m)^\s+(--[a-z][a-z0-9-]*)", text))
    assert len(options) >= 3, text


RUNS = {
    "curvature_analysis": (
        ["--quick-model", "--n", "3", "--num", "2", "--loss-eigs", "2"],
        ["curvature_spectrum.png", "shared_directions.png"],
    ),
    "subspace_margins": (
        ["--epochs", "3", "--n", "8", "--variants", "original", "flipped"],
        ["subspace_margins.png"],
    ),
    # the Fourier accuracy map itself is exercised by notebooks/04_nads.py and test_nads.py
    "nads": (
        ["--networks", "16", "--num", "4", "--map-stride", "0"],
        ["nads.png", "nads_fourier.png"],
    ),
    "fourier_map": (
        ["--models", "logreg", "--size", "8", "--stride", "4", "--test", "100"],
        ["accuracy_maps.png"],
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_tiny_run(name, tmp_path):
    args, pngs = RUNS[name]
    out = tmp_path / "out"
    r = _run([str(SCRIPTS / f"{name}.py"), *args, "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["key"] == 0
    assert (out / "results.npz").is_file()
    for p in pngs:
        assert (out / p).stat().st_size > 1000, p
    if name == "fourier_map":  # a linear model learns every direction (published: 100 %)
        assert summary["models"]["logreg"]["map_mean_accuracy"] > 0.97


def test_fourier_map_authors_recipe(tmp_path):
    """``--recipe authors`` records the authors' settings (PyTorch's LogReg initialisation,
    SGD at 0.5 decaying linearly, clip 0.5, epoch shuffling, 1,580 steps) and its logistic
    regression learns every direction, as published."""
    out = tmp_path / "out"
    args = ["--recipe", "authors", "--models", "logreg", "--size", "16", "--stride", "8"]
    r = _run([str(SCRIPTS / "fourier_map.py"), *args, "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())["models"]["logreg"]
    assert s["settings"]["map_schedule"] == "linear" and s["settings"]["map_clip"] == 0.5
    assert s["settings"]["map_sampling"] == "epoch" and s["settings"]["map_steps"] == 1580
    assert s["map_directions"] == 4 and s["map_min_accuracy"] > 0.97
    record = json.loads((out / "logreg" / "chunks" / "store.json").read_text())
    assert "pytorch" in json.dumps(record)


def _script_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_robust_features_pieces():
    """scripts/robust_features.py without its training runs (the full run trains six models;
    a tiny end-to-end run cost about two minutes of CI): the feature matching reaches its
    target from another image, the linear probe learns a separable task, claims are decided."""
    import jax.numpy as jnp
    import numpy as np

    rf = _script_module("robust_features")
    rng = np.random.default_rng(0)
    w = jnp.asarray(np.linalg.qr(rng.normal(size=(16, 16)))[0])  # orthogonal: well posed

    def features(z):  # an invertible linear feature map: the matching solution is z = x
        return z.reshape(z.shape[0], -1) @ w

    x = jnp.asarray(rng.uniform(0.2, 0.8, size=(4, 4, 4, 1)))
    starts = jnp.asarray(rng.uniform(0, 1, size=(4, 4, 4, 1)))
    z, rel = rf._robustify(features, x, starts, steps=600, lr=0.02)
    assert float(jnp.max(rel)) < 1e-2 and float(jnp.max(jnp.abs(z - x))) < 2e-2
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    xt = rng.normal(size=(200, 4, 4, 1))
    yt = (xt[:, 0, 0, 0] > 0).astype(np.int64)
    acc = rf._probe(lambda v: v.reshape(v.shape[0], -1), xt[:100], yt[:100], xt[100:], yt[100:],
                    key=None, steps=1000)  # fmt: skip
    assert acc > 0.9

    def acc_of(c, p):
        return {"clean_accuracy": c, "pgd_accuracy": p}

    r = {
        "D: standard training": acc_of(0.95, 0.1),
        "D_R (robust features): standard training": acc_of(0.9, 0.3),
        "D_R control (standard features): standard training": acc_of(0.9, 0.05),
        "D_det (non-robust features, labels y+1): standard training": acc_of(0.15, 0.1),
        "linear_probe_accuracy": {"a": {"robust features": 0.9, "standard features": 0.8}},
    }
    assert list(rf.verdicts(r).values()) == [True, True, False, True]


ALL_SCRIPTS = [
    "beyond_security",
    "catastrophic_overfitting",
    "curvature_analysis",
    "fourier_map",
    "nads",
    "robust_features",
    "robust_vs_standard",
    "subspace_margins",
]
# Bad arguments of every script: ONE `error:` line naming the option, exit code 2, as the
# `geomrobust` command (before: `--n -3` analysed 352 examples, `--stride 0` or `--eps -1`
# ended in a traceback after the imports or the training).
BAD_SCRIPT_ARGS = {
    "beyond_security --n -3": (["--n", "-3"], "--n: expected a positive integer"),
    "beyond_security --key x": (["--key", "x"], "--key: expected an integer seed"),
    "catastrophic_overfitting --lr nan": (["--lr", "nan"], "--lr: expected a positive finite"),
    "catastrophic_overfitting --epochs 0": (["--epochs", "0"], "--epochs: expected a positive"),
    "curvature_analysis --n 0": (["--quick-model", "--n", "0"], "--n: expected a positive"),
    "curvature_analysis --loss-eigs -1": (
        ["--quick-model", "--loss-eigs", "-1"],
        "--loss-eigs: expected an integer >= 0",
    ),
    "fourier_map --stride 0": (["--stride", "0"], "--stride: expected a positive integer"),
    "fourier_map --chunk 0": (["--chunk", "0"], "--chunk: expected a positive integer"),
    "nads --map-stride -1": (["--map-stride", "-1"], "--map-stride: expected an integer >= 0"),
    "nads --networks 0": (["--networks", "0"], "--networks: expected a positive integer"),
    "robust_features --eps -1": (["--eps", "-1"], "--eps: expected a positive finite number"),
    "robust_features --n-eval 0": (["--n-eval", "0"], "--n-eval: expected a positive integer"),
    "robust_vs_standard --eps inf": (["--eps", "inf"], "--eps: expected a positive finite"),
    "subspace_margins --block 0": (["--block", "0"], "--block: expected a positive integer"),
    "subspace_margins --bogus": (["--bogus"], "unrecognized arguments: --bogus"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCRIPT_ARGS))
def test_script_bad_arguments_are_one_line_exit_2(case, tmp_path, capsys):
    """Only the argument parsing runs (in this process; nothing is trained)."""
    from geomrobust.cli import run_script

    name = case.split()[0]
    argv, text = BAD_SCRIPT_ARGS[case]
    mod = _script_module(name)
    with pytest.raises(SystemExit) as info:
        run_script(mod.main, [*argv, "--out", str(tmp_path / "o")], prog=f"{name}.py")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(err) == 1, err
    assert ": error: " in err[0] and text in err[0], err  # prog: argv[0]


def test_every_script_uses_the_command_rules():
    for name in ALL_SCRIPTS:
        text = (SCRIPTS / f"{name}.py").read_text()
        assert "run_script(main)" in text and "OneLineParser(" in text, name
        assert "argparse.ArgumentParser(" not in text and "type=int" not in text, name


@pytest.mark.parametrize("name", ["beyond_security", "curvature_analysis"])
def test_script_missing_checkpoint_is_one_line(name, tmp_path, capsys):
    """A missing --checkpoint: one line naming it, exit code 2 (was a traceback)."""
    from geomrobust.cli import run_script

    mod = _script_module(name)
    argv = ["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    code = run_script(mod.main, argv, prog=f"{name}.py")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "error:" in err[0] and "missing" in err[0] and "does not exist" in err[0]


def test_script_error_through_the_interpreter_has_no_traceback(tmp_path):
    r = _run([str(SCRIPTS / "fourier_map.py"), "--stride", "0"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "fourier_map.py: error: argument --stride: expected a positive integer, got '0'"
    ]
