"""The embedded digits (local TFDS builder), load_dataset, resizing, offline failures, batches."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from geomrobust.data import (
    ArrayDataset,
    DatasetNotFoundError,
    Digits,
    default_data_dir,
    iterate_batches,
    load_dataset,
    resize_images,
)
from geomrobust.data._digits import digits_split_indices


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data_dir in which the digits are prepared once for the whole module."""
    root = tmp_path_factory.mktemp("tfds")
    load_dataset("digits", "test", data_dir=root)
    return root


@pytest.fixture(scope="module")
def sk():
    d = load_digits()
    return np.asarray(d.images, np.float64) / 16.0, np.asarray(d.target)


# --- digits --------------------------------------------------------------------------------


def test_digits_round_trip(data_dir, sk):
    sk_images, sk_labels = sk
    idx = digits_split_indices(sk_labels)
    train = load_dataset("digits", "train", data_dir=data_dir)
    test = load_dataset("digits", "test", data_dir=data_dir)
    assert isinstance(test, ArrayDataset)
    assert (len(train.labels), len(test.labels)) == (1442, 355)
    for ds, split in ((train, "train"), (test, "test")):
        assert ds.images.shape == (len(idx[split]), 8, 8, 1)
        assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
        assert ds.num_classes == 10 and ds.name == "digits"
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0 and ds.images.max() == 1.0
        # the stored examples are exactly scikit-learn's, in scikit-learn's order
        np.testing.assert_array_equal(ds.labels, sk_labels[idx[split]])
        np.testing.assert_allclose(ds.images[..., 0], sk_images[idx[split]], rtol=0, atol=1e-7)
    # disjoint and complete
    assert not set(idx["train"]) & set(idx["test"])
    assert len(idx["train"]) + len(idx["test"]) == len(sk_labels) == 1797
    # stratified: every class has floor(n_c / 5) test examples
    counts = np.bincount(sk_labels)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), counts // 5)


def test_digits_split_is_fixed_rule(sk):
    """The split is a fixed rule on the original order, not a random draw."""
    _, labels = sk
    idx = digits_split_indices(labels)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        np.testing.assert_array_equal(np.intersect1d(members, idx["test"]), members[4::5])


