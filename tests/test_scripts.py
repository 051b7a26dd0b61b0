"""scripts/: each analysis script answers --help and completes a tiny run with its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"


def _run(args, tmp_path, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg", GEOMROBUST_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    "name", ["curvature_analysis", "subspace_margins", "nads", "fourier_map", "robust_features"]
)
def test_help(name, tmp_path):
    r = _run([str(SCRIPTS / f"{name}.py"), "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--key" in r.stdout and "--out" in r.stdout


RUNS = {
    "curvature_analysis": (
        ["--quick-model", "--n", "6", "--num", "4", "--loss-eigs", "3"],
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
    "robust_features": (
        [
            "--epochs",
            "1",
            "--resize",
            "8",
            "--robustify-steps",
            "3",
            "--attack-steps",
            "3",
            "--n-eval",
            "20",
        ],
        ["robust_features.png"],
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
    if name == "robust_features":  # every claim is decided, every accuracy is recorded
        assert len(summary["claims"]) == 4
        assert 0 <= summary["D: PGD-AT"]["pgd_accuracy"] <= 1
    if name == "fourier_map":  # a linear model learns every direction (published: 100 %)
        assert summary["models"]["logreg"]["map_mean_accuracy"] > 0.97
