"""Margin statistics: random-subspace margins against the minimal one, normalized robustness.

Fawzi, Moosavi-Dezfooli, Frossard, "Robustness of classifiers: from adversarial to random
noise", NeurIPS 2016: near a flat boundary, the margin inside a random ``m``-dimensional
subspace is about ``sqrt(D / m)`` times the minimal (adversarial) margin; for a hyperplane with
unit normal ``n`` it is exactly ``margin / ||P_S n||`` with ``||P_S n||² ~ Beta(m/2, (D-m)/2)``.
A measured ratio well below ``sqrt(D / m)`` indicates a curved boundary.
Normalized robustness ``ρ = mean ||r(x)|| / ||x||`` (Moosavi-Dezfooli et al., CVPR 2016).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_batch, check_key
from ..models import as_classifier
from ..ops._norms import as_norm
from ..search._driver import deepfool_runs

__all__ = ["RandomSubspaceMargins", "normalized_robustness", "random_subspace_margins"]


class RandomSubspaceMargins(NamedTuple):
    """dim : ``m``; margin, converged : ``(num_draws, N)`` L2 DeepFool margins inside random
    ``m``-dimensional subspaces (``inf`` where not converged); minimal_margin,
    minimal_converged : ``(N,)`` unconstrained DeepFool; ratio : ``(num_draws, N)``
    subspace / minimal margin, NaN where either is not converged; median_ratio : median of
    the valid ratios; predicted_ratio : ``sqrt(D / m)``; status ``(num_draws, N)``,
    minimal_status ``(N,)`` : the int8 :class:`geomrobust.Status` of the subspace and the
    unconstrained searches (``converged == (status == Status.SUCCESS)``, likewise
    ``minimal_converged``)."""

    dim: int
    margin: Array
    converged: Array
    minimal_margin: Array
    minimal_converged: Array
    ratio: Array
    median_ratio: float
    predicted_ratio: float
    status: Array
    minimal_status: Array


def random_subspace_margins(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    dim: int,
    key: Array,
    num_draws: int = 1,
    store=None,
    **deepfool_kw,
) -> RandomSubspaceMargins:
    """Margins in random ``dim``-dimensional subspaces vs the minimal margin (Fawzi 2016).

    Each draw takes ``S = qr(G)``, ``G ~ N(0, I)`` of shape ``(D, m)`` (a uniformly random
    subspace, shared by the examples of that draw), and runs subspace DeepFool (L2); for
    ``m = 1`` this is a Newton search along the random line ``x + t s``. The minimal margin is
    unconstrained L2 DeepFool. Both use :func:`geomrobust.search.deepfool_dataset` with the
    same ``deepfool_kw`` (same overshoot, so it cancels in the ratio; ``chunk_size``,
    ``devices``, ``progress`` are passed on), chunk by chunk in one pass of the engine: each
    chunk runs the unconstrained search and every draw. ``store``: an optional
    :class:`geomrobust.io.ChunkStore` cut with ``chunk_size``, each chunk holding the
    per-example fields (draws as ``(C, num_draws)`` arrays, and ``ratio``); chunks already
    there are read back (an interrupted run resumes).

    Returns
    -------
    RandomSubspaceMargins; ``predicted_ratio = sqrt(D / m)``.
    """
    check_batch(x, "x")
    check_key(key, "key")
    d = math.prod(x.shape[1:])
    if not isinstance(dim, int | np.integer) or not 1 <= dim <= d:
        raise ValueError(f"dim must be an integer in [1, D={d}], got {dim!r}")
    if not isinstance(num_draws, int | np.integer) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    deepfool_kw.pop("norm", None)
    clf = as_classifier(logits_fn)
    x = jnp.asarray(x)
    bases = []
    for i in range(num_draws):
        g = jax.random.normal(jax.random.fold_in(key, i), (d, dim), x.dtype)
        bases.append(jnp.linalg.qr(g)[0])
    out = deepfool_runs(clf, x, y, (None, *bases), collect=_draw_fields, store=store,
                        desc="random subspaces", **deepfool_kw)  # fmt: skip
    ratio = out["ratio"].T
    r = ratio[np.isfinite(ratio)]
    return RandomSubspaceMargins(
        dim=int(dim),
        margin=jnp.asarray(out["margin"].T),
        converged=jnp.asarray(out["converged"].T),
        minimal_margin=jnp.asarray(out["minimal_margin"]),
        minimal_converged=jnp.asarray(out["minimal_converged"]),
        ratio=jnp.asarray(ratio),
        median_ratio=float(np.median(r)) if r.size else float("nan"),
        predicted_ratio=math.sqrt(d / dim),
        status=jnp.asarray(out["status"].T),
        minimal_status=jnp.asarray(out["minimal_status"]),
    )


def _draw_fields(results: list) -> dict:
    """A chunk's unconstrained search (first) and its draws, the draws as ``(C, draws)``
    arrays (chunks stack along examples), with the ratios ``subspace / minimal margin``."""
    minimal, draws = results[0], results[1:]
    margin = jnp.stack([r.margin for r in draws])
    converged = jnp.stack([r.converged for r in draws])
    valid = converged & minimal.converged[None] & (minimal.margin[None] > 0)
    ratio = jnp.where(valid, margin / jnp.where(valid, minimal.margin[None], 1), jnp.nan)
    return {
        "margin": np.asarray(margin).T,
        "converged": np.asarray(converged).T,
        "minimal_margin": minimal.margin,
        "minimal_converged": minimal.converged,
        "ratio": np.asarray(ratio).T,
        "status": np.stack([r.status for r in draws], axis=1),
        "minimal_status": minimal.status,
    }


def _row_norms(x, p) -> np.ndarray:
    """``||x_n||_p`` of every example, in float64, computed in blocks of rows: the float64
    temporaries stay near 1 MB (a whole-dataset float64 copy of ``x`` and the temporaries
    of its norm were the largest allocation of a margins run, growing with ``N``)."""
    a = np.asarray(x)  # no copy for a NumPy or host-resident JAX array
    n = a.shape[0]
    a = a.reshape(n, -1)
    rows = max(1, 2**17 // max(1, a.shape[1]))
    out = np.empty(n, np.float64)
    for s in range(0, n, rows):
        out[s : s + rows] = np.linalg.norm(a[s : s + rows].astype(np.float64), ord=p, axis=1)
    return out


def normalized_robustness(margin, x, converged=None, *, norm=2) -> float:
    """``ρ = mean_n ||r_n||_p / ||x_n||_p`` over the converged examples with ``x_n != 0``.

    ``margin`` ``(N,)`` perturbation norms (e.g. ``MarginResult.margin``), ``x`` ``(N, *s)``,
    ``converged`` ``(N,)`` bool or None (all). NaN if no example qualifies.
    """
    p = as_norm(norm)
    m = np.asarray(margin, np.float64)
    if m.ndim != 1 or m.shape[0] != np.shape(x)[0]:
        raise ValueError(
            f"margin must have shape (N,) with N={np.shape(x)[0]} (the examples of x), "
            f"got {m.shape}"
        )
    if converged is not None and np.shape(converged) != m.shape:
        raise ValueError(f"converged must have shape {m.shape}, got {np.shape(converged)}")
    xn = _row_norms(x, p)
    ok = np.ones_like(m, bool) if converged is None else np.asarray(converged, bool)
    ok = ok & (xn > 0) & np.isfinite(m)
    return float(np.mean(m[ok] / xn[ok])) if ok.any() else float("nan")