def test_digits_deterministic_and_cached(data_dir, monkeypatch):
    files = sorted((data_dir / "digits" / "1.0.0").glob("*array_record*"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]

    def fail(*args, **kwargs):
        raise AssertionError("prepared data must be reused, not rebuilt")

    monkeypatch.setattr(Digits, "download_and_prepare", fail)
    a = load_dataset("digits", "train", data_dir=data_dir)
    b = load_dataset("digits", "train", data_dir=data_dir)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_default_data_dir_from_env(data_dir, monkeypatch):
    monkeypatch.setenv("GEOMROBUST_DATA_DIR", str(data_dir))
    assert default_data_dir() == data_dir
    monkeypatch.setattr(Digits, "download_and_prepare", None)  # must not be needed
    assert load_dataset("digits").images.shape == (355, 8, 8, 1)
    monkeypatch.delenv("GEOMROBUST_DATA_DIR")
    assert str(default_data_dir()).endswith(
        os.path.join(".cache", "geomrobust", "tensorflow_datasets")
    )


def test_concurrent_preparation(tmp_path):
    """Two processes preparing the same fresh data_dir at once both succeed, same data."""
    script = textwrap.dedent(
        f"""
        import hashlib, sys
        from geomrobust.data import load_dataset
        d = load_dataset("digits", "train", data_dir={str(tmp_path)!r})
        print(hashlib.sha256(d.images.tobytes() + d.labels.tobytes()).hexdigest())
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1]
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1.0.0"]


# --- resizing ------------------------------------------------------------------------------


@pytest.mark.parametrize("resize, shape", [(32, (32, 32)), ((28, 20), (28, 20)), (4, (4, 4))])
def test_resize_shapes_and_range(data_dir, resize, shape):
    ds = load_dataset("digits", "test", data_dir=data_dir, resize=resize)
    assert ds.images.shape == (355, *shape, 1) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    # bilinear resizing preserves the mean intensity up to edge effects
    base = load_dataset("digits", "test", data_dir=data_dir)
    np.testing.assert_allclose(ds.images.mean(), base.images.mean(), rtol=0.1)


def test_resize_images_exact_cases():
    rng = np.random.default_rng(0)
    const = np.full((3, 5, 7, 2), 0.3, np.float32)
    np.testing.assert_allclose(resize_images(const, (11, 4)), 0.3, rtol=1e-6)
    x = rng.uniform(size=(2, 6, 6, 3)).astype(np.float64)
    y = resize_images(x, 6)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)  # same size: identity
    assert y.dtype == np.float64
    # upsampling a horizontal linear ramp by bilinear interpolation keeps it linear inside
    ramp = np.broadcast_to(np.linspace(0, 1, 8)[None, None, :, None], (1, 4, 8, 1))
    up = resize_images(ramp, (4, 16))[0, 0, 2:-2, 0]
    np.testing.assert_allclose(np.diff(up, 2), 0, atol=1e-12)
    with pytest.raises(ValueError, match="NHWC"):
        resize_images(x[0], 4)
    with pytest.raises(ValueError, match="size must be positive"):
        resize_images(x, 0)


# --- errors and missing data ---------------------------------------------------------------


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        load_dataset("digits", "validation", data_dir=data_dir)
    with pytest.raises(TypeError, match="resize must be an int"):
        load_dataset("digits", data_dir=data_dir, resize=2.5)
    with pytest.raises(ValueError, match="resize must be an int or a pair"):
        load_dataset("digits", data_dir=data_dir, resize=(1, 2, 3))


def _assert_not_found_message(msg, root, name, version):
    assert os.path.join(str(root), name, version) in msg
    assert "copy a prepared TFDS directory" in msg
    assert "network access" in msg
    assert f"tfds build {name}" in msg and "--file_format=array_record" in msg


@pytest.mark.parametrize("name, version", [("cifar10", "3.0.2"), ("mnist", "3.0.1")])
def test_missing_dataset_offline_fails_fast(tmp_path, name, version):
    """No network here: the failure is immediate, with where and how in the message."""
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, "test", data_dir=tmp_path)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, elapsed
    assert isinstance(info.value, FileNotFoundError)
    _assert_not_found_message(str(info.value), tmp_path, name, version)
    assert "did not answer" in str(info.value)


def test_hanging_resolver_is_cut_off(tmp_path, monkeypatch):
    """A DNS lookup / connect that hangs (ignoring socket timeouts) costs at most ~2 s."""

    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError, match="did not answer within 2 s"):
        load_dataset("svhn_cropped", "test", data_dir=tmp_path)
    assert time.monotonic() - start < 5.0


def test_no_download_requested(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DatasetNotFoundError, match="download=False") as info:
        load_dataset("fashion_mnist", "train", data_dir=tmp_path, download=False)
    _assert_not_found_message(str(info.value), tmp_path, "fashion_mnist", "3.0.1")
    monkeypatch.setenv("GEOMROBUST_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="GEOMROBUST_OFFLINE is set"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)
    # the digits need no network at all, whatever the flags say
    ds = load_dataset("digits", "test", data_dir=tmp_path / "fresh", download=False)
    assert ds.images.shape == (355, 8, 8, 1)


def test_tfrecord_without_tensorflow_is_explained(tmp_path):
    """Data prepared as tfrecord (the tfds.load default) needs TensorFlow to read."""
    pytest.importorskip("sklearn")
    if __import__("importlib").util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed: tfrecord data is readable")
    load_dataset("digits", "test", data_dir=tmp_path)
    info_path = tmp_path / "digits" / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ImportError, match=r"pip install 'geomrobust\[tf\]'"):
        load_dataset("digits", "test", data_dir=tmp_path)


# --- batches -------------------------------------------------------------------------------


def test_iterate_batches_deterministic_and_covering():
    n, bs = 23, 5
    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1))
    labels = np.arange(n, dtype=np.int32)
    key = jax.random.key(3)
    full = list(iterate_batches(images, labels, bs, key=key, drop_remainder=False))
    again = list(iterate_batches(images, labels, bs, key=key, drop_remainder=False))
    assert [len(b[1]) for b in full] == [5, 5, 5, 5, 3]
    seen = np.concatenate([b[1] for b in full])
    np.testing.assert_array_equal(np.sort(seen), labels)  # every example exactly once
    np.testing.assert_array_equal(seen, np.concatenate([b[1] for b in again]))
    for xb, yb in full:  # images and labels stay paired
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)
    assert not np.array_equal(seen, labels)  # shuffled
    other = np.concatenate(
        [b[1] for b in iterate_batches(images, labels, bs, key=jax.random.key(4))]
    )
    assert not np.array_equal(other, seen[: len(other)])
    dropped = list(iterate_batches(images, labels, bs, key=key))
    assert [len(b[1]) for b in dropped] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in dropped]), seen[:20])
    ordered = np.concatenate([b[1] for b in iterate_batches(images, labels, 4, shuffle=False)])
    np.testing.assert_array_equal(ordered, labels[:20])


def test_iterate_batches_errors():
    x, y = np.zeros((4, 2)), np.zeros(3)
    with pytest.raises(ValueError, match="same length"):
        iterate_batches(x, y, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        iterate_batches(x, x, 0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        iterate_batches(x, x, 2)


def test_iterate_batches_positional_key_deprecated():
    """The old form iterate_batches(key, images, labels, batch_size) works one release."""
    x, y = np.arange(10.0)[:, None], np.arange(10)
    key = jax.random.key(1)
    with pytest.warns(DeprecationWarning, match="pass key="):
        old = list(iterate_batches(key, x, y, 3))
    new = list(iterate_batches(x, y, 3, key=key))
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in old]), np.concatenate([b[1] for b in new])
    )
    with pytest.raises(TypeError, match="pass key= only"):
        iterate_batches(key, x, y, 3, key=key)
    with pytest.warns(DeprecationWarning, match="pass key="):
        kw = list(iterate_batches(key, x, y, batch_size=3))  # old form, batch_size by name
    np.testing.assert_array_equal(kw[0][1], new[0][1])


def test_npz_dataset_file(tmp_path):
    """A dataset exported from another framework as a .npz of NHWC arrays (offline, no TFDS)."""
    from geomrobust.data import load_dataset

    rng = np.random.default_rng(0)
    path = tmp_path / "exported.npz"
    np.savez(path, test_images=(rng.random((5, 6, 6, 3)) * 255).astype(np.uint8),
             test_labels=np.array([0, 1, 2, 1, 0]), num_classes=10)  # fmt: skip
    d = load_dataset(str(path), "test")
    assert d.images.dtype == np.float32 and d.images.shape == (5, 6, 6, 3)
    assert 0 <= d.images.min() and d.images.max() <= 1 and d.num_classes == 10
    assert load_dataset(str(path), "test", resize=4).images.shape == (5, 4, 4, 3)
    np.savez(tmp_path / "nchw.npz", images=rng.random((5, 3, 6, 6)), labels=np.zeros(5, int))
    with pytest.raises(ValueError, match="NCHW"):
        load_dataset(str(tmp_path / "nchw.npz"))
    np.savez(tmp_path / "range.npz", images=2 * rng.random((5, 6, 6, 1)), labels=np.zeros(5, int))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        load_dataset(str(tmp_path / "range.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int16, np.uint8])
def test_npz_integer_images_in_0_255_are_8bit_whatever_the_dtype(tmp_path, dtype):
    """Integer pixels are read from their values: 0..255 is 8-bit (divide by 255), never by
    the dtype's maximum (int64 gave a brightest pixel of 2.8e-17: black images)."""
    from geomrobust.data import load_dataset

    pixels = np.random.default_rng(1).integers(0, 256, (4, 5, 5, 1))
    pixels[0, 0, 0, 0] = 255
    np.savez(tmp_path / "d.npz", images=pixels.astype(dtype), labels=np.arange(4) % 2)
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.images.dtype == np.float32 and d.images.max() == 1.0
    np.testing.assert_array_equal(d.images, pixels.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("uint16 0..65535", r"0\.\.255.*floats in \[0, 1\]"),
        ("int16 negative", r"0\.\.255"),
        ("complex images", "real numeric array.*np.real"),
        ("complex labels", "'labels' must be a real"),
        ("num_classes vector", "'num_classes' must be one positive integer"),
        ("num_classes float", "'num_classes' must be one positive integer"),
        ("object images", "never unpickles"),
    ],
)
def test_npz_dataset_refuses_ambiguous_arrays(tmp_path, case, text):
    from geomrobust.data import load_dataset

    rng = np.random.default_rng(0)
    unit, labels = rng.random((4, 5, 5, 1)), np.arange(4) % 2
    arrays = {
        "uint16 0..65535": {"images": (unit * 65535).astype(np.uint16), "labels": labels},
        "int16 negative": {"images": (unit * 255 - 5).astype(np.int16), "labels": labels},
        "complex images": {"images": unit + 0j, "labels": labels},
        "complex labels": {"images": unit, "labels": labels + 0j},
        "num_classes vector": {"images": unit, "labels": labels, "num_classes": [2, 2]},
        "num_classes float": {"images": unit, "labels": labels, "num_classes": 2.5},
        "object images": {"images": np.array([None, 1], object), "labels": labels},
    }[case]
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=text):
        load_dataset(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("cut", ["half", "tail", "bad crc", "not a zip"])
def test_npz_dataset_truncated_is_a_corrupt_file_error(tmp_path, cut):
    from geomrobust.data import load_dataset
    from geomrobust.io import CorruptFileError

    good = tmp_path / "good.npz"
    np.savez(good, images=np.full((4, 5, 5, 1), 0.5), labels=np.arange(4) % 2)
    data = good.read_bytes()
    bad = {
        "half": data[: len(data) // 2],
        "tail": data[:-30],
        "bad crc": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "not a zip": b"\x00" * 64,
    }[cut]
    (tmp_path / "bad.npz").write_bytes(bad)
    with pytest.raises(CorruptFileError, match="truncated or corrupted"):
        load_dataset(str(tmp_path / "bad.npz"))
