"""Margin-distribution signature (Jiang, Krishnan, Mobahi, Bengio, "Predicting the
generalization gap in deep networks with margin distributions", ICLR 2019).

At a layer with activation ``h = φ(x)`` and head ``f = ψ(h)`` (the logits), the first-order
margin of an example of class ``i`` with respect to the runner-up ``j = argmax_{k≠i} f_k`` is

    d(x) = (f_i - f_j) / ||∇_h (f_i - f_j)||_2,

the distance from ``h`` to the linearized boundary between ``i`` and ``j`` in the layer's
space (signed: negative for a misclassified example). At the input layer (``h = x``) it is
the first-order (one DeepFool step) margin. The signature of a layer is a few statistics of the
distribution of ``d`` over a data set: the quartiles ``Q1, Q2, Q3`` and the fences
``Q1 - 1.5 IQR``, ``Q3 + 1.5 IQR`` (the paper's five numbers), plus mean and standard
deviation. Jiang et al. normalize the margins of a layer by its total variation
``ν = sqrt(tr Cov(h))`` so that they are scale invariant; both are reported.

Hidden layers need a split of the model into ``(features, head)``; :func:`layer_splits` gives
them for the package's NNX ``MLP`` (every hidden layer) and ``LeNet`` (after each pooled
convolution and each hidden dense layer). ResNets are not split (their skip connections make
a layer's head a nontrivial function); pass your own splits for other models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import deprecated_alias
from .._validation import check_batch, check_classifier, check_labels
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ..models._splits import layer_splits
from ..ops import batch_logit_difference_grads

__all__ = [
    "FirstOrderMargins",
    "LayerSignature",
    "MarginSignature",
    "first_order_margins",
    "layer_splits",
    "margin_signature",
]


class LayerSignature(NamedTuple):
    """The signature of one layer (:meth:`MarginSignature.layer`): margins ``(N,)`` signed
    first-order margins; runner_up ``(N,)`` class ``j``; stats ``(7,)`` =
    ``[lower fence, Q1, Q2, Q3, upper fence, mean, std]`` of the margins; normalizer
    ``ν = sqrt(tr Cov(h))``; normalized_stats ``stats / ν``."""

    margins: Array
    runner_up: Array
    stats: np.ndarray
    normalizer: float
    normalized_stats: np.ndarray


class MarginSignature(NamedTuple):
    """The margin signature of ``L`` layers (:func:`margin_signature`), ``"input"`` first.

    layers : ``(L,)`` layer names; margins : ``(L, N)`` signed first-order margins;
    runner_up : ``(L, N)`` class ``j``; stats : ``(L, 7)`` = ``[lower fence, Q1, Q2, Q3,
    upper fence, mean, std]`` of each layer's margins; normalizer : ``(L,)``
    ``ν = sqrt(tr Cov(h))``; normalized_stats : ``(L, 7)`` ``stats / ν``.
    ``sig.layer(name)`` is one layer's :class:`LayerSignature`.
    """

    layers: tuple[str, ...]
    margins: Array
    runner_up: Array
    stats: np.ndarray
    normalizer: np.ndarray
    normalized_stats: np.ndarray

    def layer(self, name: str) -> LayerSignature:
        """The signature of the layer ``name``."""
        if name not in self.layers:
            raise KeyError(f"no layer {name!r}; the layers are {list(self.layers)}")
        i = self.layers.index(name)
        return LayerSignature(
            self.margins[i], self.runner_up[i], self.stats[i], float(self.normalizer[i]),
            self.normalized_stats[i],
        )  # fmt: skip

    def __getitem__(self, item):
        if isinstance(item, str):  # the dict of one release ago
            deprecated_alias("margin_signature(...)[name]", "margin_signature(...).layer(name)")
            return self.layer(item)
        return tuple.__getitem__(self, item)

    def items(self):
        """Deprecated: ``(name, LayerSignature)`` pairs, as the dict of one release ago."""
        deprecated_alias("margin_signature(...).items()", "the stacked fields and .layer(name)")
        return [(name, self.layer(name)) for name in self.layers]


class FirstOrderMargins(NamedTuple):
    """margins ``(N,)`` ``(f_y - f_j) / ||∇_h (f_y - f_j)||``; runner_up ``(N,)`` ``j``."""

    margins: Array
    runner_up: Array


STAT_NAMES = ("lower_fence", "q1", "median", "q3", "upper_fence", "mean", "std")


def first_order_margins(
    head_fn: Callable[[Array], Array],
    h: Array,
    y: Array,
    *,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> FirstOrderMargins:
    """``(f_y - f_j) / ||∇_h (f_y - f_j)||`` and ``j = argmax_{k≠y} f_k`` at each row of ``h``.

    ``head_fn`` maps a batch of activations ``(N, *a)`` to logits ``(N, K)``; one forward
    pass and one VJP per chunk (:func:`geomrobust.ops.batch_logit_difference_grads`),
    compiled once per head architecture (a classifier pytree, or a plain function: static).
    Rows with a zero gradient get margin ``+inf`` (or ``-inf``) by the sign of ``f_y - f_j``.
    """
    head = as_classifier(head_fn)
    h = jnp.asarray(h)
    y = jnp.asarray(y)
    m, j = run_program(
        _margins_program, (head,), (h, y), chunk_size=chunk_size, devices=devices,
        progress=progress, desc="first-order margins",
    )  # fmt: skip
    return FirstOrderMargins(m, j)


@jax.jit
def _margins_program(head, hc, yc):
    """The chunk of :func:`first_order_margins` (one program per head architecture)."""
    logits = head(hc)
    masked = jnp.where(jax.nn.one_hot(yc, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    j = jnp.argmax(masked, axis=-1).astype(jnp.int32)
    F, g = batch_logit_difference_grads(head, hc, yc, j)  # F = f_j - f_y
    n = jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))
    return -F / n, j


@jax.jit
def _features_program(features, xc):
    """A split's features of a chunk (one program per architecture and layer)."""
    return features(xc)


