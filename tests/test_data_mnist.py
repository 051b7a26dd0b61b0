"""The standard-dataset path, for real: TFDS's own ``mnist`` builder prepares genuine
array_record data from small raw MNIST (idx-ubyte) files that the test writes, and
``load_dataset("mnist", ...)`` reads them back.

What is faked, exactly as TFDS's own ``DatasetBuilderTestCase`` does for its mnist test:
``DownloadManager.download_and_extract`` returns the paths of local, already-extracted idx files
(after checking that the requested URLs are MNIST's), and ``mnist._TRAIN_EXAMPLES`` /
``_TEST_EXAMPLES`` are set to the small sizes. Everything else is the real TFDS code: the
builder's ``_info`` / ``_split_generators`` / ``_generate_examples``, the ``Image`` feature's
PNG encoding, the array_record writer, ``dataset_info.json``, and our reader.

Without TensorFlow (this test environment) three TensorFlow calls the builder makes are served
by a stand-in: ``tf.io.gfile.GFile`` -> ``open``, ``tf.image.encode_png`` -> Pillow's PNG
encoder, ``tf.executing_eagerly`` -> True; and TFDS 4.9's reference to the
``importlib_resources`` backport is pointed at the standard library's ``importlib.resources``.
With TensorFlow installed, the real functions are used.
"""

import importlib.resources
import importlib.util
import io
import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import dataset_builder
from tensorflow_datasets.core.features import image_feature
from tensorflow_datasets.core.utils import tf_utils
from tensorflow_datasets.image_classification import mnist

from geomrobust.data import _load, load_dataset

N_TRAIN, N_TEST = 12, 5


class _EagerValue:
    def __init__(self, value):
        self._value = value

    def numpy(self):
        return self._value


def _encode_png(image: np.ndarray) -> _EagerValue:
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="png")
    return _EagerValue(buf.getvalue())


_TF_STAND_IN = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=open)),
    image=types.SimpleNamespace(encode_png=_encode_png),
    executing_eagerly=lambda: True,
)


def _write_idx(path, array: np.ndarray, magic: int):
    """MNIST's idx format: big-endian int32 magic and sizes, then the uint8 data."""
    header = np.array([magic, *array.shape], ">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def raw_mnist(tmp_path_factory):
    """Small random MNIST-format files (extracted idx-ubyte) and the arrays they hold."""
    raw = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, split, n in (("train", "train", N_TRAIN), ("t10k", "test", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        arrays[split] = (images, labels)
    return raw, arrays


@pytest.fixture
def fake_download(raw_mnist, monkeypatch):
    raw, _ = raw_mnist
    requested = []

    def download_and_extract(self, url_or_urls):
        def local(url):
            assert url.startswith(mnist.MNIST.URL), url
            requested.append(url)
            return os.fspath(raw / url.rsplit("/", 1)[-1].removesuffix(".gz"))

        return tfds.core.utils.map_nested(local, url_or_urls)

    monkeypatch.setattr(
        tfds.core.download.DownloadManager, "download_and_extract", download_and_extract
    )
    monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", N_TRAIN)
    monkeypatch.setattr(mnist, "_TEST_EXAMPLES", N_TEST)
    if importlib.util.find_spec("importlib_resources") is None:
        monkeypatch.setattr(dataset_builder, "importlib_resources", importlib.resources)
    if importlib.util.find_spec("tensorflow") is None:
        for module in (mnist, image_feature, tf_utils):
            monkeypatch.setattr(module, "tf", _TF_STAND_IN)
        monkeypatch.setattr(_load, "_tensorflow_available", lambda: True)
    return requested


def _as_pairs(images_u8, labels):
    return sorted((im.tobytes(), int(lab)) for im, lab in zip(images_u8, labels, strict=True))


def test_mnist_prepared_by_tfds_builder_and_loaded(tmp_path, raw_mnist, fake_download, monkeypatch):
    _, arrays = raw_mnist
    # the download hosts are "reachable" for this test; load_dataset then runs the real
    # builder (through the faked download manager) and writes array_record
    monkeypatch.setattr(_load, "_unreachable_hosts", lambda hosts: [])
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    assert sorted(set(fake_download)) == sorted(
        mnist.MNIST.URL + f
        for f in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    )
    version_dir = tmp_path / "mnist" / "3.0.1"
    assert sorted(p.name for p in version_dir.glob("*array_record*")) == [
        "mnist-test.array_record-00000-of-00001",
        "mnist-train.array_record-00000-of-00001",
    ]
    assert '"fileFormat": "array_record"' in (version_dir / "dataset_info.json").read_text()

    # read back with no network and no download: exact pixels and labels, as a set of pairs
    monkeypatch.setattr(_load, "_unreachable_hosts", None)
    for split, n in (("test", N_TEST), ("train", N_TRAIN)):
        ds = load_dataset("mnist", split, data_dir=tmp_path, download=False)
        if split == "test":
            np.testing.assert_array_equal(ds.images, test.images)
        assert ds.images.shape == (n, 28, 28, 1) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int32 and ds.num_classes == 10 and ds.name == "mnist"
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        u8 = np.rint(ds.images[..., 0] * 255.0).astype(np.uint8)
        np.testing.assert_allclose(ds.images[..., 0], u8 / np.float32(255.0), atol=1e-7)
        assert _as_pairs(u8, ds.labels) == _as_pairs(*arrays[split])

    # without data_dir: data that tfds.load left in TFDS's default data_dir is found there
    monkeypatch.setenv("GEOMROBUST_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    np.testing.assert_array_equal(load_dataset("mnist", "test", download=False).images, test.images)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "also_empty"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty" / "mnist" / "3.0.1")):
        load_dataset("mnist", "test", download=False)

    big = load_dataset("mnist", "test", data_dir=tmp_path, resize=32, download=False)
    assert big.images.shape == (N_TEST, 32, 32, 1)
    assert 0.0 <= big.images.min() and big.images.max() <= 1.0


def test_prepare_without_tensorflow_is_explained(tmp_path, monkeypatch):
    """Reachable hosts but no TensorFlow: a clear ImportError before any download."""
    monkeypatch.setattr(_load, "_unreachable_hosts", lambda hosts: [])
    monkeypatch.setattr(_load, "_tensorflow_available", lambda: False)
    with pytest.raises(ImportError, match=r"needs TensorFlow: pip install 'geomrobust\[tf\]'"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert not (tmp_path / "mnist" / "3.0.1").exists()
