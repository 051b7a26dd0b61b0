"""``geomrobust import-torch`` then the other commands on the imported checkpoint, offline: a
RobustBench-layout WRN-16-1 (PyTorch fixture) and CIFAR-size images from a ``.npz`` file."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.cli import main

# the module fixture is built once: every test of this module on one xdist worker
pytestmark = pytest.mark.xdist_group("cli_import_torch")

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
MEAN, STD = "0.4914 0.4822 0.4465", "0.2471 0.2435 0.2616"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    out = root / "wrn"
    code = main(["import-torch", str(FIXTURES / "wrn_16_1.safetensors"), "--arch", "wide_resnet",
                 "--depth", "16", "--widen-factor", "1", "--mean", MEAN, "--std", STD,
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rng = np.random.default_rng(0)
    data = root / "cifar_like.npz"
    np.savez(data, test_images=rng.random((6, 32, 32, 3), np.float32),
             test_labels=rng.integers(0, 10, 6), num_classes=10)  # fmt: skip
    return out, data


def test_checkpoint_holds_the_pytorch_model_and_its_normalization(imported):
    out, _ = imported
    ckpt = gr.load_checkpoint(out)
    meta = ckpt.metadata
    assert meta["method"] == "imported" and meta["model"] == "wide_resnet"
    assert len(meta["source"]["sha256"]) == 64 and meta["source"]["format"] == "safetensors"
    assert meta["model_config"]["mean"] == [float(v) for v in MEAN.split()]
    with np.load(FIXTURES / "wrn_16_1_io.npz") as z:
        images, logits = np.transpose(z["images"], (0, 2, 3, 1)), z["logits"]
    # the checkpoint normalizes inside: on images (x - mean)/std-inverted it gives the logits
    mean, std = (np.asarray([float(v) for v in t.split()], np.float32) for t in (MEAN, STD))
    pixels = images * std + mean  # the fixture's inputs were fed to PyTorch already normalized
    out_logits = np.asarray(ckpt.model(jnp.asarray(pixels)))
    assert np.abs(out_logits - logits).max() <= 1e-4 * np.abs(logits).max()


def test_commands_run_on_the_imported_checkpoint(imported, tmp_path):
    ckpt, data = imported
    common = ["--checkpoint", str(ckpt), "--dataset", str(data), "--chunk-size", "4"]
    assert main(["margins", *common, "--method", "deepfool", "--out", str(tmp_path / "m"),
                 "--no-plots"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["n"] == 6
    res = np.load(tmp_path / "m" / "results.npz")
    conv = res["converged"]
    assert conv.any() and np.all(np.isfinite(res["margin"][conv]))
    adv = np.load(data)["test_images"] + res["perturbation"]
    assert adv.min() >= 0.0 and adv.max() <= 1.0  # the image box, in pixel units
    # ReLU network: exact curvatures are flagged; at a scale they are measured
    assert main(["curvature", *common, "--num", "2", "--fooling-samples", "0",
                 "--out", str(tmp_path / "c"), "--no-plots"]) == 0  # fmt: skip
    c = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert c["num_piecewise_linear"] == c["num_boundary_points"] > 0
    assert "--scale" in c["note"]
    assert (
        main(
            [
                "curvature",
                *common,
                "--num",
                "2",
                "--fooling-samples",
                "0",
                "--scale",
                "0.05",
                "--samples",
                "16",
                "--out",
                str(tmp_path / "s"),
                "--no-plots",
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    r = np.load(tmp_path / "s" / "results.npz")
    assert s["scale"] == 0.05 and s["num_piecewise_linear"] == 0 and s["num_converged"] > 0
    ok = r["converged"]
    assert np.all(np.isfinite(r["values"][ok])) and np.all(r["stderr"][ok] > 0)


def test_import_errors_are_one_line(tmp_path, capsys):
    bad = main(["import-torch", str(FIXTURES / "wrn_16_1.safetensors"), "--arch",
                "wide_resnet", "--depth", "28", "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert bad == 2 and err.count("\n") == 1 and "missing" in err and "depth=16" in err
    assert main(["import-torch", str(tmp_path / "none.pt"), "--arch", "resnet18",
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert main(["import-torch", str(FIXTURES / "wrn_16_1.safetensors"), "--arch",
                 "wide_resnet", "--mean", "0.5", "--out", str(tmp_path / "z")]) == 2  # fmt: skip


def test_report_on_the_imported_checkpoint(imported, tmp_path):
    """``geomrobust report --checkpoint`` on an imported ReLU WideResNet: its curvature is
    measured at a scale and the page says why."""
    ckpt, data = imported
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(ckpt), "--dataset", str(data), "--quick",
                 "--n", "6", "--stages", "accuracy", "margins", "curvature",
                 "--out", str(out)]) == 0  # fmt: skip
    rec = json.loads((out / "results.json").read_text())
    (name,) = rec["models"]
    curv = rec["sections"]["curvature"][name]
    assert not curv["smooth_network"] and curv["scale"] > 0
    assert rec["settings"]["deepfool"]["bounds"] == [0.0, 1.0]
    assert "piecewise linear" in (out / "index.html").read_text()