def _identity(z):
    """The features of the input layer."""
    return z


def _stats(m: np.ndarray) -> np.ndarray:
    m = m[np.isfinite(m)]
    if m.size == 0:
        return np.full(7, np.nan)
    q1, q2, q3 = np.percentile(m, [25, 50, 75])
    iqr = q3 - q1
    return np.array([q1 - 1.5 * iqr, q1, q2, q3, q3 + 1.5 * iqr, m.mean(), m.std()])


def margin_signature(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    splits: Mapping[str, tuple[Callable, Callable]] | None = None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
) -> MarginSignature:
    """The margin signature at the input and at each split layer (Jiang et al. 2019).

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)`` (any form :func:`geomrobust.as_classifier`
        accepts).
    x : ``(N, *s)``; y : ``(N,)`` true labels.
    splits : ``{name: (features_fn, head_fn)}`` with ``head_fn(features_fn(x)) = logits``
        (e.g. :func:`layer_splits`); the input layer ``"input"`` is always included.
    chunk_size : examples per jitted call. The programs take the classifier and the splits
        as pytree arguments (:func:`geomrobust.models.layer_splits` returns classifiers), so
        a second call, with the same or another model of the same architecture, does not
        recompile.
    devices : the executor's devices (see :func:`geomrobust.engine.map_chunks`).

    Returns
    -------
    MarginSignature, ``"input"`` first (``.layer(name)`` for one layer).
    """
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    k = check_classifier(clf, x)
    check_labels(y, k, x.shape[0], "y")
    layers = {"input": (_identity, clf)}
    layers.update(splits or {})
    out = []
    for features_fn, head_fn in layers.values():
        feats = as_classifier(features_fn)
        h = run_program(_features_program, (feats,), (x,), chunk_size=chunk_size,
                        devices=devices)  # fmt: skip
        m, j = first_order_margins(head_fn, h, y, chunk_size=chunk_size, devices=devices)
        hf = np.asarray(h, np.float64).reshape(h.shape[0], -1)
        nu = float(np.sqrt(np.sum(np.var(hf, axis=0))))
        stats = _stats(np.asarray(m, np.float64))
        out.append((m, j, stats, nu, stats / nu if nu > 0 else stats * np.nan))
    m, j, stats, nu, normalized = zip(*out, strict=True)
    return MarginSignature(
        tuple(layers), jnp.stack(m), jnp.stack(j), np.stack(stats), np.asarray(nu),
        np.stack(normalized),
    )  # fmt: skip
