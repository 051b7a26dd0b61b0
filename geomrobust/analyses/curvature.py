"""Curvature of the decision boundary near the data, and the input-space loss spectrum.

``compute(classifier, data, settings)`` is ``geomrobust curvature`` (README.md, "Command
line"): for every chunk of examples, boundary points (:func:`boundary_points`: DeepFool,
bisection onto ``F_k = 0``, validity) and the principal curvatures there (eigenvalues of
``P H P / ||∇F_k||``, largest magnitude first; positive = bending towards the example's
class; Fawzi, Moosavi-Dezfooli, Frossard, Soatto, CVPR 2018). Then, over all valid points:
the singular-value decay of the stacked normals and top principal directions (shared
directions), the fooling rates of random perturbations inside the shared subspace against
isotropic ones, and optionally the top eigenvalues of the input-space loss Hessian
(Moosavi-Dezfooli, Fawzi, Uesato, Frossard, "Robustness via curvature regularization, and
vice versa", CVPR 2019), see :func:`loss_spectrum`.

The point of example ``j`` starts its Lanczos iteration from ``fold_in(key, j)``, so results
depend neither on the chunking of the boundary points nor on the devices.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust._deprecation import renamed
from geomrobust._status import Status
from geomrobust.measures import (
    loss_hessian_eigs,
    principal_curvatures,
    shared_directions,
    subspace_fooling_rate,
)
from geomrobust.models import as_classifier

from ._boundary import boundary_points
from ._common import (
    AnalysisResult,
    chunked,
    compute_doc,
    inputs,
    predict,
    resolve_bounds,
    resolve_key,
)

__all__ = ["CurvatureSettings", "compute", "loss_spectrum"]


@renamed(max_iter="deepfool_steps", max_restarts="restarts")  # old field names (docs/api.md)
@dataclasses.dataclass(frozen=True)
class CurvatureSettings:
    """The options that change the numbers (defaults: those of ``geomrobust curvature``).

    num : principal curvatures per point; method, tol, restarts : the eigensolver of
    :func:`geomrobust.principal_curvatures`; overshoot, deepfool_steps : DeepFool's; loss_eigs :
    top loss-Hessian eigenvalues per example (0: skip); shared_dim : dimension of the
    shared subspace of the fooling-rate test; fooling_samples : random draws per example
    and kind (0: skip the test); chunk_size : examples per chunk; key : PRNG seed;
    scale, samples : the curvature at scale ``σ`` (the Gaussian-smoothed boundary, from
    ``samples`` gradient samples per point, for the principal curvatures and the loss
    Hessian; None: exact; use it for ReLU networks, docs/curvature.md); bounds : the box of
    the DeepFool search (``"auto"``: ``(0, 1)`` for images in ``[0, 1]``).
    """

    num: int = 20
    method: str = "auto"
    tol: float | None = None
    restarts: int = 30
    overshoot: float = 0.02
    deepfool_steps: int = 50
    loss_eigs: int = 0
    shared_dim: int = 10
    fooling_samples: int = 16
    chunk_size: int = 128
    key: int = 0
    scale: float | None = None
    samples: int = 256
    bounds: tuple[float, float] | str | None = "auto"

    def check(self, input_shape) -> CurvatureSettings:
        """Raise ValueError unless ``1 <= num <= D - 1`` for inputs of ``input_shape`` (and,
        at a scale, ``num <= samples`` with ``samples`` even)."""
        d = math.prod(input_shape)
        if not 1 <= self.num <= d - 1:
            raise ValueError(f"--num must be <= D-1 = {d - 1}")
        if self.scale is not None:
            if not self.scale > 0:
                raise ValueError(f"--scale must be > 0, got {self.scale}")
            if self.samples < 4 or self.samples % 2 or self.samples < self.num:
                raise ValueError(
                    f"--samples must be even, >= 4 and >= --num={self.num}, got {self.samples}"
                )
        return self


@compute_doc
def compute(
    classifier,
    data,
    settings: CurvatureSettings = CurvatureSettings(),
    *,
    store=None,
    key=None,
    deepfool=None,
    devices=None,
    progress=None,
) -> AnalysisResult:
    """Principal curvatures at boundary points next to the examples of ``data``.

    Parameters
    ----------
    classifier : anything :func:`geomrobust.as_classifier` accepts.
    data : an ``ArrayDataset``, ``(x, y)`` or ``x``. Boundary points are searched around
        the predicted labels; the labels (predicted ones when absent) serve the loss Hessian.
    settings : :class:`CurvatureSettings`.
    {shared parameters}
    deepfool : an L2 DeepFool result of ``x`` around the predicted labels to reuse
        (``perturbation``, ``margin``, ``converged``), see :func:`boundary_points`.

    Returns
    -------
    (arrays, summary)
        ``arrays``: per boundary point ``index`` (its example), ``values``, ``converged``,
        ``residuals``, ``normal``, ``top_direction``, ``z``, ``y``, ``k``, ``margin``,
        ``piecewise_linear`` (the exact Hessian vanished: a ReLU network's flat piece,
        counted unconverged, see :class:`geomrobust.measures.PiecewiseLinearWarning`); the
        normalized singular values of the normals and top directions; ``loss_eigs`` and
        ``loss_eigs_converged`` per example when asked. ``summary``: counts of boundary
        points found / not found and of converged / unconverged curvatures, medians by rank
        over the converged points, fooling rates. Without any boundary point ``arrays``
        holds only an empty ``index``.
    """
    clf = as_classifier(classifier)
    x, labels = inputs(data)
    n, shape = int(x.shape[0]), tuple(x.shape[1:])
    d = math.prod(shape)
    s = settings.check(shape)
    box = resolve_bounds(s.bounds, x)
    k = resolve_key(s, key, store)
    batched = [x]
    if deepfool is not None:
        batched += [
            np.asarray(deepfool.perturbation),
            np.asarray(deepfool.margin),
            np.asarray(deepfool.converged),
        ]

    def chunk(clf, xc, *df, chunk):
        given = None if not df else _Found(*df)
        bs = boundary_points(
            clf,
            xc,
            overshoot=s.overshoot,
            deepfool_steps=s.deepfool_steps,
            deepfool=given,
            bounds=box,
            chunk_size=chunk.size,
        )
        return _curvatures(clf, bs, k, s, chunk)

    a = chunked(
        chunk,
        batched,
        (clf,),
        chunk_size=s.chunk_size,
        desc="deepfool + curvature",
        store=store,
        progress=progress,
        devices=devices,
    )
    idx = np.nonzero(a["ok"])[0]
    summary = {
        "num_examples": n,
        "num_boundary_points": int(idx.size),
        "num_no_boundary_point": int(n - idx.size),
        "scale": s.scale,
        "box": None if box is None else list(box),
    }
    if idx.size == 0:
        return {"index": idx}, summary
    values, conv = a["values"][idx], a["converged"][idx]
    normals = shared_directions(jnp.asarray(a["normal"][idx]))
    tops = shared_directions(jnp.asarray(a["top_direction"][idx])[:, None], input_shape=shape)
    arrays = {
        "index": idx,
        "values": values,
        "converged": conv,
        "residuals": a["residuals"][idx],
        "normal": a["normal"][idx],
        "top_direction": a["top_direction"][idx],
        "z": a["z"][idx],
        "y": a["y"][idx],
        "k": a["k"][idx],
        "margin": a["margin"][idx],
        "piecewise_linear": a["piecewise_linear"][idx],
        "stderr": a["stderr"][idx],
        "normals_singular_values": np.asarray(normals.normalized),
        "top_directions_singular_values": np.asarray(tops.normalized),
    }
    good = values[conv]
    radius = float(np.median(a["margin"][idx]))
    if s.scale is None and a["piecewise_linear"][idx].any():
        summary["note"] = (
            f"{int(a['piecewise_linear'][idx].sum())} of {idx.size} boundary points lie on a "
            "piecewise-linear network (ReLU, max pooling) whose exact Hessian is zero there: "
            "their exact curvatures are not measurements and are counted unconverged; measure "
            "the curvature at a scale instead (--scale 0.02, docs/curvature.md)"
        )
    summary.update(
        num_converged=int(conv.sum()),
        num_unconverged=int((~conv).sum()),
        num_piecewise_linear=int(a["piecewise_linear"][idx].sum()),
        median_top_stderr=float(np.median(a["stderr"][idx][:, 0])) if s.scale else 0.0,
        median_abs_curvature_by_rank=np.median(np.abs(good), 0).tolist() if len(good) else [],
        median_curvature_by_rank=np.median(good, 0).tolist() if len(good) else [],
        median_margin=radius,
        normals_singular_values=np.asarray(normals.normalized[:10]).tolist(),
        top_directions_singular_values=np.asarray(tops.normalized[:10]).tolist(),
    )
    if s.fooling_samples > 0:
        dim = min(s.shared_dim, tops.basis.shape[1])
        xs = x[idx]
        fr = subspace_fooling_rate(
            clf,
            xs,
            tops.basis[:, :dim].astype(xs.dtype),
            eps=radius,
            num_samples=s.fooling_samples,
            key=jax.random.fold_in(k, 1),
            chunk_size=min(s.chunk_size, idx.size),
            devices=devices,
        )
        summary.update(
            fooling_radius=radius,
            fooling_subspace_dim=int(dim),
            fooling_rate_shared_subspace=float(fr.subspace),
            fooling_rate_isotropic=float(fr.isotropic),
        )
    if s.loss_eigs > 0:
        y = labels if labels is not None else predict(clf, x, chunk_size=min(512, n))
        le, ls = loss_spectrum(
            clf,
            x,
            y,
            num=min(s.loss_eigs, d),
            key=jax.random.fold_in(k, 2),
            chunk_size=s.chunk_size,
            devices=devices,
            progress=progress,
            scale=s.scale,
            samples=s.samples,
        )
        arrays.update(loss_eigs=le["values"], loss_eigs_converged=le["converged"])
        summary.update(
            loss_eigs_n_converged=ls["n_converged"],
            loss_eigs_n_unconverged=ls["n_unconverged"],
            median_top_loss_eig=ls["median_top_eigenvalue"],
        )
    return AnalysisResult(arrays, summary)


class _Found:
    """A DeepFool result given as three arrays (one chunk's rows)."""

    def __init__(self, perturbation, margin, converged):
        self.perturbation, self.margin, self.converged = perturbation, margin, converged


def _curvatures(clf, bs, key, s: CurvatureSettings, chunk) -> dict:
    """The chunk's boundary points, then ONE curvature solve on its valid points padded to
    the chunk's size (one compilation for every chunk); the other rows stay NaN / zero."""

    size, m = chunk.size, chunk.stop - chunk.start
    ok = np.array(bs.valid)
    ok[m:] = False  # padding rows are never measured
    shape, dtype = tuple(bs.z.shape), bs.z.dtype
    out = {
        "z": np.asarray(bs.z),
        "y": np.asarray(bs.y),
        "k": np.asarray(bs.k),
        "ok": ok,
        "margin": np.asarray(bs.margin),
        "values": np.full((size, s.num), np.nan, dtype),
        "converged": np.zeros(size, bool),
        "residuals": np.full((size, s.num), np.nan, dtype),
        "normal": np.zeros(shape, dtype),
        "top_direction": np.zeros(shape, dtype),
        "piecewise_linear": np.zeros(size, bool),
        "stderr": np.full((size, s.num), np.nan, dtype),
    }
    sel = np.nonzero(ok)[0]
    if sel.size == 0:
        return out
    pad = np.concatenate([sel, np.full(size - sel.size, sel[-1])])
    curv = principal_curvatures(
        clf,
        bs.z[pad],
        bs.y[pad],
        bs.k[pad],
        num=s.num,
        key=key,
        method=s.method,
        tol=s.tol,
        restarts=s.restarts,
        chunk_size=size,
        ids=chunk.start + pad,
        num_directions=1,
        scale=s.scale,
        num_samples=s.samples,
    )
    rows = slice(0, sel.size)
    out["values"][sel] = np.asarray(curv.values)[rows]
    out["converged"][sel] = np.asarray(curv.converged)[rows]
    out["residuals"][sel] = np.asarray(curv.residuals)[rows]
    out["normal"][sel] = np.asarray(curv.normal)[rows]
    out["top_direction"][sel] = np.asarray(curv.directions[:, 0])[rows]
    out["piecewise_linear"][sel] = np.asarray(curv.status == Status.PIECEWISE_LINEAR)[rows]
    out["stderr"][sel] = np.asarray(curv.stderr)[rows]
    return out


def loss_spectrum(
    classifier,
    x,
    y,
    *,
    num: int,
    key,
    chunk_size: int = 64,
    devices=None,
    progress=None,
    scale: float | None = None,
    samples: int = 256,
) -> tuple[dict, dict]:
    """Top ``num`` eigenvalues of the input-space Hessian of the cross-entropy at ``(x, y)``.

    Returns ``({"values": (N, num), "converged": (N,)}, summary)`` with the counts of
    converged / unconverged examples and the medians over the converged ones
    (:func:`geomrobust.loss_hessian_eigs`; CURE, CVPR 2019).
    """
    r = loss_hessian_eigs(
        classifier,
        x,
        jnp.asarray(y),
        num=num,
        key=key,
        chunk_size=min(int(chunk_size), int(x.shape[0])),
        devices=devices,
        progress=progress,
        scale=scale,
        num_samples=samples,
    )
    values, conv = np.asarray(r.values), np.asarray(r.converged)
    good = values[conv]
    summary = {
        "n_converged": int(conv.sum()),
        "n_unconverged": int((~conv).sum()),
        "median_by_rank": np.median(good, 0).tolist() if len(good) else None,
        "median_top_eigenvalue": float(np.median(good[:, 0])) if len(good) else None,
    }
    return {"values": values, "converged": conv}, summary
