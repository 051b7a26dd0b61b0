"""``geomrobust import-torch`` then the other commands on the imported checkpoint, offline: a
RobustBench-layout WRN-16-1 (PyTorch fixture) and CIFAR-size images from a ``.npz`` file."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.cli import main
from geomrobust.models import SMOOTH_ACTIVATIONS

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
                "--n",
                "2",  # two points: a WRN's curvature at a scale is many HVPs on the CPU
                "--scale",
                "0.05",
                "--samples",
                "4",
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
    measured at a scale and the page says why (one example: the curvature at a scale of a
    WRN is many HVPs on the CPU, and test_commands_run_on_the_imported_checkpoint checks its
    numbers on two)."""
    ckpt, data = imported
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(ckpt), "--dataset", str(data), "--quick",
                 "--n", "1", "--stages", "accuracy", "margins", "curvature",
                 "--out", str(out)]) == 0  # fmt: skip
    rec = json.loads((out / "results.json").read_text())
    (name,) = rec["models"]
    curv = rec["sections"]["curvature"][name]
    assert not curv["smooth_network"] and curv["scale"] > 0
    assert rec["settings"]["deepfool"]["bounds"] == [0.0, 1.0]
    assert "piecewise linear" in (out / "index.html").read_text()


# ----------------------------------------------------------------------------- every family

TINY = '{"widths": [4, 8, 16, 32]}'
SMALL = '{"widths": [8, 16, 32, 64]}'
CIFAR100 = ["--mean", "0.5071 0.4865 0.4409", "--std", "0.2673 0.2564 0.2762"]
DM_WRN = ["--depth", "10", "--widen-factor", "1", "--activation", "swish", "--num-classes", "100"]
# family -> (fixture, import-torch options); tiny networks of every --arch import-torch takes
FAMILIES = {
    "wide_resnet": ("wrn_16_1", ["--depth", "16", "--widen-factor", "1"]),
    "preact_resnet18": (
        "preact18_w4_bn_outsc",
        ["--config", '{"widths": [4, 8, 16, 32], "bn_before_fc": true, "out_shortcut": true}'],
    ),
    "resnet18": ("resnet18_w8", ["--config", SMALL]),
    "resnet50": ("resnet50_w4", ["--config", TINY]),
    "dm_wide_resnet": (
        "dm_wrn_10_1_swish",
        [*DM_WRN, *CIFAR100],
    ),
    "dm_preact_resnet": ("dm_preact18_w4_swish", ["--activation", "swish", "--config", TINY]),
}


# the report's curvature stage on one smooth family (exact curvature); a ReLU family's (at a
# scale) is test_report_on_the_imported_checkpoint's WRN: the stage is the same code for every
# family, and each family's rebuild is checked on its logits and in `margins`
REPORTED = {"dm_preact_resnet"}


