"""`geomrobust train` end to end (in-process) and the shared CLI helpers (cli/_args, _loading,
_outputs)."""

import argparse
import json

import jax
import numpy as np
import pytest

from geomrobust.cli import main
from geomrobust.cli._args import add_model_data_args, parse_resize
from geomrobust.cli._loading import load_model_and_data
from geomrobust.cli._outputs import write_results
from geomrobust.data import load_dataset
from geomrobust.models import as_classifier, model_config
from geomrobust.train import evaluate, load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short `geomrobust train` run shared by the tests below."""
    out = tmp_path_factory.mktemp("train") / "lenet"
    argv = [
        "train",
        "--model",
        "lenet",
        "--width",
        "4",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--key",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    return out, main(argv)


def test_train_writes_a_loadable_checkpoint(trained, capsys):
    out, code = trained
    assert code == 0
    ckpt = load_checkpoint(out)
    meta = ckpt.metadata
    assert meta["model"] == "lenet" and meta["model_config"]["channels"] == [4, 8]
    assert meta["dataset"] == "digits" and meta["resize"] is None and meta["epochs"] == 1
    assert meta["method"] == "standard" and meta["train_settings"]["optimizer"] == "sgd"
    assert meta["train_settings"]["key"] == 3 and meta["input_shape"] == [8, 8, 1]
    assert len(meta["history"]["train_loss"]) == 1
    # the recorded accuracy is that of the saved parameters on the test split, exactly
    test = load_dataset("digits", "test")
    from geomrobust.models import pure_apply

    apply, params = pure_apply(ckpt.model)
    res = evaluate(apply, params, test.images, test.labels)
    assert res.accuracy == meta["accuracy"] and res.accuracy > 0.2  # above chance (0.1)


def test_train_refuses_to_overwrite_and_rejects_bad_values(trained, capsys):
    out, _ = trained
    capsys.readouterr()
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--model", "lenet", "--width", "3", "--out", str(out.parent / "x")]) == 1
    assert "two conv widths" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a bad argument: exit code 2 (issue 17; it was 1)
        main(["train", "--lr", "-1", "--out", str(out.parent / "y")])
    assert e.value.code == 2
    assert "--lr: expected a positive finite number" in capsys.readouterr().err
    assert not (out.parent / "x").exists() and not (out.parent / "y").exists()


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--epochs", "--optimizer", "--schedule", "--method", "--width"):
        assert option in text
    assert "(default: lenet)" in text and "(default: standard)" in text
    for argv in (
        ["train", "--optimizer", "rmsprop", "--out", "x"],
        ["train", "--epochs", "0", "--out", "x"],
        ["train", "--method", "magic", "--out", "x"],
        ["train", "--model", "vit", "--out", "x"],
        ["train", "--resize", "big", "--out", "x"],
        ["train", "--epochs"],  # a missing value
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        assert "error" in capsys.readouterr().err


def test_default_out_never_reuses_a_directory(tmp_path):
    from geomrobust.cli._train_run import default_out

    args = argparse.Namespace(model="lenet", dataset="digits")
    assert default_out(args, tmp_path) == tmp_path / "lenet-digits"
    (tmp_path / "lenet-digits").mkdir()
    (tmp_path / "lenet-digits-2").mkdir()
    assert default_out(args, tmp_path) == tmp_path / "lenet-digits-3"


def _parser():
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_data_args(parser)
    return parser


def test_load_model_and_data(trained):
    out, _ = trained
    args = _parser().parse_args(["--checkpoint", str(out), "--n", "10"])
    logits_fn, data, meta = load_model_and_data(args)
    full = load_dataset("digits", "test")
    np.testing.assert_array_equal(data.images, full.images[:10])  # the first n, in order
    np.testing.assert_array_equal(data.labels, full.labels[:10])
    ref = as_classifier(load_checkpoint(out).model)
    np.testing.assert_array_equal(np.asarray(logits_fn(data.images)), np.asarray(ref(data.images)))
    assert meta["eval_dataset"] == "digits" and len(meta["checkpoint_sha256"]) == 64
    assert model_config(load_checkpoint(out).model) == meta["model_config"]
    # inputs that do not fit the model, and a missing checkpoint, fail with one clear line
    bad = _parser().parse_args(["--checkpoint", str(out), "--resize", "12", "--n", "2"])
    with pytest.raises(ValueError, match=r"expects \(8, 8, 1\); pass --resize"):
        load_model_and_data(bad)
    with pytest.raises(ValueError, match="no --checkpoint given"):
        load_model_and_data(argparse.Namespace(checkpoint=None))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_data(_parser().parse_args(["--checkpoint", str(out) + "-missing"]))


def test_parse_resize():
    assert parse_resize("32") == 32 and parse_resize("28x24") == (28, 24)
    for bad in ("0", "x", "3x4x5", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_resize(bad)


def test_write_results_is_complete_and_atomic(tmp_path):
    args = _parser().parse_args(["--checkpoint", "c", "--n", "5"])
    arrays = {"margin": np.array([0.5, np.inf]), "label": np.arange(2, dtype=np.int32)}
    summary = {"median": np.float32(0.5), "max": float("inf"), "jax": jax.numpy.ones(2)}
    out = write_results(tmp_path / "r", arrays, summary, args=args)
    assert sorted(p.name for p in out.iterdir()) == ["results.npz", "summary.json"]
    with np.load(out / "results.npz") as f:
        np.testing.assert_array_equal(f["margin"], arrays["margin"])
        assert f["label"].dtype == np.int32
    s = json.loads((out / "summary.json").read_text())
    assert s["median"] == 0.5 and s["max"] == "inf" and s["jax"] == [1.0, 1.0]
    assert (
        s["settings"]["n"] == 5 and s["settings"]["checkpoint"] == "c" and "geomrobust_version" in s
    )
    with pytest.raises(TypeError, match="dtype object"):
        write_results(tmp_path / "r", {"bad": np.array([None])}, {})


def test_parser_defaults_agree_with_the_library():
    """The parsers copy a few library constants (importing them would import JAX before
    --help): they must agree."""
    from geomrobust.analyses import diagnose
    from geomrobust.cli import _diagnose, _report, _train
    from geomrobust.report import STAGES
    from geomrobust.train._settings import DEFAULT_LR

    assert _train.DEFAULT_LR == DEFAULT_LR
    assert _report.STAGES == tuple(STAGES)
    assert _diagnose.WHAT == tuple(diagnose.WHAT)
    assert _diagnose.DEFAULT_WHAT == tuple(diagnose.DEFAULT_WHAT)
