"""Reliability of the files the package writes and reads (issue 17, files half): chunk files
carry their run's digest, ``--restart`` deletes only the store's own files, folder locks,
failed writes (disk full, file-size limit, a folder in the way) leave nothing half-written and
name the path, the umask is honoured, checkpoint metadata is untrusted input, JSON is
standard, crafted ``.npz`` headers, damaged report stages, empty dataset selections and
diverging training."""

import errno
import io
import json
import math
import os
import resource
import signal
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geomrobust.io import (
    CorruptFileError,
    FolderLockedError,
    SettingsMismatchError,
    atomic_write,
    load_npz,
    lock_folder,
    open_chunk_store,
    remove_stale_temps,
    save_json,
    save_npz,
    to_json_text,
)


def _chunks(i, sl):
    return {"v": np.arange(sl.start, sl.stop, dtype=np.float32) + 0.5}


def _strict_json(text):
    """Parse JSON refusing the non-standard constants NaN, Infinity, -Infinity."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------- chunk store


def test_chunk_file_of_another_run_is_refused_on_resume(tmp_path):
    a = open_chunk_store(tmp_path / "a", {"checkpoint_sha256": "1" * 64, "n": 6})
    b = open_chunk_store(tmp_path / "b", {"checkpoint_sha256": "2" * 64, "n": 6})
    a.map(_chunks, n=6, chunk_size=2)
    b.map(_chunks, n=6, chunk_size=2)
    # a valid chunk of run b copied into run a's folder: same name, same shapes, other digest
    a.path(1).write_bytes(b.path(1).read_bytes())
    with pytest.raises(SettingsMismatchError, match=r"chunk-00001\.npz was written with other"):
        a.map(_chunks, n=6, chunk_size=2)
    # a hand-made archive without a digest is not adopted either
    save_npz(a.path(1), {"v": np.zeros(2, np.float32)})
    with pytest.raises(SettingsMismatchError, match="carries no settings digest"):
        a.map(_chunks, n=6, chunk_size=2)
    with pytest.raises(ValueError, match="reserved"):
        a.save(0, {"__settings_sha256__": np.zeros(2)})
    # a chunk of this run reads back without the digest array
    assert list(b.load(0)) == ["v"]


def test_restart_removes_only_the_stores_own_files(tmp_path):
    root = tmp_path / "chunks"
    store = open_chunk_store(root, {"a": 1})
    store.map(_chunks, n=6, chunk_size=2)
    (root / "notes.txt").write_text("mine")
    np.savez(root / "chunk-00009.npz", mine=np.arange(3))  # the user's, no digest
    (root / "sub").mkdir()
    store = open_chunk_store(root, {"a": 2}, overwrite=True)  # --restart with other settings
    assert store.completed() == [9]  # only the user's archive is left of the chunk names
    assert (root / "notes.txt").read_text() == "mine" and (root / "sub").is_dir()
    assert np.load(root / "chunk-00009.npz")["mine"].tolist() == [0, 1, 2]
    assert json.loads((root / "store.json").read_text())["settings"] == {"a": 2}


def test_a_non_empty_folder_it_did_not_create_is_never_adopted(tmp_path):
    root = tmp_path / "chunks"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"thesis\.tex.*not created by geomrobust"):
            open_chunk_store(root, {"a": 1}, overwrite=overwrite)
    assert sorted(p.name for p in root.iterdir()) == ["thesis.tex"]


# --------------------------------------------------------------------------- locks, temps

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_folder_lock_refuses_a_second_run_and_dies_with_its_process(tmp_path):
    out = tmp_path / "out"
    with lock_folder(out) as lock:
        assert lock.path == out / ".geomrobust.lock"
        with pytest.raises(FolderLockedError, match=rf"another run holds {out} .*--out"):
            with lock_folder(out):
                pass
    with lock_folder(out):  # released at the end of the block
        pass
    # a process holding the lock is killed: the OS releases it, the next run proceeds
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out / ".geomrobust.lock")], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(FolderLockedError):
            with lock_folder(out):
                pass
        # the live run's temporary file is never removed; a dead writer's is
        live = out / f".results.npz.{proc.pid}-abcd.tmp"
        live.write_bytes(b"in progress")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    dead = out / ".summary.json.999999999-abcd.tmp"
    dead.write_bytes(b"left by a killed run")
    mine = out / f".other.json.{os.getpid()}-abcd.tmp"
    mine.write_bytes(b"this process")
    assert remove_stale_temps(out, ["summary.json"]) == 1 and not dead.exists()
    assert live.exists()  # not named in ["summary.json"]
    assert remove_stale_temps(out) == 1 and not live.exists()  # its writer is dead now
    assert mine.exists()  # a running writer's (this process) file stays
    with lock_folder(out):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        with lock_folder(tmp_path / "file"):
            pass
    with lock_folder(tmp_path, entry="ckpt") as lock:
        assert lock.path == tmp_path / ".ckpt.geomrobust.lock"
        with pytest.raises(FolderLockedError, match=rf"holds {tmp_path / 'ckpt'} "):
            with lock_folder(tmp_path, entry="ckpt"):
                pass


# --------------------------------------------------------------------------- failed writes


def _only(folder):
    return sorted(p.name for p in folder.iterdir())


def test_disk_full_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    save_json(target, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=rf"cannot write {target}: no space left .*disk full"):
        save_json(target, {"new": 2})
    with pytest.raises(OSError, match=r"cannot write .*r\.npz: no space left"):
        save_npz(tmp_path / "r.npz", {"a": np.zeros(3)})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert _only(tmp_path) == ["summary.json"]


def test_file_size_limit_is_an_oserror_not_a_signal(tmp_path):
    target = tmp_path / "big.bin"
    atomic_write(target, b"old")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OSError, match=rf"cannot write {target}: file too large") as info:
            atomic_write(target, b"x" * (1 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert info.value.errno == errno.EFBIG
    assert target.read_bytes() == b"old" and _only(tmp_path) == ["big.bin"]


def test_a_folder_in_the_way_is_named(tmp_path):
    (tmp_path / "results.npz").mkdir()
    with pytest.raises(IsADirectoryError, match=r"results\.npz: it is a folder"):
        save_npz(tmp_path / "results.npz", {"a": np.zeros(2)})
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*file/r\.json"):
        save_json(tmp_path / "file" / "r.json", {})
    assert _only(tmp_path) == ["file", "results.npz"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        paths = [
            atomic_write(tmp_path / "a.bin", b"x"),
            save_json(tmp_path / "s.json", {"a": 1}),
            save_npz(tmp_path / "r.npz", {"a": np.zeros(2)}),
        ]
    finally:
        os.umask(old)
    for p in paths:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


# --------------------------------------------------------------------------- JSON, npz


def test_json_is_standard_with_one_encoding_of_non_finite_values(tmp_path):
    record = {
        "a": math.nan,
        "b": np.float32(np.inf),
        "c": np.array([-np.inf, 1.5]),
        "d": jnp.asarray([np.nan]),
        "e": [{"f": -math.inf}],
    }
    text = to_json_text(record)
    assert not any(t in text for t in ("NaN", "Infinity"))
    back = _strict_json(text)
    assert back == {"a": "nan", "b": "inf", "c": ["-inf", 1.5], "d": ["nan"], "e": [{"f": "-inf"}]}
    assert [float(v) for v in back["c"]] == [-np.inf, 1.5]


def _crafted_npz(path, shape, payload=b"\0" * 16):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("margin.npy", header.getvalue() + payload)  # the header holds the magic


@pytest.mark.parametrize("shape", [(10**12,), (2**31, 2**31), (3, 5)])
def test_crafted_npz_header_declaring_a_huge_array_is_corrupt(shape, tmp_path):
    p = tmp_path / "r.npz"
    _crafted_npz(p, shape)
    with pytest.raises(
        CorruptFileError, match=r"margin.*declares shape .* but its member holds 16"
    ):
        load_npz(p)
    _crafted_npz(p, (2,))  # 16 bytes: two float64, readable
    assert load_npz(p)["margin"].shape == (2,)


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from geomrobust.models import create_model
    from geomrobust.train import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mlp"
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0), activation="softplus")
    save_checkpoint(path, model, {"dataset": "digits", "loss": math.nan, "best": math.inf})
    return path


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit(path, fn):
    meta = json.loads((path / "metadata.json").read_text())
    fn(meta)
    (path / "metadata.json").write_text(json.dumps(meta))


EDITS = {
    # name: (edit of metadata.json, error text)
    "string format_version": (
        lambda m: m.update(format_version="2"),
        "'format_version' must be an integer",
    ),
    "bool format_version": (lambda m: m.update(format_version=True), "'format_version' must"),
    "edited activation": (
        lambda m: m["model_config"].update(activation="relu"),
        "does not match the hash recorded at save time",
    ),
    "edited num_classes": (lambda m: m.update(num_classes=9), "does not match the hash"),
    "num_classes a string": (lambda m: m.update(num_classes="10"), "'num_classes' must be"),
    "input_shape of strings": (lambda m: m.update(input_shape=["8", 8, 1]), "'input_shape'"),
    "model_config a list": (lambda m: m.update(model_config=[1]), "'model_config' must be"),
    "name not a string": (lambda m: m["model_config"].update(name=3), "'model_config' must"),
    "params_index a list": (lambda m: m.update(params_index=[]), "'params_index' must be"),
    "params_sha256 not hex": (lambda m: m.update(params_sha256=7), "'params_sha256' must be"),
    "params_files bytes a string": (
        lambda m: next(iter(m["params_files"].values())).update(bytes="12"),
        "'params_files' must be",
    ),
    "no config_sha256": (lambda m: m.pop("config_sha256"), "lacks the field 'config_sha256'"),
    "dataset a dict": (lambda m: m.update(dataset={"x": 1}), "'dataset' must be a string"),
    "resize a string": (lambda m: m.update(resize="16"), "'resize' must be"),
    "file outside the checkpoint": (
        lambda m: m["params_files"].update(
            {"params/../../outside.txt": {"bytes": 1, "sha256": "0" * 64}}
        ),
        "not inside .*params; refusing to open it",
    ),
    "absolute file": (
        lambda m: m["params_files"].update({"/etc/hostname": {"bytes": 1, "sha256": "0" * 64}}),
        "not inside",
    ),
    "file next to params": (
        lambda m: m["params_files"].update({"metadata.json": {"bytes": 1, "sha256": "0" * 64}}),
        "not inside",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_checkpoint_metadata_is_untrusted(case, saved, tmp_path, monkeypatch):
    from geomrobust.train import _checkpoint as ck
    from geomrobust.train import load_checkpoint

    edit, text = EDITS[case]
    path = _copy(saved, tmp_path / "ckpt")
    (tmp_path / "outside.txt").write_text("x")
    opened = []
    real = ck._file_sha256
    monkeypatch.setattr(ck, "_file_sha256", lambda f: opened.append(f) or real(f))
    _edit(path, edit)
    with pytest.raises(ValueError, match=text) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    assert all(os.fspath(f).startswith(os.fspath(path / "params")) for f in opened), opened


def test_checkpoint_write_failure_leaves_nothing(saved, tmp_path, monkeypatch):
    from geomrobust.io import _files
    from geomrobust.train import load_checkpoint, save_checkpoint

    model = load_checkpoint(saved).model

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full)
    target = tmp_path / "ck"
    with pytest.raises(OSError, match=rf"cannot write the checkpoint {target}: .*no space left"):
        save_checkpoint(target, model)
    assert _only(tmp_path) == []  # no checkpoint, no temporary folder


def test_checkpoint_metadata_is_standard_json_and_format_1_still_loads(saved, tmp_path):
    from geomrobust.train import load_checkpoint

    meta = _strict_json((saved / "metadata.json").read_text())
    assert meta["loss"] == "nan" and meta["best"] == "inf" and meta["format_version"] == 2
    model = load_checkpoint(saved).model
    path = _copy(saved, tmp_path / "v1")
    _edit(path, lambda m: (m.pop("config_sha256"), m.update(format_version=1)))
    with pytest.warns(UserWarning, match="format_version 1.*not covered by a hash"):
        old = load_checkpoint(path).model
    x = jnp.ones((2, 8, 8, 1))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(old(x)))


# --------------------------------------------------------------------------- report stages


def test_a_damaged_report_stage_is_recomputed_not_reused(tmp_path, capsys):
    from geomrobust.report._driver import _load_stage, _save_stage

    folder = tmp_path / "stages"
    arrays = {"m__margin": np.arange(4.0)}
    _save_stage(folder, "margins", "d" * 64, arrays, {"n": 4, "median": 1.5}, 2.0)
    got = _load_stage(folder, "margins", "d" * 64)
    assert got[1] == {"n": 4, "median": 1.5} and got[0]["m__margin"].tolist() == [0, 1, 2, 3]
    assert _load_stage(folder, "margins", "e" * 64) is None  # other settings: silently
    damages = {
        "other arrays": lambda: save_npz(folder / "margins.npz", {"m__margin": np.zeros(4)}),
        "truncated npz": lambda: (folder / "margins.npz").write_bytes(b"PK\x03\x04"),
        "missing npz": lambda: (folder / "margins.npz").unlink(),
        "edited summary": lambda: _edit_stage(folder, lambda r: r["summary"].update(median=9)),
        "summary a list": lambda: _edit_stage(folder, lambda r: r.update(summary=[1])),
        "broken json": lambda: (folder / "margins.json").write_text("{"),
        "json replaced by []": lambda: (folder / "margins.json").write_text("[]"),
        "json replaced by a string": lambda: (folder / "margins.json").write_text('"done"'),
        "json replaced by null": lambda: (folder / "margins.json").write_text("null"),
    }
    for name, damage in damages.items():
        _save_stage(folder, "margins", "d" * 64, arrays, {"n": 4, "median": 1.5}, 2.0)
        capsys.readouterr()
        damage()
        assert _load_stage(folder, "margins", "d" * 64) is None, name
        err = capsys.readouterr().err
        assert "damaged" in err and "recomputing" in err and err.count("\n") == 1, (name, err)


def _edit_stage(folder, fn):
    record = json.loads((folder / "margins.json").read_text())
    fn(record)
    (folder / "margins.json").write_text(json.dumps(record))


# --------------------------------------------------------------------------- data, training


@pytest.mark.parametrize("split", ["test[:0]", "test[5:5]", "train[10:2]"])
def test_empty_dataset_selection_is_a_clear_error(split):
    from geomrobust.data import load_dataset

    with pytest.raises(ValueError, match=r"selects no examples.*non-empty selection"):
        load_dataset("digits", split)
    with pytest.raises(ValueError, match=r"cannot read the split 'test\[abc\]'"):
        load_dataset("digits", "test[abc]")


BAD_SETTINGS = {
    "lr inf": ({"lr": math.inf}, ValueError, "lr must be a positive finite"),
    "lr -1": ({"lr": -1.0}, ValueError, "lr must be a positive finite"),
    "lr nan": ({"lr": math.nan}, ValueError, "lr must be"),
    "weight_decay nan": ({"weight_decay": math.nan}, ValueError, "weight_decay must be"),
    "momentum inf": ({"momentum": math.inf}, ValueError, "momentum must be"),
    "lr a string": ({"lr": "fast"}, TypeError, "lr must be a number"),
    "lr True": ({"lr": True}, TypeError, "lr must be a number"),
    "epochs 1.5": ({"epochs": 1.5}, TypeError, "epochs must be an integer"),
    "eval_eps nan": ({"eval_eps": [math.nan]}, ValueError, "eval_eps must be"),
    "method_settings eps inf": ({"method_settings": {"eps": math.inf}}, ValueError, "finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_training_settings_are_checked(case):
    from geomrobust.train import check_settings
    from geomrobust.train._settings import DEFAULTS

    edit, error, text = BAD_SETTINGS[case]
    with pytest.raises(error, match=text):
        check_settings({**DEFAULTS, **edit})


def test_diverging_training_stops_with_a_clear_error():
    import optax

    from geomrobust.train import TrainingDivergedError, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def apply(p, z):  # cubic logits: gradient descent with a large step blows up
        return (z.reshape(z.shape[0], -1) @ p["w"]) ** 3

    params = {"w": jnp.full((4, 2), 0.1, jnp.float32)}
    kw = {"key": jax.random.key(0), "epochs": 3, "batch_size": 16}
    ok = fit(apply, params, optax.sgd(0.01), x, y, **kw)
    assert np.isfinite(ok.history["train_loss"]).all()
    with pytest.raises(TrainingDivergedError, match=r"training diverged: .* in epoch \d.*--lr"):
        fit(apply, params, optax.sgd(100.0), x, y, **kw)
