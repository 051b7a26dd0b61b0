"""Boundary points near the data: DeepFool, then bisection onto the boundary, then validity.

The pipeline behind every second-order measurement of the decision boundary (principal
curvatures, shared directions, slices through a boundary point; Fawzi, Moosavi-Dezfooli,
Frossard, Soatto, "Empirical study of the topology and geometry of deep networks", CVPR
2018): DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016) finds a point just across the
nearest boundary, :func:`geomrobust.search.refine_boundary` bisects the segment from the
example onto ``F_k = f_k - f_y = 0``, and a point is valid when both converged and the
example was not already on the wrong side (margin > 0). Each example's ``status``
(:class:`geomrobust.Status`, docs/api.md section 2) says which step failed. README.md
("Library") shows the same steps written out.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from geomrobust._deprecation import renamed
from geomrobust._status import STATUS_DTYPE, Status, status_from_success
from geomrobust.engine import CHUNK_SIZE
from geomrobust.models import as_classifier
from geomrobust.search import deepfool_dataset, refine_boundary

from ._common import predict

__all__ = ["BoundarySet", "boundary_points"]


class BoundarySet(NamedTuple):
    """Boundary points of a batch, one per example, with what found them.

    z : ``(N, *s)`` points with ``F_k(z) ≈ 0`` (``x_adv`` where the bisection failed).
    y, k : ``(N,)`` int32, the example's reference class and the class across the boundary.
    normal : ``(N, *s)`` unit normals ``∇F_k(z) / ||∇F_k(z)||``.
    margin : ``(N,)`` the DeepFool L2 margin (``inf`` where DeepFool did not converge).
    perturbation : ``(N, *s)`` the DeepFool perturbation.
    deepfool_converged, refined : ``(N,)`` bool, DeepFool and the bisection converged.
    valid : ``(N,)`` bool, ``deepfool_converged & refined & (margin > 0)``: the points to
        measure at; the others are counted as excluded, never measured.
    status : ``(N,)`` int8 :class:`geomrobust.Status`, ``valid == (status == SUCCESS)``:
        ``NONFINITE`` where DeepFool or the bisection met a non-finite logit or gradient;
        else DeepFool's own code where it did not converge (``MAX_STEPS``, ``NOT_FOUND``;
        ``UNKNOWN`` for a DeepFool result passed in without a ``status``); else
        ``MISCLASSIFIED`` where the example is already misclassified or tied at ``x``
        (margin 0: no boundary point of its class to measure); else the bisection's code
        (``MAX_STEPS``, ``NOT_FOUND``: see :class:`geomrobust.search.BoundaryPoints`).
    """

    z: jax.Array
    y: jax.Array
    k: jax.Array
    normal: jax.Array
    margin: jax.Array
    perturbation: jax.Array
    deepfool_converged: jax.Array
    refined: jax.Array
    valid: jax.Array
    status: jax.Array


@renamed(max_iter="deepfool_steps")
def boundary_points(
    classifier,
    x,
    y=None,
    *,
    overshoot: float = 0.02,
    deepfool_steps: int = 50,
    deepfool=None,
    bounds=None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> BoundarySet:
    """DeepFool -> bisection onto the boundary -> validity mask, for every example of ``x``.

    Parameters
    ----------
    classifier : anything :func:`geomrobust.as_classifier` accepts.
    x : ``(N, *s)`` examples.
    y : ``(N,)`` reference labels, or None for the predicted labels (the usual choice for
        geometry: the boundary around the class the model gives the example).
    overshoot, deepfool_steps : the overshoot and the step budget of the L2 DeepFool search
        (:func:`geomrobust.deepfool`).
    deepfool : an L2 DeepFool result of ``x`` already computed with these labels (any
        object with ``perturbation``, ``margin``, ``converged`` and optionally ``status``,
        e.g. a :class:`geomrobust.MarginResult`), reused instead of searching again.
    bounds : the box ``(lo, hi)`` of the DeepFool search (None: none), e.g. ``(0, 1)`` for
        images: the boundary points then lie inside it.
    chunk_size, devices, progress : the executor's options of the DeepFool search and the
        bisection (:func:`geomrobust.engine.map_chunks`).

    Returns
    -------
    BoundarySet
    """
    clf = as_classifier(classifier)
    x = jnp.asarray(x)
    size = min(int(chunk_size), x.shape[0])
    if y is None:
        y = predict(clf, x, chunk_size=size, devices=devices)
    y = jnp.asarray(y, jnp.int32)
    if deepfool is None:
        deepfool = deepfool_dataset(
            clf,
            x,
            y,
            norm=2,
            overshoot=overshoot,
            steps=deepfool_steps,
            bounds=bounds,
            chunk_size=size,
            devices=devices,
            progress=progress,
        )
    pert = jnp.asarray(deepfool.perturbation, x.dtype)
    margin = jnp.asarray(deepfool.margin)
    df_ok = jnp.asarray(deepfool.converged, bool)
    df_status = getattr(deepfool, "status", None)
    if df_status is None:  # a result without status: why a failure ended is not known
        df_status = status_from_success(df_ok)
    bp = refine_boundary(clf, x, x + pert, y, chunk_size=size, devices=devices)
    status = _status(jnp.asarray(df_status, STATUS_DTYPE), margin, bp.status)
    valid = status == Status.SUCCESS  # == bp.converged & df_ok & (margin > 0)
    return BoundarySet(
        bp.z, bp.y, bp.k, bp.normal, margin, pert, df_ok, bp.converged, valid, status
    )


def _status(deepfool_status, margin, refine_status):
    """The status of each boundary point (see :class:`BoundarySet`): a non-finite row
    first, then DeepFool's failure, then a misclassified example, then the bisection's."""
    code = partial(jnp.asarray, dtype=STATUS_DTYPE)
    nonfinite = (deepfool_status == Status.NONFINITE) | (refine_status == Status.NONFINITE)
    return jnp.where(
        nonfinite,
        code(Status.NONFINITE),
        jnp.where(
            deepfool_status != Status.SUCCESS,
            deepfool_status,
            jnp.where(~(margin > 0), code(Status.MISCLASSIFIED), refine_status),
        ),
    ).astype(STATUS_DTYPE)
