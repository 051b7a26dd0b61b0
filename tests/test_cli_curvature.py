"""`geomrobust curvature`, `slice` and `nads` end to end (in-process, tiny settings), the
plot functions they use, and `geomrobust curvature` compiling once per run, not per chunk."""

import json
import logging

import jax
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from geomrobust.cli import main
from geomrobust.models import create_model
from geomrobust.plot._curvature import (
    plot_curvature_spectrum,
    plot_singular_values,
    plot_spectral_density,
)
from geomrobust.plot._nads import plot_accuracy_map, plot_nads
from geomrobust.plot._slices import plot_loss_surface, plot_slice
from geomrobust.train import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained smooth LeNet on digits (8x8x1): geometry does not need accuracy."""
    path = tmp_path_factory.mktemp("ckpt") / "lenet"
    model = create_model("lenet", (8, 8, 1), 10, key=jax.random.key(0), channels=[4, 8],
                         activation="softplus")  # fmt: skip
    save_checkpoint(path, model, {"dataset": "digits", "resize": None})
    return path


def test_curvature_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "curv"
    code = main(["curvature", "--checkpoint", str(checkpoint), "--n", "4", "--num", "3",
                 "--box", "none", "--out", str(out), "--fooling-samples", "4"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = np.load(out / "results.npz")
    summary = json.loads((out / "summary.json").read_text())
    m = res["values"].shape[0]
    assert 1 <= m <= 4 and res["values"].shape == (m, 3)
    assert np.all(np.diff(np.abs(res["values"]), axis=1) <= 1e-6)
    assert summary["num_boundary_points"] == m and summary["settings"]["num"] == 3
    assert 0 <= summary["fooling_rate_isotropic"] <= 1
    assert (out / "curvature_spectrum.png").stat().st_size > 0


class _Compiles(logging.Handler):
    """The "Compiling ..." records of ``jax_log_compiles`` (jitted programs and eager ops)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        if record.getMessage().startswith("Compiling"):
            self.names.append(record.getMessage().split(" with ")[0])


def test_curvature_command_compiles_once_per_run(tmp_path, monkeypatch, capsys):
    """10 examples in chunks of 3 (the last one padded): every program compiles while the
    first chunk runs, nothing while the next three run."""
    from geomrobust.io import ChunkStore

    path = tmp_path / "ckpt"  # an architecture of its own: nothing compiled for it yet
    model = create_model("lenet", (8, 8, 1), 10, key=jax.random.key(0), channels=[3, 5],
                         activation="softplus")  # fmt: skip
    save_checkpoint(path, model, {"dataset": "digits", "resize": None})
    counter, marks, save = _Compiles(), [], ChunkStore.save

    def saving(self, index, arrays):  # chunk `index` is computed: how much has compiled
        marks.append(len(counter.names))
        return save(self, index, arrays)

    monkeypatch.setattr(ChunkStore, "save", saving)
    logger = logging.getLogger("jax")
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        code = main(["curvature", "--checkpoint", str(path), "--n", "10", "--chunk-size", "3",
                     "--num", "2", "--fooling-samples", "0", "--no-plots", "--box", "none",
                     "--out", str(tmp_path / "out")])  # fmt: skip
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(counter)
        logger.setLevel(level)
    assert code == 0, capsys.readouterr().err
    assert len(marks) == 4 and marks[0] > 0, marks  # the first chunk compiled the programs
    assert marks[-1] == marks[0], f"compiled after the first chunk: {counter.names[marks[0] :]}"


def test_slice_and_nads_commands(checkpoint, tmp_path, capsys):
    out = tmp_path / "slice"
    code = main(["slice", "--checkpoint", str(checkpoint), "--n", "3", "--index", "1",
                 "--resolution", "9", "--planes", "adversarial", "tangent",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = np.load(out / "results.npz")
    assert res["labels_1_adversarial"].shape == (9, 9)
    assert (out / "slice_1_tangent.png").exists() and (out / "loss_1_adversarial.png").exists()
    out = tmp_path / "nads"
    code = main(["nads", "--model", "mlp", "--config", '{"widths": [8]}', "--input-shape",
                 "4x4", "--num-networks", "12", "--batch", "8", "--num", "4", "--out",
                 str(out), "--accuracy-map", "--map-stride", "2", "--map-train", "64",
                 "--map-test", "64", "--map-steps", "5", "--map-chunk", "4"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = np.load(out / "results.npz")
    assert res["eigenvectors"].shape == (4, 4, 4, 1) and res["map_grid"].shape == (4, 4)
    assert np.all(np.diff(res["eigenvalues"]) <= 0)
    assert (out / "accuracy_map.png").exists() and (out / "nads_fourier.png").exists()
    # errors are one line and exit code 2
    assert main(["nads", "--config", "[1]", "--out", str(out)]) == 2
    assert main(["slice", "--checkpoint", str(checkpoint), "--n", "2", "--index", "5"]) == 2


def test_plots_take_arrays_and_label_axes():
    vals = np.array([[0.5, -0.3, 0.1], [0.4, -0.2, 0.05]])
    _, ax = plot_curvature_spectrum(vals)
    assert ax.get_xlabel() and ax.get_ylabel()
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), np.median(np.abs(vals), 0))
    _, ax = plot_singular_values(np.array([1.0, 0.5, 0.1]))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 0.5, 0.1])
    _, ax = plot_spectral_density(np.linspace(0, 1, 5), np.ones((2, 5)))
    assert ax.get_xlabel() and ax.get_ylabel()
    _, ax = plot_slice(np.zeros((3, 4), int), np.arange(4.0), np.arange(3.0), np.ones((2, 2)))
    assert ax.get_xlabel() and ax.get_ylabel()
    _, ax = plot_loss_surface(np.ones((3, 4)), np.arange(4.0), np.arange(3.0))
    _, axes = plot_nads(np.random.default_rng(0).standard_normal((3, 4, 4, 1)), [3, 2, 1])
    assert axes.size == 3 and axes.flat[0].get_title() == "λ=3"
    _, ax = plot_accuracy_map(np.full((4, 4), 0.75))
    assert "75%" in ax.get_title()
    g = np.arange(16.0).reshape(4, 4)  # frequencies 0, 2, 4, 6 of an 8×8 grid (stride 2)
    full = np.full((8, 8), np.nan)
    full[::2, ::2] = g
    _, ax = plot_accuracy_map(full, stride=2, centered=True)
    order = [2, 3, 0, 1]  # signed -4, -2, 0, 2: the zero frequency in the middle
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), g[np.ix_(order, order)])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-4", "-2", "0", "2"]
    full = np.full((32, 32), 0.5)  # stride 3 does not divide 32: 30 is the frequency -2
    _, ax = plot_accuracy_map(full, stride=3, centered=True)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[:2] == ["-14", "-11"] and "-2" in ticks and "-3" not in ticks
    with pytest.raises(ValueError, match="labels"):
        plot_slice(np.zeros((3, 3)), np.arange(4.0), np.arange(3.0))
