"""Checkpoints: exact round trips, metadata, and a clear error for every kind of damage."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust
from geomrobust.models import as_classifier, create_model, model_config, pure_apply
from geomrobust.train import (
    checkpoint_hash,
    load_checkpoint,
    load_metadata,
    save_checkpoint,
)

CONFIGS = {
    "mlp": {"widths": [16, 8], "activation": "softplus"},
    "lenet": {"channels": [3, 4], "hidden": [12, 8], "pool": "avg"},
    "resnet": {"width": 4, "blocks": [1, 1]},
}
META = {
    "dataset": "digits",
    "resize": None,
    "epochs": 3,
    "accuracy": np.float32(0.97),
    "method": "standard",
    "train_settings": {"optimizer": "sgd", "lr": 0.05},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved LeNet checkpoint; tests that damage it work on copies."""
    model = create_model("lenet", (8, 8, 1), 10, key=jax.random.key(0), **CONFIGS["lenet"])
    path = tmp_path_factory.mktemp("ckpt") / "lenet"
    save_checkpoint(path, model, META)
    return model, path


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _data_files(path: Path):
    files = [p for p in (path / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: -p.stat().st_size)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_is_bit_identical(name, tmp_path):
    model = create_model(name, (8, 8, 1), 10, key=jax.random.key(1), **CONFIGS[name])
    path = save_checkpoint(tmp_path / name, model, META)
    ckpt = load_checkpoint(path)
    assert model_config(ckpt.model) == model_config(model)
    apply, params = pure_apply(model)
    _, params2 = pure_apply(ckpt.model)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = jax.random.uniform(jax.random.key(2), (5, 8, 8, 1))
    fn = jax.jit(apply)
    np.testing.assert_array_equal(np.asarray(fn(params, x)), np.asarray(fn(params2, x)))
    meta = ckpt.metadata
    assert meta["model"] == name and meta["input_shape"] == [8, 8, 1]
    assert meta["num_classes"] == 10 and meta["geomrobust_version"] == geomrobust.__version__
    assert meta["dataset"] == "digits" and meta["epochs"] == 3 and meta["method"] == "standard"
    assert meta["accuracy"] == pytest.approx(0.97) and meta["train_settings"]["lr"] == 0.05
    assert len(meta["params_sha256"]) == 64


def test_float64_params_and_params_only_save(tmp_path):
    model = create_model("mlp", (6,), 3, key=jax.random.key(3), widths=[5], param_dtype="float64")
    _, params = pure_apply(model)
    # saving a params pytree (e.g. TrainState.params) needs the configuration in the metadata
    with pytest.raises(TypeError, match="model_config"):
        save_checkpoint(tmp_path / "a", params, {})
    save_checkpoint(tmp_path / "a", params, {"model_config": model_config(model)})
    restored = load_checkpoint(tmp_path / "a").model
    x = jax.random.normal(jax.random.key(4), (3, 6), jnp.float64)
    a, b = as_classifier(model)(x), as_classifier(restored)(x)
    assert b.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_overwrite_rules_and_hash(saved, tmp_path):
    model, path = saved
    dst = _copy(path, tmp_path / "c")
    h = checkpoint_hash(dst)
    assert h == checkpoint_hash(dst) and h == checkpoint_hash(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(dst, model, META)
    other = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(9), widths=[4])
    save_checkpoint(dst, other, META, overwrite=True)
    assert load_checkpoint(dst).metadata["model"] == "mlp"
    assert checkpoint_hash(dst) != h
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary directories left
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(FileExistsError, match="not a geomrobust checkpoint"):
        save_checkpoint(foreign, model, META, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "not a checkpoint"
    with pytest.raises(TypeError, match="JSON-serializable"):
        save_checkpoint(tmp_path / "d", model, {"bad": object()})


def _truncate_json(p):
    text = (p / "metadata.json").read_text()
    (p / "metadata.json").write_text(text[: len(text) // 2])


def _garbage_json(p):
    (p / "metadata.json").write_bytes(b"\x00\xff\x13garbage")


def _foreign_json(p):
    (p / "metadata.json").write_text(json.dumps({"name": "something else"}))


def _no_metadata(p):
    (p / "metadata.json").unlink()


def _no_params(p):
    import shutil

    shutil.rmtree(p / "params")


def _truncate_arrays(p):
    for f in _data_files(p):
        os.truncate(f, f.stat().st_size // 2)


def _empty_arrays(p):
    for f in _data_files(p):
        os.truncate(f, 0)


def _corrupt_arrays(p):
    for f in _data_files(p):
        b = bytearray(f.read_bytes())
        for i in range(len(b) // 3, len(b) // 3 + 32):
            b[i] ^= 0xFF
        f.write_bytes(b)


def _delete_array_file(p):
    _data_files(p)[0].unlink()


def _truncate_manifest(p):
    os.truncate(p / "params" / "manifest.ocdbt", 10)


def _rehashed(meta):
    """A crafted metadata.json whose config_sha256 was recomputed after the edit (the
    deeper checks: arrays against the configuration, the model rebuild)."""
    from geomrobust.train._checkpoint import _config_hash

    meta["config_sha256"] = _config_hash(meta)
    return meta


def _config_mismatch(p):
    meta = json.loads((p / "metadata.json").read_text())
    meta["model_config"]["hidden"] = [13, 8]  # arrays were saved for hidden=[12, 8]
    (p / "metadata.json").write_text(json.dumps(_rehashed(meta)))


def _bad_config(p):
    meta = json.loads((p / "metadata.json").read_text())
    meta["model_config"]["name"] = meta["model"] = "transformer"
    (p / "metadata.json").write_text(json.dumps(_rehashed(meta)))


def _hash_mismatch(p):
    meta = json.loads((p / "metadata.json").read_text())
    meta["params_sha256"] = "0" * 64
    (p / "metadata.json").write_text(json.dumps(meta))


DAMAGE = {
    # name: (damage, error type, pattern: which file and what is wrong)
    "truncated-json": (_truncate_json, ValueError, r"metadata\.json is corrupt or truncated"),
    "garbage-json": (_garbage_json, ValueError, r"metadata\.json is corrupt or truncated"),
    "foreign-json": (_foreign_json, ValueError, r"metadata\.json is not geomrobust checkpoint"),
    "no-metadata": (_no_metadata, FileNotFoundError, r"not a geomrobust checkpoint: metadata"),
    "no-params": (_no_params, FileNotFoundError, r"params is missing"),
    "truncated-arrays": (
        _truncate_arrays,
        ValueError,
        r"params/(.*/)?d/\w+ is truncated or corrupted: \d+ bytes, but \d+ were written",
    ),
    "empty-arrays": (
        _empty_arrays,
        ValueError,
        r"params/(.*/)?d/\w+ is truncated or corrupted: 0 bytes",
    ),
    "corrupted-arrays": (
        _corrupt_arrays,
        ValueError,
        r"params/(.*/)?d/\w+ is corrupted: its sha256 differs",
    ),
    "truncated-manifest": (
        _truncate_manifest,
        ValueError,
        r"params/manifest\.ocdbt is truncated or corrupted",
    ),
    "deleted-array-file": (_delete_array_file, FileNotFoundError, r"params/(.*/)?d/\w+ is missing"),
    "config-mismatch": (
        _config_mismatch,
        ValueError,
        r"array 'fc1\.\w+' in .*params has shape .*metadata\.json expects \((16, )?13,?\)",
    ),
    "bad-config": (_bad_config, ValueError, r"metadata\.json: cannot rebuild the model"),
    "hash-mismatch": (
        _hash_mismatch,
        ValueError,
        r"do not match the hash recorded in .*metadata\.json",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpoint_gives_a_clear_error(case, saved, tmp_path):
    _, path = saved
    damage, error, pattern = DAMAGE[case]
    dst = _copy(path, tmp_path / "ckpt")
    damage(dst)
    with pytest.raises(error, match=pattern) as info:
        load_checkpoint(dst)
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, OSError)
    assert len(str(info.value)) < 800  # one readable message, not a dump


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        load_checkpoint(tmp_path / "f.txt")
    with pytest.raises(FileNotFoundError, match=r"metadata\.json is missing"):
        load_metadata(tmp_path)


def test_orbax_errors_are_wrapped(saved, monkeypatch):
    """Damage the file record cannot see still surfaces as one message naming the directory
    (a deep TensorStore error is simulated: a real one leaves Orbax callbacks behind)."""
    import orbax.checkpoint as ocp

    _, path = saved

    def broken(self, *args, **kwargs):
        raise ValueError("DATA_LOSS: Error reading 'fc1.kernel/0.0' in OCDBT database\n<frames>")

    monkeypatch.setattr(ocp.StandardCheckpointer, "restore", broken)
    with pytest.raises(
        ValueError, match=r"cannot read the parameter arrays in .*params: .*DATA_LOSS"
    ) as info:
        load_checkpoint(path)
    assert "<frames>" not in str(info.value) and info.value.__cause__ is None
