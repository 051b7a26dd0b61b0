"""Checkpoints: parameter arrays (Orbax) plus a human-readable ``metadata.json``.

Layout of a checkpoint directory::

    path/
      metadata.json   format marker, model name + configuration, input_shape, num_classes,
                      geomrobust version, an index of the arrays and their sha256 hash,
                      the sha256 of the model configuration (config_sha256), the size and
                      sha256 of every parameter file, and whatever the caller adds
                      (dataset, resize, epochs, accuracy, training method and settings, ...);
                      standard JSON (non-finite floats as "nan", "inf", "-inf")
      params/         the model's variables as a flat {"a.b.kernel": array} tree, written by
                      orbax.checkpoint.StandardCheckpointer (TensorStore/OCDBT, no pickle)

Loading rebuilds the model from its configuration and restores the arrays; every failure
(missing or foreign directory, corrupt or truncated JSON or array files, arrays that do not
match the stored configuration) raises ``FileNotFoundError`` or ``ValueError`` naming the file
and the problem, never a library traceback from deep inside Flax or Orbax. Nothing is ever
unpickled.

``metadata.json`` is untrusted input: every field it has is type-checked, the parameter files
it names must lie inside ``params/`` of the checkpoint (no absolute path, no ``..``, no
symbolic link leading out), and the model configuration (``model``, ``model_config``,
``input_shape``, ``num_classes``) is covered by ``config_sha256``, so an edited
configuration (say ``activation``) is refused, not loaded silently. Checkpoints of
``format_version`` 1 (before ``config_sha256``) still load, with a warning that their
configuration is not verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from geomrobust._version import __version__
from geomrobust.io import atomic_write, file_sha256, to_json_text
from geomrobust.models import model_config, model_from_config

__all__ = [
    "Checkpoint",
    "checkpoint_hash",
    "load_checkpoint",
    "load_metadata",
    "save_checkpoint",
]

FORMAT = "geomrobust-checkpoint"
FORMAT_VERSION = 2
_CONFIG_KEYS = ("model", "model_config", "input_shape", "num_classes")
METADATA_FILE = "metadata.json"
PARAMS_DIR = "params"
_RESERVED = (
    "format",
    "format_version",
    "model",
    "model_config",
    "input_shape",
    "num_classes",
    "geomrobust_version",
    "params_sha256",
    "params_index",
    "params_files",
    "config_sha256",
    "created",
)


class Checkpoint(NamedTuple):
    """A restored checkpoint: the rebuilt NNX ``model`` and its ``metadata`` dict."""

    model: nnx.Module
    metadata: dict


# --------------------------------------------------------------------------- arrays


def _split_state(model: nnx.Module):
    """``(graphdef, rng_state, state)``: PRNG state is not saved (it is rebuilt)."""
    return nnx.split(model, nnx.RngState, ...)


def _flat(state) -> dict[str, Any]:
    """``{"layers.0.kernel": leaf}`` from an ``nnx.State`` or a nested dict."""
    pure = nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(pure)[0]:
        name = ".".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        out[name] = leaf
    return out


def _params_hash(flat: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of every array, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(flat):
        a = np.asarray(flat[name])
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _config_hash(record: Mapping) -> str:
    """sha256 of the canonical JSON of the model configuration fields of ``record``."""
    part = {k: record.get(k) for k in _CONFIG_KEYS}
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value, where: str):
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be JSON-serializable: {e}") from None


def _json_default(o):
    if isinstance(o, np.generic | np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return os.fspath(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


def _file_sha256(file: Path) -> str:
    return file_sha256(file)


def _file_manifest(root: Path, sub: str) -> dict[str, dict]:
    """``{"params/...": {"bytes": n, "sha256": h}}`` for every file under ``root/sub``."""
    out = {}
    for file in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        out[rel] = {"bytes": file.stat().st_size, "sha256": _file_sha256(file)}
    return out


def _check_files(root: Path, manifest: Mapping) -> None:
    """Every file recorded at save time must be present, of the same size and content.

    Checked before Orbax reads anything, so damage is reported by file name (and Orbax
    never starts reads that fail half-way).
    """
    inside = (root / PARAMS_DIR).resolve()
    for rel, rec in manifest.items():
        file = root / rel
        parts = Path(rel).parts
        if (
            Path(rel).is_absolute()
            or "\\" in rel
            or ".." in parts
            or parts[:1] != (PARAMS_DIR,)
            or not file.resolve().is_relative_to(inside)
        ):
            raise ValueError(
                f"{root / METADATA_FILE} names the parameter file {rel!r}, which is not inside "
                f"{root / PARAMS_DIR}; refusing to open it (the metadata is corrupted or "
                "crafted)"
            )
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} is missing: the checkpoint's parameter files are incomplete"
            )
        size = file.stat().st_size
        if size != rec.get("bytes"):
            raise ValueError(
                f"{file} is truncated or corrupted: {size} bytes, but {rec.get('bytes')} were "
                f"written (recorded in {root / METADATA_FILE})"
            )
        if _file_sha256(file) != rec.get("sha256"):
            raise ValueError(
                f"{file} is corrupted: its sha256 differs from the one recorded at save time "
                f"in {root / METADATA_FILE}"
            )


# --------------------------------------------------------------------------- save


def _is_checkpoint_dir(path: Path) -> bool:
    try:
        with open(path / METADATA_FILE) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(
    path: str | os.PathLike,
    model_or_params,
    metadata: Mapping | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory (parameters + ``metadata.json``) atomically.

    Parameters
    ----------
    path : the checkpoint directory to create.
    model_or_params : a model built by :func:`geomrobust.models.create_model` (or any NNX
        module with a ``config`` record), or its parameters (an ``nnx.State`` / nested dict,
        e.g. ``TrainState.params``) when ``metadata["model_config"]`` gives the configuration.
    metadata : JSON-serializable facts to store with it: ``dataset``, ``resize``, ``epochs``,
        ``accuracy``, ``method``, ``train_settings``, ... The reserved fields (``model``,
        ``model_config``, ``input_shape``, ``num_classes``, ``geomrobust_version``,
        ``params_sha256``, ...) are filled in here.
    overwrite : replace an existing checkpoint at ``path`` (a directory that is not a
        geomrobust checkpoint is never replaced).

    Returns
    -------
    The absolute path of the checkpoint.
    """
    import orbax.checkpoint as ocp  # a second to import; only checkpoint files need it

    path = Path(path).expanduser().absolute()
    metadata = dict(metadata or {})
    if isinstance(model_or_params, nnx.Module):
        config = model_config(model_or_params)
        _, _, state = _split_state(model_or_params)
        flat = _flat(state)
    else:
        config = metadata.get("model_config")
        if not isinstance(config, Mapping) or "name" not in config:
            raise TypeError(
                "model_or_params is not an NNX module, so metadata['model_config'] must give "
                "the model configuration (geomrobust.models.model_config(model))"
            )
        config = dict(config)
        flat = _flat(model_or_params)
    flat = {k: np.asarray(v) for k, v in flat.items()}
    config = _jsonable(config, "the model configuration")
    user = _jsonable({k: v for k, v in metadata.items() if k not in _RESERVED}, "metadata")

    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"checkpoint path {path} exists and is not a directory")
        if any(path.iterdir()):
            if not _is_checkpoint_dir(path):
                raise FileExistsError(
                    f"{path} exists and is not a geomrobust checkpoint; refusing to write into "
                    "it (choose a new directory)"
                )
            if not overwrite:
                raise FileExistsError(
                    f"a checkpoint already exists at {path}; pass overwrite=True to replace it"
                )
    path.parent.mkdir(parents=True, exist_ok=True)

    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config["name"],
        "model_config": config,
        "input_shape": list(config.get("input_shape", [])),
        "num_classes": config.get("num_classes"),
        "geomrobust_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **user,
        "params_sha256": _params_hash(flat),
        "params_index": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in flat.items()
        },
    }
    record["config_sha256"] = _config_hash(record)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        try:
            with ocp.StandardCheckpointer() as ckptr:
                ckptr.save(tmp / PARAMS_DIR, flat)
                ckptr.wait_until_finished()
        except Exception as e:  # orbax/tensorstore raise many types (disk full, ...)
            if isinstance(e, OSError):
                raise OSError(e.errno, f"cannot write the checkpoint {path}: {e}") from None
            raise OSError(f"cannot write the checkpoint {path}: {_first_line(e)}") from None
        record["params_files"] = _file_manifest(tmp, PARAMS_DIR)
        try:
            atomic_write(tmp / METADATA_FILE, to_json_text(record))
        except OSError as e:
            raise OSError(e.errno, f"cannot write the checkpoint {path}: {e}") from None
        if path.exists():
            trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- load


