"""Margins inside DCT frequency bands ("Hold me tight!").

Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Hold me tight! Influence of discriminative
features on deep network boundaries", NeurIPS 2020. The 2-D orthonormal DCT basis of an
``H x W`` image is cut into ``K x K`` blocks of atoms along the diagonal, ``[jT, jT + K)²``,
each tensored with all ``C`` channels (a subspace of dimension ``s = C K²``); subspace-
constrained DeepFool measures the margin of every example inside every block. Small margins at
low frequencies and very large ones (invariance) at high frequencies is the typical profile of
MNIST-like data; ``geomrobust.data.dct_flip`` flips it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

from ..data import dct_matrix
from ..models import as_classifier
from ..search._driver import deepfool_runs

__all__ = ["BandSummary", "SubspaceMargins", "dct_subspaces", "subspace_margins", "summarize_bands"]


def _image_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 3:
        return shape
    raise ValueError(f"input_shape must be (H, W) or (H, W, C), got {input_shape!r}")


def dct_subspaces(input_shape, block: int = 8, stride: int = 1, *, dtype=np.float64) -> list:
    """Orthonormal bases ``(D, s)`` of the diagonal 2-D DCT blocks, channels included.

    Block ``j`` holds the atoms ``a_u ⊗ b_v ⊗ e_c`` for ``u, v`` in ``[jT, jT + K)`` and every
    channel ``c``, with ``a_u`` the ``u``-th row of :func:`geomrobust.data.dct_matrix` ``(H)``
    and ``b_v`` of ``dct_matrix(W)``; vectors are flattened in ``(H, W, C)`` order (NHWC
    rows), so ``D = H W C`` and ``s = C K²``. Blocks run for ``j = 0, 1, ...`` while
    ``jT + K <= min(H, W)``.

    Parameters
    ----------
    input_shape : ``(H, W)`` or ``(H, W, C)``.
    block : ``K``, the block side; stride : ``T``, the diagonal step.
    dtype : NumPy dtype of the bases (DeepFool casts them to the data's dtype).

    Returns
    -------
    list of ``(D, C K²)`` NumPy arrays with orthonormal columns, low frequencies first.
    """
    h, w, c = _image_shape(input_shape)
    if not isinstance(block, int | np.integer) or not 1 <= block <= min(h, w):
        raise ValueError(f"block must be an integer in [1, {min(h, w)}], got {block!r}")
    if not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    ch, cw = dct_matrix(h), dct_matrix(w)
    eye_c = np.eye(c)
    bases = []
    j = 0
    while j * stride + block <= min(h, w):
        idx = np.arange(j * stride, j * stride + block)
        # atoms[u, v, c', y, x, c] = ch[u, y] cw[v, x] δ(c, c')
        atoms = np.einsum("uy,vx,kc->uvkyxc", ch[idx], cw[idx], eye_c)
        bases.append(atoms.reshape(block * block * c, h * w * c).T.astype(dtype))
        j += 1
    return bases


class SubspaceMargins(NamedTuple):
    """margin : ``(n_subspaces, N)`` DeepFool margin inside each subspace (``inf`` where not
    converged); converged : ``(n_subspaces, N)`` bool; iterations : ``(n_subspaces, N)``;
    dims : ``(n_subspaces,)`` subspace dimensions ``s``; status : ``(n_subspaces, N)`` int8
    :class:`geomrobust.Status` of each DeepFool search (``converged == (status ==
    Status.SUCCESS)``; ``NOT_FOUND``: no boundary within reach inside the subspace)."""

    margin: Array
    converged: Array
    iterations: Array
    dims: Array
    status: Array


def subspace_margins(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None,
    subspaces: Sequence,
    *,
    store=None,
    progress=None,
    **deepfool_kw,
) -> SubspaceMargins:
    """Margin of every example inside every subspace: subspace-constrained L2 DeepFool.

    For an affine classifier the margin inside ``S`` is ``(1 + η) |F| / ||S Sᵀ w||``. The
    linearization point differs from the hold-me-tight code (``x + (1 + η) r`` here, ``x + r``
    there; per-band medians agree within 1 %): docs/conventions.md. Runs the continuous-
    batching DeepFool of :func:`geomrobust.search.deepfool_dataset` inside every subspace,
    chunk by chunk in one pass of the engine (each chunk searches all the subspaces); bases
    of one shape share one compilation.

    Parameters
    ----------
    logits_fn, x, y : as for DeepFool (``y=None``: predicted labels).
    subspaces : sequence of orthonormal ``(D, s)`` bases, e.g. :func:`dct_subspaces`.
    store : optional :class:`geomrobust.io.ChunkStore` cut with ``chunk_size``: each chunk
        holds ``margin``, ``converged``, ``iterations`` and ``status`` as ``(C,
        n_subspaces)`` arrays; chunks already there are read back (an interrupted run
        resumes).
    progress : None, True (a bar counting examples) or a callable called with the number
        of examples of each finished chunk (every subspace searched).
    deepfool_kw : passed to ``deepfool_dataset`` (``overshoot``, ``steps``, ``bounds``,
        ``candidates``, ``slots``, ``chunk_size``, ``devices``); the norm is 2.

    Returns
    -------
    SubspaceMargins with ``margin`` of shape ``(n_subspaces, N)``.
    """
    if len(subspaces) == 0:
        raise ValueError("subspaces must hold at least one (D, s) basis, got an empty list")
    if "norm" in deepfool_kw and float(deepfool_kw.pop("norm")) != 2.0:
        raise ValueError("subspace margins are L2 margins: norm must be 2")
    clf = as_classifier(logits_fn)
    out = deepfool_runs(clf, x, y, tuple(subspaces), collect=_band_fields, store=store,
                        progress=progress, desc="subspace margins", **deepfool_kw)  # fmt: skip
    return SubspaceMargins(
        margin=jnp.asarray(out["margin"].T),
        converged=jnp.asarray(out["converged"].T),
        iterations=jnp.asarray(out["iterations"].T),
        dims=jnp.asarray([np.shape(s)[1] for s in subspaces]),
        status=jnp.asarray(out["status"].T),
    )


def _band_fields(results: list) -> dict:
    """A chunk's searches as ``(C, n_subspaces)`` arrays (chunks stack along examples)."""
    fields = ("margin", "converged", "iterations", "status")
    return {f: np.stack([getattr(r, f) for r in results], axis=1) for f in fields}


class BandSummary(NamedTuple):
    """Per-band statistics, each ``(n_subspaces,)``.

    median, q25, q75 : over converged examples only (NaN for a band with none);
    median_all : median counting unconverged examples as ``+inf`` (a lower-bound reading:
        DeepFool found no flip inside the band within ``steps``);
    n_converged, n_unconverged : counts.
    """

    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    median_all: np.ndarray
    n_converged: np.ndarray
    n_unconverged: np.ndarray


def summarize_bands(margin, converged) -> BandSummary:
    """Median and quartiles of the margins per band, excluding and counting unconverged."""
    m = np.asarray(margin, np.float64)
    c = np.asarray(converged, bool)
    if m.shape != c.shape or m.ndim != 2:
        raise ValueError(
            f"margin and converged must both be (n_subspaces, N), got {m.shape} and {c.shape}"
        )
    valid = np.where(c, m, np.nan)
    with np.errstate(all="ignore"):
        empty = ~c.any(axis=1)
        safe = np.where(empty[:, None], 0.0, valid)
        q25, med, q75 = np.nanpercentile(safe, [25, 50, 75], axis=1)
    q25, med, q75 = (np.where(empty, np.nan, v) for v in (q25, med, q75))
    med_all = np.median(np.where(c, m, np.inf), axis=1)
    return BandSummary(
        median=med,
        q25=q25,
        q75=q75,
        median_all=med_all,
        n_converged=c.sum(axis=1),
        n_unconverged=(~c).sum(axis=1),
    )
