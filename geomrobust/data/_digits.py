"""The embedded default dataset: scikit-learn's handwritten digits as a local TFDS dataset.

The 1797 8x8 grey-level images that ship inside scikit-learn (``sklearn.datasets.load_digits``,
a copy of the UCI "Optical Recognition of Handwritten Digits" test set) are written once, with
no network and no TensorFlow, as a TFDS ``array_record`` dataset and read back with
``builder.as_data_source()``.

Split (fixed, deterministic, stratified): within each class, the examples are taken in
scikit-learn's order and every fifth one (rank ``r`` with ``r % 5 == 4``) goes to ``test``;
the rest go to ``train``. This gives 1442 train / 355 test images, about 80/20 in every class.

Features: ``image`` float32 ``(8, 8, 1)`` in ``[0, 1]`` (the raw 0..16 intensities divided by
16), ``label`` (10 classes) and ``index``, the position in ``load_digits()`` (for provenance).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["DIGITS_TEST_EVERY", "Digits", "digits_split_indices"]

#: Within each class, every ``DIGITS_TEST_EVERY``-th example (in scikit-learn's order) is test.
DIGITS_TEST_EVERY = 5


def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Indices into ``load_digits()`` of the fixed ``train`` / ``test`` split (sorted).

    Stratified by class: the ``r``-th example of each class (``r = 0, 1, ...`` in the original
    order) is a test example when ``r % 5 == 4``.
    """
    labels = np.asarray(labels)
    rank = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(where.size)
    is_test = rank % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS builder for scikit-learn's 8x8 digits (no download, no TensorFlow needed).

    Not registered in the global TFDS registry (importing geomrobust has no side effects);
    build it directly: ``Digits(data_dir=..., file_format="array_record")``.
    """

    name = "digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Stratified fixed 80/20 split; images float32 in [0, 1]."
    }

    # No checksums file or metadata lives next to this module. TFDS 4.9's own `code_path`
    # also needs the `importlib_resources` backport for modules outside tensorflow_datasets.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly: dataset_info_from_configs would look for metadata
        # files next to this module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "scikit-learn handwritten digits (8x8, 10 classes), intensities scaled to "
                "[0, 1]; fixed stratified split: every 5th example of each class is test."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
            citation=(
                "Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten "
                "Digits. UCI Machine Learning Repository."
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return {
            "train": self._generate_examples("train"),
            "test": self._generate_examples("test"),
        }

    def _generate_examples(self, split: str):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (np.asarray(digits.images, np.float32) / 16.0)[..., None]
        labels = np.asarray(digits.target, np.int64)
        for i in digits_split_indices(labels)[split]:
            yield int(i), {"image": images[i], "label": int(labels[i]), "index": int(i)}
