"""``geomrobust margins`` end to end on a tiny checkpoint: files, summary, plots, errors."""

import json

import numpy as np
import pytest

from geomrobust.cli import main


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


def test_margins_best_records_the_search_and_the_ratio(checkpoint, tmp_path, capsys):
    """``--method best``: the minimum over DeepFool, FMN and C&W, never above DeepFool's."""
    out = tmp_path / "best"
    argv = ["margins", "--checkpoint", str(checkpoint), "--n", "12", "--out", str(out),
            "--method", "best", "--fmn-steps", "20", "--cw-steps", "20",
            "--cw-binary-steps", "2"]  # fmt: skip
    assert main(argv) == 0
    res = np.load(out / "results.npz")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["searches"] == ["deepfool", "fmn", "cw"]
    assert res["margins"].shape == (3, 12)
    ok = res["converged"]
    assert ok.all()
    np.testing.assert_array_less(res["margin"][ok] - 1e-6, res["margins"][0][ok])
    np.testing.assert_allclose(
        res["margin"][ok], np.linalg.norm(res["perturbation"].reshape(12, -1), axis=1)[ok],
        rtol=1e-5,
    )  # fmt: skip
    assert (res["deepfool_ratio"][ok & (res["margin"] > 0)] >= 1).all()
    assert summary["deepfool_ratio"]["n"] > 0
    assert abs(sum(summary["found_by"].values()) - 1) < 1e-9
    assert (out / "margins.png").stat().st_size > 0
    assert "DeepFool/minimal ratio median" in capsys.readouterr().out
