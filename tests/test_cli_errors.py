"""CLI errors: bad arguments exit with code 2 and ONE line on stderr; a missing dataset fails
fast offline; ``--help`` documents every option with its default."""

import argparse
import json
import time

import pytest

from geomrobust.cli import build_parser, main


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, [line for line in cap.err.splitlines() if line.strip()]


CK = "CHECKPOINT"
BAD_ARGS = {
    # name: (argv, expected error text)
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "no command": ([], "the following arguments are required: COMMAND"),
    "unknown option": (["margins", "--checkpoint", CK, "--bogus"], "unrecognized arguments"),
    "--n 0": (["margins", "--checkpoint", CK, "--n", "0"], "expected a positive integer"),
    "--n abc": (["margins", "--checkpoint", CK, "--n", "abc"], "expected a positive integer"),
    "--chunk-size -3": (
        ["curvature", "--checkpoint", CK, "--chunk-size", "-3"],
        "expected a positive integer",
    ),
    "--norm 1": (["margins", "--checkpoint", CK, "--norm", "1"], "invalid choice: '1'"),
    "--method cw": (["margins", "--checkpoint", CK, "--method", "cw"], "invalid choice: 'cw'"),
    "--overshoot -1": (
        ["margins", "--checkpoint", CK, "--overshoot", "-1"],
        "expected a finite number >= 0",
    ),
    "--overshoot nan": (
        ["curvature", "--checkpoint", CK, "--overshoot", "nan"],
        "expected a finite number >= 0",
    ),
    "--eps 0.1 -0.2": (
        ["margins", "--checkpoint", CK, "--method", "pgd", "--eps", "0.1", "-0.2"],
        "expected a positive finite number",
    ),
    "--eps inf": (["margins", "--checkpoint", CK, "--eps", "inf"], "positive finite number"),
    "--lambda 0": (["margins", "--checkpoint", CK, "--lambda", "0"], "positive finite number"),
    "--tol 0": (["curvature", "--checkpoint", CK, "--tol", "0"], "positive finite number"),
    "--loss-eigs -1": (["curvature", "--checkpoint", CK, "--loss-eigs", "-1"], "integer >= 0"),
    "--fooling-samples x": (
        ["curvature", "--checkpoint", CK, "--fooling-samples", "x"],
        "integer >= 0",
    ),
    "--num 0": (["curvature", "--checkpoint", CK, "--num", "0"], "expected a positive integer"),
    "--resize 0": (["margins", "--checkpoint", CK, "--resize", "0"], "expected a size S or HxW"),
    "--resize 3x4x5": (["slice", "--checkpoint", CK, "--resize", "3x4x5"], "size S or HxW"),
    "--key abc": (["margins", "--checkpoint", CK, "--key", "abc"], "expected an integer seed"),
    "missing --checkpoint": (["margins"], "required: --checkpoint"),
    "--devices gpu": (["margins", "--checkpoint", CK, "--devices", "gpu"], "'all' or a positive"),
    "--devices 0": (["curvature", "--checkpoint", CK, "--devices", "0"], "'all' or a positive"),
    "--devices 99": (["margins", "--checkpoint", CK, "--devices", "99"], "devices must lie in"),
    "curvature --devices 99": (
        ["curvature", "--checkpoint", CK, "--devices", "99"],
        "xla_force_host_platform_device_count",
    ),
    "train --epochs 0": (["train", "--epochs", "0"], "positive integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_line(case, checkpoint, capsys):
    argv, text = BAD_ARGS[case]
    argv = [str(checkpoint) if a == CK else a for a in argv]
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert len(err) == 1, err
    assert err[-1].startswith("geomrobust") and "error:" in err[-1] and text in err[-1], err


BAD_FILES = {
    "missing checkpoint": lambda p: p / "missing",
    "checkpoint is a file": lambda p: (p / "f.txt").write_text("x") and p / "f.txt",
    "foreign folder": lambda p: (p / "d").mkdir() or p / "d",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["margins", "curvature", "slice"])
def test_bad_checkpoint_is_one_line(case, command, tmp_path, capsys):
    path = BAD_FILES[case](tmp_path)
    code, err = _run([command, "--checkpoint", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code in (1, 2) and len(err) == 1, err
    assert str(path) in err[0] and "error:" in err[0]


def test_missing_dataset_fails_fast_offline(checkpoint, tmp_path, capsys):
    t0 = time.perf_counter()
    argv = ["margins", "--checkpoint", str(checkpoint), "--dataset", "mnist"]
    code, err = _run([*argv, "--data-dir", str(tmp_path / "empty"), "--resize", "8"], capsys)
    assert time.perf_counter() - t0 < 20
    assert code in (1, 2) and len(err) == 1, err
    assert "mnist" in err[0]


@pytest.mark.parametrize("case", ["truncated", "int64 0..65535"])
def test_bad_npz_dataset_is_one_line(case, checkpoint, tmp_path, capsys):
    """A truncated .npz was a BadZipFile traceback; 16-bit integers divided by their dtype's
    maximum gave black images and exit 0."""
    import numpy as np

    path = tmp_path / "d.npz"
    pixels = np.arange(10 * 64).reshape(10, 8, 8, 1) * (100 if case != "truncated" else 0)
    np.savez(path, images=pixels.astype(np.int64), labels=np.arange(10))
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    code, err = _run(["margins", "--checkpoint", str(checkpoint), "--dataset", str(path)], capsys)
    assert code in (1, 2) and len(err) == 1, err
    assert "error:" in err[0] and (
        "truncated" in err[0] if case == "truncated" else "0..255" in err[0]
    )


def test_results_of_other_settings_refuse_then_restart(checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["margins", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(out)]
    assert main([*argv, "--no-plots", "--max-iter", "3"]) == 0
    (out / "chunks" / "store.json").write_text("{truncated")
    code, err = _run([*argv, "--no-plots", "--max-iter", "3"], capsys)
    assert code == 1 and len(err) == 1 and "store.json is not valid JSON" in err[0]
    assert main([*argv, "--no-plots", "--max-iter", "3", "--overwrite"]) == 0
    meta = json.loads((out / "chunks" / "store.json").read_text())
    assert meta["settings"]["deepfool_steps"] == 3 and len(meta["settings_sha256"]) == 64


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_help_documents_every_option_with_its_default(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"train", "margins", "curvature", "slice", "nads"} <= set(commands)
    missing = []
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help
            if not text or text == argparse.SUPPRESS:
                missing.append(f"{name} {action.option_strings[0]}: no help")
                continue
            rendered = formatter._get_help_string(action) % {**vars(action), "prog": name}
            flag = action.nargs == 0
            if not (flag or "default" in rendered or action.required):
                missing.append(f"{name} {action.option_strings[0]}: no default in {rendered!r}")
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "--" in capsys.readouterr().out
    assert not missing, missing


def test_cli_error_is_one_line_with_its_exit_code(monkeypatch, checkpoint, capsys):
    import geomrobust.cli._margins_run as margins_cli
    from geomrobust.cli import CLIError
    from geomrobust.cli._errors import user_errors

    def fails(args, outputs):
        raise CLIError("first line\n   second line", 7)

    monkeypatch.setattr(margins_cli, "run", fails)
    code, err = _run(["margins", "--checkpoint", str(checkpoint)], capsys)
    assert code == 7 and err == ["geomrobust margins: error: first line second line"]
    # library errors below a command become the CLI error with the command's exit code
    with pytest.raises(CLIError) as info, user_errors(2, "--devices: "):
        raise ValueError("no such\ndevice")
    assert info.value.exit_code == 2 and info.value.message == "--devices: no such device"
    with pytest.raises(RuntimeError), user_errors(1):  # a bug is not a user's mistake
        raise RuntimeError("internal")


@pytest.mark.parametrize(
    "argv,code,text",
    [
        (["curvature", "--num", "64"], 2, "--num must be <= D-1 = 63"),
        (["margins", "--method", "pgd", "--subspaces", "dct"], 2, "--subspaces needs"),
        (["slice", "--n", "2", "--index", "3"], 2, "--index [3] outside [0, 2)"),
        (["diagnose", "--what", "linearity"], 1, "need --eps > 0"),
    ],
)
def test_documented_exit_codes(argv, code, text, checkpoint, tmp_path, capsys):
    argv = [*argv, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    got, err = _run(argv, capsys)
    assert got == code and len(err) == 1, err
    assert err[0].startswith(f"geomrobust {argv[0]}: error: ") and text in err[0], err


def test_only_the_command_lines_own_process_tunes_the_garbage_collector(
    tmp_path, capsys, monkeypatch
):
    """``main()`` from the installed script or ``python -m geomrobust`` (``argv=None``) owns
    its process and tunes Python's garbage collector (docs/performance.md, "Start-up");
    ``main([...])`` called from a notebook or a script leaves its caller's collector alone."""
    import sys

    import geomrobust.cli as cli

    calls = []
    monkeypatch.setattr(cli, "_tune_garbage_collector", lambda: calls.append(1))
    argv = ["margins", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    code, err = _run(argv, capsys)
    assert code in (1, 2) and "error:" in err[0] and calls == []  # ran, failed on the path
    monkeypatch.setattr(sys, "argv", ["geomrobust", *argv])
    code, err = _run(None, capsys)
    assert code in (1, 2) and "error:" in err[0] and calls == [1]