def load_metadata(path: str | os.PathLike) -> dict:
    """Read and validate ``path/metadata.json`` (cheap: no arrays are read)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoint path {path} is not a directory")
    file = path / METADATA_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not a geomrobust checkpoint: {METADATA_FILE} is missing (a checkpoint "
            "is written by geomrobust.train.save_checkpoint or `geomrobust train --out DIR`)"
        )
    try:
        with open(file, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is corrupt or truncated (not valid JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{file} is not geomrobust checkpoint metadata (its 'format' field is "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})"
        )
    _check_fields(file, meta)
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _check_fields(file: Path, meta: dict) -> None:
    """Type-check every field of ``metadata.json`` that geomrobust reads (untrusted input)."""

    def bad(field: str, expected: str):
        value = repr(meta.get(field))
        value = value if len(value) <= 80 else value[:77] + "..."
        return ValueError(
            f"{file}: the field {field!r} must be {expected}, got {value} (the metadata is "
            "corrupted or was edited)"
        )

    version = meta.get("format_version", 1)
    if not _is_int(version) or version < 1:
        raise bad("format_version", "an integer >= 1")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file} has format_version {version}, newer than this geomrobust reads "
            f"({FORMAT_VERSION}); upgrade geomrobust"
        )
    required = ["model_config", "params_sha256", "params_index", "params_files"]
    if version >= 2:
        required.append("config_sha256")
    for field in required:
        if field not in meta:
            raise ValueError(f"{file} lacks the field {field!r} (corrupt or truncated)")
    config = meta["model_config"]
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise bad("model_config", "a dict with a string 'name' field")
    if "model" in meta and meta["model"] != config["name"]:
        raise bad("model", f"the model_config name {config['name']!r}")
    shape = meta.get("input_shape", [])
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 1 for d in shape):
        raise bad("input_shape", "a list of positive integers")
    k = meta.get("num_classes")
    if k is not None and not (_is_int(k) and k >= 1):
        raise bad("num_classes", "a positive integer")
    for field in ("params_sha256", "config_sha256"):
        if field in meta and not _is_hex(meta[field]):
            raise bad(field, "a sha256 (64 lowercase hex digits)")
    index = meta["params_index"]
    if not isinstance(index, dict) or not all(
        isinstance(v, dict)
        and isinstance(v.get("shape"), list)
        and all(_is_int(d) and d >= 0 for d in v["shape"])
        and isinstance(v.get("dtype"), str)
        for v in index.values()
    ):
        raise bad("params_index", "a dict of {name: {'shape': [int], 'dtype': str}}")
    files = meta["params_files"]
    if not isinstance(files, dict) or not all(
        isinstance(rel, str)
        and isinstance(v, dict)
        and _is_int(v.get("bytes"))
        and v["bytes"] >= 0
        and _is_hex(v.get("sha256"))
        for rel, v in files.items()
    ):
        raise bad("params_files", "a dict of {path: {'bytes': int, 'sha256': hex}}")
    for field in ("dataset", "method", "created", "geomrobust_version"):
        if meta.get(field) is not None and not isinstance(meta[field], str):
            raise bad(field, "a string")
    resize = meta.get("resize")
    if resize is not None and not (
        (_is_int(resize) and resize >= 1)
        or (isinstance(resize, list) and len(resize) == 2 and all(_is_int(r) and r >= 1
                                                                   for r in resize))
    ):  # fmt: skip
        raise bad("resize", "null, a positive integer or [height, width]")
    if version >= 2 and _config_hash(meta) != meta["config_sha256"]:
        raise ValueError(
            f"{file}: the model configuration ({', '.join(_CONFIG_KEYS)}) does not match the "
            "hash recorded at save time (config_sha256): the metadata was edited or is "
            "corrupted; refusing to load a model other than the one saved"
        )
    if version < 2:
        warnings.warn(
            f"{file} has format_version {version} (an older geomrobust): its model "
            "configuration is not covered by a hash, so an edit cannot be detected; re-save "
            "it with geomrobust.train.save_checkpoint to add one",
            UserWarning,
            stacklevel=3,
        )


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(e).__name__}: {line[:limit]}"


def _read_arrays(params_dir: Path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    if not params_dir.is_dir():
        raise FileNotFoundError(f"{params_dir} is missing: the checkpoint holds no parameters")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(params_dir)
    except Exception as e:  # orbax/tensorstore raise many types; re-raise with context
        raise ValueError(
            f"cannot read the parameter arrays in {params_dir}: the files are truncated, "
            f"corrupted or not an Orbax checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(restored, Mapping):
        raise ValueError(f"{params_dir} does not hold a flat tree of named arrays")
    return {str(k): np.asarray(v) for k, v in restored.items()}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the model stored at ``path`` and restore its parameters (bit for bit).

    Returns
    -------
    Checkpoint(model, metadata)
        ``model`` an NNX module of the stored architecture; ``metadata`` the dict of
        ``metadata.json`` (dataset, resize, epochs, accuracy, method, ... as saved).

    Raises
    ------
    FileNotFoundError
        ``path``, ``metadata.json`` or ``params/`` is missing.
    ValueError
        Corrupt/truncated JSON or array files, arrays that do not match the stored model
        configuration, or a parameter hash that does not match ``metadata.json``.
    """
    path = Path(path).expanduser().absolute()
    meta = load_metadata(path)
    meta_file = path / METADATA_FILE
    config = meta["model_config"]
    try:
        abstract = model_from_config(config)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{meta_file}: cannot rebuild the model from 'model_config': {e}"
        ) from None
    graphdef, rng_state, template = _split_state(abstract)
    if jax.tree.leaves(rng_state):  # PRNG state is not saved: build concrete keys for it
        graphdef, rng_state, template = _split_state(
            model_from_config(config, key=jax.random.key(0))
        )
    expected = _flat(template)

    if not (path / PARAMS_DIR).is_dir():
        raise FileNotFoundError(
            f"{path / PARAMS_DIR} is missing: the checkpoint holds no parameters"
        )
    files = meta.get("params_files")
    if not isinstance(files, Mapping) or not files:
        raise ValueError(f"{meta_file} lacks the field 'params_files' (corrupt or truncated)")
    _check_files(path, files)
    arrays = _read_arrays(path / PARAMS_DIR)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(
            f"the arrays in {path / PARAMS_DIR} do not match the model configuration in "
            f"{meta_file}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, spec in expected.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(spec.shape) or a.dtype != spec.dtype:
            raise ValueError(
                f"array {name!r} in {path / PARAMS_DIR} has shape {tuple(a.shape)} and dtype "
                f"{a.dtype}, but the model configuration in {meta_file} expects "
                f"{tuple(spec.shape)} and {spec.dtype}"
            )
    digest = _params_hash(arrays)
    if digest != meta["params_sha256"]:
        raise ValueError(
            f"the arrays in {path / PARAMS_DIR} do not match the hash recorded in {meta_file} "
            "(params_sha256): the checkpoint is corrupted"
        )

    pure = nnx.to_pure_dict(template)
    leaves_with_path = jax.tree_util.tree_flatten_with_path(pure)
    names = [
        ".".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path_)
        for path_, _ in leaves_with_path[0]
    ]
    values = [jnp.asarray(arrays[n]) for n in names]
    pure = jax.tree_util.tree_unflatten(leaves_with_path[1], values)
    nnx.replace_by_pure_dict(template, pure)
    model = nnx.merge(graphdef, rng_state, template)
    return Checkpoint(model, meta)


def checkpoint_hash(path: str | os.PathLike) -> str:
    """sha256 over the relative names and contents of every file of a checkpoint directory.

    Identifies the exact checkpoint a result was computed from (for results metadata).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(os.fspath(file.relative_to(path)).encode() + b"\0")
        h.update(_file_sha256(file).encode())
    return h.hexdigest()
