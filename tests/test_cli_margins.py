"""``geomrobust margins`` end to end on a tiny checkpoint: files, summary, plots, errors."""

import json

import jax
import numpy as np
import pytest

from geomrobust.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from geomrobust.models import create_model
    from geomrobust.train import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mlp"
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0))
    save_checkpoint(
        path,
        model,
        {"model": "mlp", "input_shape": [8, 8, 1], "num_classes": 10, "dataset": "digits"},
    )
    return path


@pytest.mark.parametrize(
    "extra,keys,png",
    [
        ([], {"margin", "converged", "perturbation"}, "margins.png"),
        (["--method", "pgd", "--norm", "inf", "--steps", "2"], {"accuracy"}, None),
        (["--subspaces", "dct", "--block", "4", "--stride", "4"], {"margin"}, None),
    ],
)
def test_margins_command_writes_results(checkpoint, tmp_path, extra, keys, png, capsys):
    out = tmp_path / "out"
    argv = ["margins", "--checkpoint", str(checkpoint), "--n", "12", "--out", str(out)]
    code = main(argv + extra + ([] if png else ["--no-plots"]))
    assert code == 0
    res = np.load(out / "results.npz")
    assert keys <= set(res.files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 12 and "settings" in summary
    if "--subspaces" in extra:
        assert res["margin"].shape == (2, 12)  # 8x8 image, K = T = 4: two diagonal blocks
    if png:
        assert (out / png).stat().st_size > 0
        ok = res["converged"]
        np.testing.assert_allclose(
            res["margin"][ok],
            np.linalg.norm(res["perturbation"].reshape(12, -1), axis=1)[ok],
            rtol=1e-5,
        )
    assert "results written" in capsys.readouterr().out


def test_margins_command_errors(checkpoint, tmp_path, capsys):
    argv = ["margins", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]
    assert main([*argv, "--method", "pgd", "--subspaces", "dct"]) == 2
    assert "--subspaces needs" in capsys.readouterr().err
    assert main(["margins", "--checkpoint", str(tmp_path / "missing")]) == 1