def _import(arch, out, capsys):
    fixture, options = FAMILIES[arch]
    code = main(["import-torch", str(FIXTURES / f"{fixture}.safetensors"), "--arch", arch,
                 *options, "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    return fixture


def _cifar_like(path, num_classes=10, n=4):
    rng = np.random.default_rng(1)
    np.savez(path, test_images=rng.random((n, 32, 32, 3), np.float32),
             test_labels=rng.integers(0, num_classes, n), num_classes=num_classes)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def cifar_npz(tmp_path_factory):
    return _cifar_like(tmp_path_factory.mktemp("data") / "cifar_like.npz")


# the report's margin-histogram legend is empty when no example is classified correctly (the
# random-weight fixtures classify random images at chance): matplotlib warns
@pytest.mark.filterwarnings("ignore:No artists with labels found")
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_every_family_rebuilds_in_every_command(arch, tmp_path, capsys):
    """import-torch, then the checkpoint rebuilt from its model_config (what every command
    does) gives the PyTorch logits and runs `margins`; the report's curvature stage on a
    smooth family (REPORTED)."""
    ckpt = tmp_path / "ckpt"
    fixture = _import(arch, ckpt, capsys)
    loaded = gr.load_checkpoint(ckpt)
    cifar_npz = _cifar_like(tmp_path / "data.npz", loaded.metadata["num_classes"], n=2)
    assert loaded.metadata["model_config"]["name"] in gr.models.MODELS
    with np.load(FIXTURES / f"{fixture}_io.npz") as z:
        images, ref = np.transpose(z["images"], (0, 2, 3, 1)), z["logits"]
    if not arch.startswith("dm_"):  # they normalise inside; the fixture fed plain images
        out = np.asarray(loaded.model(jnp.asarray(images[..., :32, :32, :])))
        if images.shape[1:3] == (32, 32):
            assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    else:
        out = np.asarray(loaded.model(jnp.asarray(images)))
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    data = ["--checkpoint", str(ckpt), "--dataset", str(cifar_npz), "--chunk-size", "2"]
    assert main(["margins", *data, "--method", "deepfool", "--out", str(tmp_path / "m"),
                 "--no-plots"]) == 0, capsys.readouterr().err  # fmt: skip
    res = np.load(tmp_path / "m" / "results.npz")
    assert res["margin"].shape == (2,) and np.all(np.isfinite(res["margin"][res["converged"]]))
    # the Swish networks are smooth: their curvature is measured exactly, the ReLU ones' at
    # a scale (the report reads the activation from the checkpoint's model_config)
    smooth = loaded.metadata["model_config"].get("activation") in SMOOTH_ACTIVATIONS
    assert smooth == arch.startswith("dm_")
    if arch not in REPORTED:
        return
    rep = tmp_path / "rep"
    assert main(["report", *data[:4], "--quick", "--n", "2", "--stages", "margins",
                 "curvature", "--out", str(rep)]) == 0, capsys.readouterr().err  # fmt: skip
    rec = json.loads((rep / "results.json").read_text())
    (name,) = rec["models"]
    curv = rec["sections"]["curvature"][name]
    assert curv["smooth_network"] == smooth
    assert curv["n_converged"] > 0 if smooth else curv["scale"] > 0


def test_curvature_slice_and_diagnose_on_an_imported_torchvision_resnet(
    cifar_npz, tmp_path, capsys
):
    """The remaining commands on a family whose configuration name ('torchvision_resnet')
    differs from its --arch: they rebuild it from the checkpoint."""
    ckpt = tmp_path / "r18"
    _import("resnet18", ckpt, capsys)
    assert "--mean/--std" in capsys.readouterr().err  # torchvision weights are normalised
    data = ["--checkpoint", str(ckpt), "--dataset", str(cifar_npz), "--chunk-size", "4"]
    assert main(["curvature", *data, "--n", "2", "--num", "2", "--fooling-samples", "0",
                 "--scale", "0.05", "--samples", "4", "--out", str(tmp_path / "c"),
                 "--no-plots"]) == 0, capsys.readouterr().err  # fmt: skip
    assert main(["slice", *data[:4], "--n", "2", "--index", "0", "--resolution", "5",
                 "--planes", "adversarial", "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert main(["diagnose", *data, "--n", "2", "--what", "linearity", "--eps", "0.03", "--out",
                 str(tmp_path / "d")]) == 0, capsys.readouterr().err  # fmt: skip


def test_import_time_errors(tmp_path, capsys):
    """An --input-shape the network cannot take fails at import, and DeepMind's keys under
    --arch wide_resnet name their layout."""
    wrn = str(FIXTURES / "wrn_16_1.safetensors")
    code = main(["import-torch", wrn, "--arch", "wide_resnet", "--depth", "16",
                 "--widen-factor", "1", "--input-shape", "16", "16", "3",
                 "--out", str(tmp_path / "a")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cannot take input_shape (16, 16, 3)" in err and "8x8 window" in err
    assert not (tmp_path / "a").exists()
    dm = str(FIXTURES / "dm_wrn_10_1_relu.safetensors")
    code = main(["import-torch", dm, "--arch", "wide_resnet", "--depth", "10",
                 "--widen-factor", "1", "--out", str(tmp_path / "b")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--arch dm_wide_resnet" in err and "DeepMind" in err
    code = main(["import-torch", dm, "--arch", "dm_wide_resnet", "--depth", "10",
                 "--widen-factor", "1", "--out", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and "warning: no --mean/--std" in err and "CIFAR-10" in err
    assert main(["import-torch", wrn, "--arch", "wide_resnet", "--activation", "swish",
                 "--out", str(tmp_path / "d")]) == 2  # fmt: skip
