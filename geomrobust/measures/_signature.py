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

from .._programs import cached_program
from .._validation import check_batch, check_classifier, check_labels
from ..ops import batch_logit_difference_grads, map_in_chunks

__all__ = ["MarginSignature", "first_order_margins", "layer_splits", "margin_signature"]


class MarginSignature(NamedTuple):
    """margins ``(N,)`` signed first-order margins; runner_up ``(N,)`` class ``j``;
    stats ``(7,)`` = ``[lower fence, Q1, Q2, Q3, upper fence, mean, std]`` of the margins;
    normalizer ``ν = sqrt(tr Cov(h))``; normalized_stats ``stats / ν``."""

    margins: Array
    runner_up: Array
    stats: np.ndarray
    normalizer: float
    normalized_stats: np.ndarray


STAT_NAMES = ("lower_fence", "q1", "median", "q3", "upper_fence", "mean", "std")


def first_order_margins(
    head_fn: Callable[[Array], Array], h: Array, y: Array, *, chunk_size: int = 256
) -> tuple[Array, Array]:
    """``(f_y - f_j) / ||∇_h (f_y - f_j)||`` and ``j = argmax_{k≠y} f_k`` at each row of ``h``.

    ``head_fn`` maps a batch of activations ``(N, *a)`` to logits ``(N, K)``; one forward
    pass and one VJP per chunk (:func:`geomrobust.ops.batch_logit_difference_grads`),
    jitted once per ``head_fn`` object (cached: calling again does not recompile).
    Rows with a zero gradient get margin ``+inf`` (or ``-inf``) by the sign of ``f_y - f_j``.
    """
    h = jnp.asarray(h)
    y = jnp.asarray(y)
    run = _margins_program(head_fn)
    return map_in_chunks(run, h, y, chunk_size=min(int(chunk_size), h.shape[0]))


@cached_program
def _margins_program(head_fn):
    """The jitted chunk of :func:`first_order_margins`, one per head function."""

    def run(hc, yc):
        logits = head_fn(hc)
        masked = jnp.where(jax.nn.one_hot(yc, logits.shape[-1], dtype=bool), -jnp.inf, logits)
        j = jnp.argmax(masked, axis=-1).astype(jnp.int32)
        F, g = batch_logit_difference_grads(head_fn, hc, yc, j)  # F = f_j - f_y
        n = jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))
        return -F / n, j

    return jax.jit(run)


@cached_program
def _features_program(features_fn):
    """``features_fn`` jitted, one per function (a split's features are reused across calls)."""
    return jax.jit(features_fn)


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
    chunk_size: int = 256,
) -> dict[str, MarginSignature]:
    """The margin signature at the input and at each split layer (Jiang et al. 2019).

    Parameters
    ----------
    logits_fn : ``(N, *s) -> (N, K)``.
    x : ``(N, *s)``; y : ``(N,)`` true labels.
    splits : ``{name: (features_fn, head_fn)}`` with ``head_fn(features_fn(x)) = logits``
        (e.g. :func:`layer_splits`); the input layer ``"input"`` is always included.
    chunk_size : examples per jitted call. The programs are cached per function object, so a
        second call with the same ``logits_fn`` and the same ``splits`` (build them once:
        :func:`layer_splits` makes new functions on every call) does not recompile.

    Returns
    -------
    dict ``{layer name: MarginSignature}``, ``"input"`` first.
    """
    check_batch(x, "x")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    k = check_classifier(logits_fn, x)
    check_labels(y, k, x.shape[0], "y")
    layers = {"input": (_identity, logits_fn)}
    layers.update(splits or {})
    out = {}
    for name, (features_fn, head_fn) in layers.items():
        feats = _features_program(features_fn)
        h = map_in_chunks(feats, x, chunk_size=min(int(chunk_size), x.shape[0]))
        m, j = first_order_margins(head_fn, h, y, chunk_size=chunk_size)
        hf = np.asarray(h, np.float64).reshape(h.shape[0], -1)
        nu = float(np.sqrt(np.sum(np.var(hf, axis=0))))
        stats = _stats(np.asarray(m, np.float64))
        out[name] = MarginSignature(m, j, stats, nu, stats / nu if nu > 0 else stats * np.nan)
    return out


def layer_splits(model) -> dict[str, tuple[Callable, Callable]]:
    """``{name: (features_fn, head_fn)}`` for the hidden layers of a geomrobust NNX model.

    ``MLP``: ``"hidden1"``, ``"hidden2"``, ... (after each nonlinearity). ``LeNet``:
    ``"conv1"``, ``"conv2"`` (after nonlinearity and pooling), ``"fc1"``, ``"fc2"``. The
    functions close over a snapshot of the parameters (evaluation mode). Other models
    (``ResNet``) raise ``TypeError``.
    """
    from flax import nnx

    from ..models import MLP, LeNet
    from ..models._layers import pool2d

    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a geomrobust NNX model, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    m = nnx.merge(graphdef, state)
    m.eval()
    if isinstance(m, MLP):
        layers = list(m.layers)
        out = {}
        for depth in range(1, len(layers)):

            def feat(x, depth=depth):
                h = x.reshape(x.shape[0], -1)
                for layer in layers[:depth]:
                    h = m.act(layer(h))
                return h

            def head(h, depth=depth):
                for i, layer in enumerate(layers[depth:], start=depth):
                    h = layer(h)
                    if i < len(layers) - 1:
                        h = m.act(h)
                return h

            out[f"hidden{depth}"] = (feat, head)
        return out
    if isinstance(m, LeNet):
        stages = [
            (
                "conv1",
                lambda h: pool2d(m.act(m.conv1(h.reshape(h.shape[0], *m.input_hwc))), m.pool),
            ),
            ("conv2", lambda h: pool2d(m.act(m.conv2(h)), m.pool)),
            ("fc1", lambda h: m.act(m.fc1(h.reshape(h.shape[0], -1)))),
            ("fc2", lambda h: m.act(m.fc2(h))),
            ("out", lambda h: m.out(h)),
        ]
        out = {}
        for s in range(len(stages) - 1):

            def feat(x, s=s):
                for _, f in stages[: s + 1]:
                    x = f(x)
                return x

            def head(h, s=s):
                for _, f in stages[s + 1 :]:
                    h = f(h)
                return h

            out[stages[s][0]] = (feat, head)
        return out
    raise TypeError(
        f"layer_splits supports the MLP and LeNet models, got {type(model).__name__}; "
        "pass splits={name: (features_fn, head_fn)} for other models"
    )
