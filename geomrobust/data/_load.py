"""``load_dataset``: the embedded digits and the standard TFDS image datasets as NumPy arrays.

Data lives in a TFDS ``data_dir`` (``data_dir`` argument, else ``$GEOMROBUST_DATA_DIR``, else
``~/.cache/geomrobust/tensorflow_datasets``) in the usual layout ``data_dir/name/version``.
Without an explicit ``data_dir``, a standard dataset already prepared in TFDS's own default
directory (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``, where ``tfds.load`` puts it) is
read from there.

* ``"digits"`` (the default of every tool) is built locally from scikit-learn the first time
  (no network, no TensorFlow) and reused afterwards.
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"svhn_cropped"`` are read when prepared.
  ``array_record`` data is read with ``builder.as_data_source()`` (no TensorFlow);
  ``tfrecord`` data (the ``tfds.load`` default) needs TensorFlow.
  Missing data is downloaded and prepared (as ``array_record``) only when ``download=True``,
  ``$GEOMROBUST_OFFLINE`` is not set, and the download hosts answer a TCP connect within
  2 seconds (probed in daemon threads with a hard wall-clock limit, because DNS resolution
  ignores socket timeouts). Otherwise :class:`DatasetNotFoundError` is raised at once, saying
  where the data was looked for and how to provide it; nothing ever waits on network retries.

Preparation holds an exclusive file lock (``data_dir/.name.lock``), so two processes that
prepare at once do not race: the second waits, then reuses the first one's result (TFDS itself
writes into ``data_dir/name/incomplete.*`` and renames at the end).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from geomrobust.io import CorruptFileError
from geomrobust.io._files import np_load_closing

from ._digits import Digits
from ._resize import as_size, resize_images

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetNotFoundError",
    "default_data_dir",
    "load_dataset",
    "tfds_data_dir",
]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn_cropped")

# (host, port) of the files each TFDS builder downloads (tensorflow_datasets 4.9).
_DOWNLOAD_HOSTS = {
    "mnist": (("storage.googleapis.com", 443),),
    "fashion_mnist": (("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),),
    "cifar10": (("www.cs.toronto.edu", 443),),
    "svhn_cropped": (("ufldl.stanford.edu", 80),),
}
_PROBE_TIMEOUT_S = 2.0
_READ_CHUNK = 4096


class ArrayDataset(NamedTuple):
    """An image classification dataset in memory.

    Attributes
    ----------
    images : np.ndarray
        float32 ``(N, H, W, C)`` in ``[0, 1]``.
    labels : np.ndarray
        int32 ``(N,)`` in ``[0, num_classes)``.
    num_classes : int
    name : str
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not prepared locally and cannot (or may not) be downloaded now."""


def default_data_dir() -> Path:
    """``$GEOMROBUST_DATA_DIR`` if set, else ``~/.cache/geomrobust/tensorflow_datasets``."""
    env = os.environ.get("GEOMROBUST_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/geomrobust/tensorflow_datasets").expanduser()


def tfds_data_dir() -> Path:
    """TFDS's own default: ``$TFDS_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def _offline() -> bool:
    return os.environ.get("GEOMROBUST_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _unreachable_hosts(hosts, timeout: float = _PROBE_TIMEOUT_S) -> list[str]:
    """Hosts that do not accept a TCP connection within ``timeout`` seconds of wall time.

    Each probe (DNS lookup + connect) runs in a daemon thread; the caller waits at most
    ``timeout`` in total, whatever the resolver does, and abandons threads still blocked.
    """
    ok: dict[str, bool] = {}

    def probe(host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok[host] = True
        except OSError:
            ok[host] = False

    threads = [
        threading.Thread(target=probe, args=hp, daemon=True, name=f"probe-{hp[0]}") for hp in hosts
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [host for host, _ in hosts if not ok.get(host, False)]


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (no-op where fcntl is missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _make_builder(name: str, root: Path):
    import tensorflow_datasets as tfds

    if name == "digits":
        return Digits(data_dir=os.fspath(root))
    # No file_format here: prepared data keeps the format it was written in (a tfrecord
    # directory copied from ~/tensorflow_datasets must stay readable); see _prepare.
    return tfds.builder(name, data_dir=os.fspath(root))


def _not_found(name: str, builder, root: Path, reason: str) -> DatasetNotFoundError:
    where = Path(builder.data_path)
    return DatasetNotFoundError(
        f"dataset {name!r} (TFDS version {builder.version}) is not prepared: looked for "
        f"{where} (data_dir={root}), and {reason}.\n"
        f"To provide it, do one of:\n"
        f"  * copy a prepared TFDS directory '{name}/{builder.version}' (for example from "
        f"~/tensorflow_datasets on a machine with network access) into {root};\n"
        f"  * run once with network access: load_dataset({name!r}, data_dir={str(root)!r});\n"
        f"  * build it with TFDS: tfds build {name} --data_dir={root} "
        f"--file_format=array_record (needs TensorFlow: pip install 'geomrobust[tf]').\n"
        f"Pass data_dir= or set GEOMROBUST_DATA_DIR to look elsewhere."
    )


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _check_can_prepare(name: str, builder, root: Path) -> None:
    """The standard TFDS builders read and encode their raw files with TensorFlow."""
    if not _tensorflow_available():
        raise ImportError(
            f"preparing {name!r} from its raw files runs the TFDS builder, which needs "
            f"TensorFlow: pip install 'geomrobust[tf]' (or copy a prepared TFDS directory "
            f"'{name}/{builder.version}' into {root})"
        )
    try:  # TFDS 4.9 resolves this with the `importlib_resources` backport
        type(builder).code_path  # noqa: B018
    except ModuleNotFoundError as err:
        raise ImportError(
            f"preparing {name!r} with tensorflow_datasets needs the missing package "
            f"{err.name!r}: pip install {err.name}"
        ) from err


def _prepare(name: str, builder, root: Path, download: bool):
    """Prepare ``builder`` (digits locally; others by download) or raise at once."""
    if name != "digits":
        if not download:
            raise _not_found(name, builder, root, "download=False")
        if _offline():
            raise _not_found(name, builder, root, "GEOMROBUST_OFFLINE is set")
        unreachable = _unreachable_hosts(_DOWNLOAD_HOSTS[name])
        if unreachable:
            raise _not_found(
                name,
                builder,
                root,
                f"the download host(s) {', '.join(unreachable)} did not answer within "
                f"{_PROBE_TIMEOUT_S:g} s (no network?)",
            )
        _check_can_prepare(name, builder, root)
    with _exclusive(root / f".{name}.lock"):
        builder = _make_builder(name, root)  # another process may have prepared it meanwhile
        if not builder.is_prepared():
            builder.download_and_prepare(file_format="array_record")
        return _make_builder(name, root)


def _read_split(name: str, builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    if str(builder.info.file_format) == str(tfds.core.FileFormat.ARRAY_RECORD):
        source = builder.as_data_source(split=split)
        n = len(source)
        images, labels, index = [], [], []
        for start in range(0, n, _READ_CHUNK):
            records = source.__getitems__(list(range(start, min(n, start + _READ_CHUNK))))
            images.extend(r["image"] for r in records)
            labels.extend(r["label"] for r in records)
            index.extend(r.get("index", 0) for r in records)
        images = (
            np.stack(images) if images else np.zeros((0, *builder.info.features["image"].shape))
        )
        labels, index = np.asarray(labels), np.asarray(index)
        if name == "digits":  # scikit-learn's order, not the TFDS shuffle order
            order = np.argsort(index, kind="stable")
            images, labels = images[order], labels[order]
        return images, labels
    if not _tensorflow_available():
        raise ImportError(
            f"{name!r} under {builder.data_path} is stored as {builder.info.file_format}, "
            f"which can only be read with TensorFlow: pip install 'geomrobust[tf]', or "
            f"re-prepare it as array_record (tfds build {name} --file_format=array_record)"
        )
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return np.asarray(data["image"]), np.asarray(data["label"])


def _images_to_unit(images: np.ndarray, where: str) -> np.ndarray:
    """Integer images as float32 in ``[0, 1]``, decided from the values, not the dtype.

    Integers in ``0..255`` are 8-bit images (divided by 255), whatever their dtype (an int64
    or uint16 array of 8-bit pixels is common; dividing by the dtype's maximum would make it
    black). Other integer ranges are ambiguous (10-bit, 12-bit, 16-bit, labels...) and refused.
    """
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    lo, hi = (int(images.min()), int(images.max())) if images.size else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{where}: integer images ({images.dtype}) must hold 8-bit pixels in 0..255, got "
            f"values in {lo}..{hi}; convert them to floats in [0, 1] yourself (for example "
            f"images / 65535.0 for 16-bit pixels) and save those"
        )
    return images.astype(np.float32) / np.float32(255)


def _check_array(a: np.ndarray, name: str, where: str) -> None:
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: {name!r} must be a real numeric array, got dtype {a.dtype}"
            + (
                "; save its real part (np.real) if that is what you mean"
                if a.dtype.kind == "c"
                else ""
            )
        )


def _load_npz(path: Path, split: str, resize) -> ArrayDataset:
    """A dataset from a ``.npz`` of arrays (see :func:`load_dataset`), checked."""
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset file {path} does not exist")
    hint = "it is truncated or corrupted; export the dataset again (np.savez)"
    images = labels = k = keys = None
    try:
        z = np_load_closing(path)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} is a bare .npy array; save images and labels with np.savez")
        with z:
            keys = set(z.files)
            pre = f"{split}_" if f"{split}_images" in keys else ""
            if f"{pre}images" in keys and f"{pre}labels" in keys:
                images, labels = z[f"{pre}images"], z[f"{pre}labels"]
                k = z["num_classes"] if "num_classes" in keys else None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CorruptFileError(
            f"{path} is not a readable .npz file ({type(e).__name__}: {e}); {hint}"
        ) from None
    except ValueError as e:
        if "bare .npy" in str(e):
            raise
        if "pickle" in str(e) and keys is not None:
            raise ValueError(
                f"{path} holds object arrays that need pickle to load; geomrobust never "
                "unpickles (a pickle can run code). Save numeric arrays with np.savez"
            ) from None
        if "pickle" in str(e):  # np.load's answer to a file that is no .npz/.npy at all
            raise CorruptFileError(f"{path} is not an .npz archive; {hint}") from None
        raise CorruptFileError(f"{path} is not a readable .npz file ({e}); {hint}") from None
    if images is None:
        raise ValueError(
            f"{path} must hold 'images' and 'labels' (or '{split}_images' and "
            f"'{split}_labels'), found {sorted(keys)}"
        )
    _check_array(images, "images", str(path))
    _check_array(labels, "labels", str(path))
    if k is not None:
        if k.ndim != 0 or not np.issubdtype(k.dtype, np.integer) or int(k) < 1:
            raise ValueError(
                f"{path}: 'num_classes' must be one positive integer (a scalar), got "
                f"{k.dtype} array of shape {k.shape}; save num_classes=int(K)"
            )
        k = int(k)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or labels.shape != (images.shape[0],) or images.shape[0] == 0:
        raise ValueError(
            f"{path}: images must be (N, H, W, C) and labels (N,), got {images.shape} and "
            f"{labels.shape}"
        )
    if images.shape[-1] > 4 and images.shape[1] <= 4:
        raise ValueError(
            f"{path}: images look NCHW {images.shape}; transpose them to NHWC "
            "(np.transpose(images, (0, 2, 3, 1)))"
        )
    if np.issubdtype(images.dtype, np.integer):
        images = _images_to_unit(images, str(path))
    images = np.asarray(images, np.float32)
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{path}: images must be finite and in [0, 1]")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative integers")
    size = None if resize is None else as_size(resize)
    if size is not None and images.shape[1:3] != size:
        images = resize_images(images, size)
    k = int(labels.max()) + 1 if k is None else k
    if labels.max() >= k:
        raise ValueError(f"{path}: labels must lie in [0, num_classes={k})")
    return ArrayDataset(images, labels.astype(np.int32), k, path.stem)


def load_dataset(
    name: str,
    split: str = "test",
    *,
    data_dir: str | os.PathLike | None = None,
    resize: int | tuple[int, int] | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load an image classification dataset into memory as float32 NHWC in ``[0, 1]``.

    Parameters
    ----------
    name
        ``"digits"`` (embedded, 8x8x1, built locally from scikit-learn), ``"mnist"``,
        ``"fashion_mnist"`` (28x28x1), ``"cifar10"``, ``"svhn_cropped"`` (32x32x3), or the
        path of a ``.npz`` file holding ``images`` (``(N, H, W, C)`` or ``(N, H, W)``,
        floats in ``[0, 1]`` or integers in ``0..255``, read as 8-bit pixels whatever their
        dtype; other integer ranges and complex arrays are refused) and integer ``labels``
        (or ``<split>_images`` / ``<split>_labels`` per split) and optionally a scalar
        ``num_classes`` (default: the largest label + 1), e.g. a test set exported from
        another framework (NCHW arrays must be transposed to NHWC first).
    split
        A TFDS split: ``"train"`` or ``"test"`` (TFDS slicing such as ``"train[:1000]"``
        works for array_record data).
    data_dir
        TFDS data directory; default :func:`default_data_dir` (standard datasets already
        prepared under :func:`tfds_data_dir` are also found there when ``data_dir=None``).
    resize
        ``None``, an int ``s`` (``s x s``) or ``(H, W)``: antialiased bilinear resize, values
        kept in ``[0, 1]`` (:func:`resize_images`).
    download
        Allow downloading a missing standard dataset (never for ``download=False`` or when
        ``$GEOMROBUST_OFFLINE`` is set). The digits never need the network.

    Returns
    -------
    ArrayDataset
        ``images`` float32 ``(N, H, W, C)`` in ``[0, 1]``, ``labels`` int32 ``(N,)``.

    Raises
    ------
    DatasetNotFoundError
        (a ``FileNotFoundError``) the data is not prepared and cannot be downloaded now; the
        message says where it was looked for and how to provide it. Raised within seconds.
    ImportError
        The data is stored as tfrecord (or must be prepared by a TFDS builder that needs
        TensorFlow) and TensorFlow is not installed.
    ValueError, TypeError
        Unknown ``name`` or ``split``, a split selection that holds no examples (such as
        ``"test[:0]"``) or cannot be parsed, bad ``resize``; a ``.npz`` whose arrays
        break the rules above. A truncated or corrupted ``.npz`` raises
        :class:`geomrobust.io.CorruptFileError` (a ``ValueError``).
    """
    if isinstance(name, str | os.PathLike) and str(name).endswith(".npz"):
        return _load_npz(Path(name).expanduser(), split, resize)
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"name must be one of {', '.join(map(repr, DATASETS))} or a .npz file of arrays, "
            f"got {name!r}"
        )
    if not isinstance(split, str) or not split:
        raise TypeError(f"split must be a TFDS split name such as 'test', got {split!r}")
    size = None if resize is None else as_size(resize)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()

    builder = _make_builder(name, root)
    if not builder.is_prepared() and data_dir is None and name != "digits":
        # data prepared earlier by tfds.load in TFDS's own default data_dir is reused
        fallback = _make_builder(name, tfds_data_dir())
        if fallback.is_prepared():
            builder = fallback
    if not builder.is_prepared():
        builder = _prepare(name, builder, root, download)
    splits = sorted(builder.info.splits.keys())
    base = split.split("[", 1)[0]
    if base not in splits:
        raise ValueError(f"split must be one of {splits} for {name!r}, got {split!r}")

    try:
        count = int(builder.info.splits[split].num_examples)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"cannot read the split {split!r} of {name!r}: {' '.join(str(e).split())}"
        ) from None
    if count <= 0:
        raise ValueError(
            f"the split {split!r} of {name!r} selects no examples ({count}); give a "
            f"non-empty selection such as {base!r} or '{base}[:100]'"
        )
    images, labels = _read_split(name, builder, split)
    if images.ndim == 3:  # (N, H, W) -> (N, H, W, 1)
        images = images[..., None]
    if np.issubdtype(images.dtype, np.integer):
        images = images.astype(np.float32) / np.float32(np.iinfo(images.dtype).max)
    images = np.asarray(images, np.float32)
    if size is not None and images.shape[1:3] != size:
        images = resize_images(images, size)
    num_classes = int(builder.info.features["label"].num_classes)
    return ArrayDataset(images, np.asarray(labels, np.int32), num_classes, name)
