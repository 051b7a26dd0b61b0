"""The smallest adversarial perturbation over several minimal-norm searches, and how loose
DeepFool's margin is.

Every search returns an upper bound on the distance to the decision boundary (an adversarial
point it found); the smallest over DeepFool, FMN and C&W is the tightest bound available, and
``||r_DeepFool|| / ||r_min||`` says how much DeepFool overestimates it (docs/methods.md).

DeepFool's point is also pulled back along its own ray ``x + t r_DeepFool``, ``t`` in
``[0, 1]``, to the first label change (bisection on the label, no overshoot): FMN and C&W can
both converge to the boundary of the runner-up logit while the nearest boundary is another
class's, which DeepFool finds (on an affine classifier its linearisation is exact, so its
direction is the nearest boundary's normal and the pulled-back point is at the exact
distance ``min_k (f_y - f_k) / ||w_y - w_k||_*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._status import Status, status_codes
from .._validation import all_concrete
from ..engine import CHUNK_SIZE, map_chunks, run_program, track
from ..models import as_classifier
from ..ops._norms import as_norm
from ._cw import cw_l2
from ._deepfool import MarginResult
from ._driver import deepfool
from ._fmn import check_common, fmn, rows

__all__ = ["SEARCHES", "MinimalMargin", "minimal_margin"]

SEARCHES = ("deepfool", "fmn", "cw")

#: Relative length of the final bracket of the pull-back along DeepFool's ray.
_RAY_TOL = 1e-6
_RAY_MAX_ITER = 64


class MinimalMargin(NamedTuple):
    """The smallest verified adversarial perturbation per example over a set of searches.

    perturbation ``(N, *s)``, margin ``(N,)`` (``inf`` where no search found one),
    converged ``(N,)``, adv_label ``(N,)`` (``-1`` where none): as :class:`MarginResult`.
    found_by : ``(N,)`` int32, the index in ``searches`` of the search that found it (``-1``
    where none; ties go to the first search listed).
    searches : the names of the searches, in order.
    margins : ``(S, N)``, each search's verified margin (``inf`` where it failed, or where
    its point did not re-test adversarial).
    deepfool_ratio : ``(N,)``, ``||r_DeepFool|| / ||r_min||`` (``>= 1``) where DeepFool ran
    and converged and the minimal margin is positive; 1 where the margin is 0 (misclassified
    examples); ``inf`` elsewhere (DeepFool failed or was not run, or no search succeeded:
    the sentinel of :class:`MarginResult`, never NaN). Finite exactly where
    ``converged & (margins[deepfool] < inf)``.
    status : ``(N,)`` int8 :class:`geomrobust.Status` (``converged == (status ==
    Status.SUCCESS)``); where no search's point re-tests adversarial, the first of
    ``NONFINITE``, ``MAX_STEPS``, ``NOT_FOUND`` that any search reported (a search that
    converged but whose point flipped back on re-testing counts as ``NOT_FOUND``).
    """

    perturbation: Array
    margin: Array
    converged: Array
    adv_label: Array
    found_by: Array
    searches: tuple
    margins: Array
    deepfool_ratio: Array
    status: Array


@partial(jax.jit, static_argnames=("p", "has_y"))
def _verify_program(clf, x, pert, y=None, *, p, has_y):
    """Re-test each search's point in a batch of its own: ``(C, S)`` adversarial flags,
    labels and norms (a misclassified example's zero perturbation re-tests adversarial)."""
    yy = jnp.argmax(clf(x), -1).astype(jnp.int32) if not has_y else y

    def one(d):
        lab = jnp.argmax(clf(x + d), -1).astype(jnp.int32)
        flat = d.reshape(d.shape[0], -1)
        nrm = jnp.max(jnp.abs(flat), -1) if math.isinf(p) else jnp.linalg.norm(flat, axis=-1)
        return lab != yy, lab, nrm

    return jax.vmap(one, in_axes=1, out_axes=1)(pert)  # (C, S) each


@partial(jax.jit, static_argnames=("has_y",))
def _pull_back_program(clf, x, d, y=None, *, has_y):
    """The first label change on the segment ``x + t d``, ``t`` in ``[0, 1]``, by bisection
    on the label: ``(t_hi d, ok)``, ``t_hi`` the smallest adversarial ``t`` of the final
    bracket (at ``x + t_hi d`` another logit exceeds ``y``'s by ``8 eps max|f|``, so it is
    not within rounding of the boundary; ``ok`` False where ``x + d`` is not adversarial so,
    or ``x`` is, or a logit row is non-finite: the caller keeps ``d`` there)."""
    dtype = x.dtype
    yy = jnp.argmax(clf(x), -1).astype(jnp.int32) if not has_y else y

    def adversarial(t):
        # clearly adversarial: another logit above y's by a few roundings, so the point
        # re-tests adversarial in a batch of its own (not within rounding of the boundary)
        logits = clf(x + rows(t, x.ndim) * d).astype(dtype)
        own = jnp.take_along_axis(logits, yy[:, None], -1)[:, 0]
        other = jnp.max(
            jnp.where(jnp.arange(logits.shape[-1]) == yy[:, None], -jnp.inf, logits), -1
        )
        slack = 8 * jnp.finfo(dtype).eps * jnp.max(jnp.abs(logits), -1)
        return (other - own > slack) & jnp.all(jnp.isfinite(logits), -1)

    n = x.shape[0]
    ok = adversarial(jnp.ones(n, dtype)) & ~adversarial(jnp.zeros(n, dtype))
    lo, hi = jnp.zeros(n, dtype), jnp.ones(n, dtype)

    def cond(c):
        lo, hi, i = c
        run = ok & (hi - lo > _RAY_TOL * hi)
        return jnp.any(run) & (i < _RAY_MAX_ITER)

    def body(c):
        lo, hi, i = c
        mid = 0.5 * (lo + hi)
        run = ok & (hi - lo > _RAY_TOL * hi) & (mid > lo) & (mid < hi)
        adv = adversarial(mid)
        return jnp.where(run & ~adv, mid, lo), jnp.where(run & adv, mid, hi), i + 1

    _, hi, _ = jax.lax.while_loop(cond, body, (lo, hi, jnp.zeros((), jnp.int32)))
    return jnp.where(rows(ok, x.ndim), rows(hi, x.ndim) * d, d), ok


def minimal_margin(
    logits_fn: Callable[[Array], Array],
    x,
    y=None,
    *,
    norm=2,
    searches: Sequence[str] = SEARCHES,
    bounds: tuple | None = None,
    deepfool_kw: dict | None = None,
    fmn_kw: dict | None = None,
    cw_kw: dict | None = None,
    store=None,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MinimalMargin:
    """The smallest adversarial perturbation per example over ``searches``.

    Each search (``"deepfool"``: :func:`geomrobust.search.deepfool`, ``"fmn"``:
    :func:`geomrobust.search.fmn`, ``"cw"``: :func:`geomrobust.search.cw_l2`, L2 only) runs on
    the whole batch with its options (``deepfool_kw``, ...; ``bounds`` is passed to all).
    Each search's point ``x + r_s`` is re-tested (its label at ``x + r_s`` must differ from
    ``y``, in a forward pass of its own: a point that sits within rounding of the boundary
    and flips back does not count), and the margin is

        ||r_min||_p = min_s ||r_s||_p   over the searches whose point re-tests adversarial,

    with ``found_by`` the search it came from and ``deepfool_ratio = ||r_DeepFool||_p /
    ||r_min||_p``. DeepFool's point is also pulled back along its own ray ``x + t r``,
    ``t`` in ``[0, 1]``, to the first label change (bisection on the label to a bracket of
    relative length 1e-6, no overshoot); that point is a candidate too, credited to
    ``"deepfool"`` in ``found_by`` (``margins`` keeps each search's own point). So with
    DeepFool among the searches, ``margin`` is at most DeepFool's margin without overshoot
    for every example, exact (to 1e-6 relative) on an affine classifier, where DeepFool's
    linearisation is exact and its direction is the nearest boundary's normal, and finite
    wherever any search succeeded. DeepFool's own margin includes its overshoot
    ``(1 + η)`` (``η = 0.02`` by default), so even on an affine boundary its ratio is
    ``1 + η``.

    Parameters
    ----------
    logits_fn : the classifier (a function, :class:`geomrobust.Classifier`, NNX, Equinox).
    x : ``(N, *s)``; y : ``(N,)`` labels or None (the predicted labels).
    norm : 2 or ``inf`` (``"cw"`` is skipped for ``inf``: it is an L2 attack).
    searches : names among ``"deepfool", "fmn", "cw"``.
    bounds : ``(lo, hi)`` or None, for every search.
    deepfool_kw, fmn_kw, cw_kw : extra options of each search.
    store : optional :class:`geomrobust.io.ChunkStore` cut with ``chunk_size``: chunks
        already there are read back (the fields of :class:`MinimalMargin`, ``margins`` as
        ``(C, S)``), the others computed and written as they finish (an interrupted run
        resumes).
    chunk_size, devices, progress : the executor's options. The examples run chunk by
        chunk in one pass of the engine, every search of a chunk as that chunk's own work
        (the last chunk padded by repeating its last row, so every chunk has one shape).

    Returns
    -------
    MinimalMargin
    """
    names = tuple(searches)
    unknown = [s for s in names if s not in SEARCHES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"searches must be distinct names among {SEARCHES}, got {tuple(searches)!r}"
        )
    if math.isinf(as_norm(norm)):  # before anything is traced
        names = tuple(s for s in names if s != "cw")
        if not names:
            raise ValueError(
                "searches=('cw',) with norm=inf: C&W is an L2 search, so no search is left; "
                "add 'deepfool' or 'fmn' to searches, or use norm=2"
            )
    clf = as_classifier(logits_fn)
    run = partial(_minimal_chunk, names=names, norm=norm, bounds=bounds,
                  deepfool_kw=deepfool_kw, fmn_kw=fmn_kw, cw_kw=cw_kw)  # fmt: skip
    if not all_concrete(clf, x, y):  # under jit / vmap: the searches' transformable forms
        return run(clf, x, y, chunk_size=chunk_size)
    _, x = check_common(clf, x, y, norm, bounds)
    n = int(np.shape(x)[0])

    def chunk(clf, xc, yc=None, *, chunk):  # the chunk's searches run as its own work
        r = run(clf, xc, yc, chunk_size=chunk.size)
        out = {f: getattr(r, f) for f in ("margin", "converged", "adv_label", "found_by", "status")}
        out["margins"] = np.asarray(r.margins).T  # (C, S): chunks stack along examples
        out["deepfool_ratio"] = r.deepfool_ratio
        out["perturbation"] = r.perturbation
        return out

    with track(progress, n, "minimal margin") as report:
        out = map_chunks(
            chunk, (x,) if y is None else (x, y), (clf,), chunk_size=min(int(chunk_size), n),
            devices=devices, progress=report, store=store, with_chunk=True,
        )  # fmt: skip
    return MinimalMargin(
        perturbation=jnp.asarray(out["perturbation"]),
        margin=jnp.asarray(out["margin"]),
        converged=jnp.asarray(out["converged"]),
        adv_label=jnp.asarray(out["adv_label"]),
        found_by=jnp.asarray(out["found_by"]),
        searches=names,
        margins=jnp.asarray(out["margins"].T),
        deepfool_ratio=jnp.asarray(out["deepfool_ratio"]),
        status=jnp.asarray(out["status"]),
    )


def _minimal_chunk(clf, x, y, *, names, norm, bounds, deepfool_kw, fmn_kw, cw_kw,
                   chunk_size) -> MinimalMargin:  # fmt: skip
    """:func:`minimal_margin` on one chunk (or, traced, on the whole batch)."""
    p, x = check_common(clf, x, y, norm, bounds)
    x = jnp.asarray(x)
    run_kw = dict(chunk_size=chunk_size)
    results: list[MarginResult] = []
    for name in names:
        if name == "deepfool":
            r = deepfool(clf, x, y, norm=norm, bounds=bounds, **run_kw, **(deepfool_kw or {}))
        elif name == "fmn":
            r = fmn(clf, x, y, norm=norm, bounds=bounds, **run_kw, **(fmn_kw or {}))
        else:
            r = cw_l2(clf, x, y, bounds=bounds, **run_kw, **(cw_kw or {}))
        results.append(r)
    perts = [r.perturbation for r in results]
    y32 = None if y is None else jnp.asarray(y).astype(jnp.int32)
    if "deepfool" in names:  # DeepFool's point pulled back along its ray: one more candidate
        i_df = names.index("deepfool")
        r_df = results[i_df]
        d = jnp.where(rows(r_df.converged & (r_df.margin > 0), x.ndim), r_df.perturbation, 0)
        pulled, _ = run_program(
            partial(_pull_back_program, has_y=y is not None), (clf,),
            (x, d) if y is None else (x, d, y32), chunk_size=min(chunk_size, x.shape[0]),
        )  # fmt: skip
        perts.append(pulled)
    pert = jnp.stack(perts, axis=1)  # (N, S or S + 1, *s)
    batched = (x, pert) if y is None else (x, pert, y32)
    adv, lab, nrm = run_program(
        partial(_verify_program, p=p, has_y=y is not None), (clf,), batched,
        chunk_size=min(chunk_size, x.shape[0]),
    )  # fmt: skip
    adv, lab, nrm = adv.T, lab.T, nrm.T  # (S or S + 1, N)
    conv = jnp.stack([r.converged for r in results])
    own = jnp.stack([r.margin for r in results])
    if "deepfool" in names:
        conv = jnp.concatenate([conv, conv[i_df][None]])
        own = jnp.concatenate([own, nrm[-1][None]])
    ok = conv & adv
    candidates = jnp.where(ok, own, jnp.inf).astype(x.dtype)
    margins = candidates[: len(names)]
    best = jnp.argmin(candidates, axis=0)
    idx = jnp.arange(x.shape[0])
    margin = candidates[best, idx]
    found = jnp.isfinite(margin)
    perturbation = jnp.where(rows(found, x.ndim), pert[idx, best], 0)
    adv_label = jnp.where(found, lab[best, idx], -1).astype(jnp.int32)
    if "deepfool" in names:
        best = jnp.where(best == len(names), i_df, best)
    if "deepfool" in names:
        m_df = margins[names.index("deepfool")]
        pos = found & (margin > 0)
        ratio = jnp.where(pos, m_df / jnp.where(pos, margin, 1), jnp.inf)
        ratio = jnp.where(found & (margin == 0), 1, ratio)
    else:
        ratio = jnp.full(margin.shape, jnp.inf, x.dtype)
    codes = jnp.stack([r.status for r in results])  # (S, N)
    status = status_codes(
        found, jnp.any(codes == Status.NONFINITE, 0), jnp.any(codes == Status.MAX_STEPS, 0)
    )
    return MinimalMargin(
        perturbation=perturbation,
        margin=margin,
        converged=found,
        adv_label=adv_label,
        found_by=jnp.where(found, best, -1).astype(jnp.int32),
        searches=names,
        margins=margins,
        deepfool_ratio=ratio.astype(x.dtype),
        status=status,
    )


def ratio_summary(ratio) -> dict:
    """Median, 90th percentile and maximum of the finite DeepFool ratios, the fraction of
    examples above 1.05 and how many ratios are defined (for reports)."""
    r = np.asarray(ratio, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return dict(n=0, median=None, p90=None, max=None, above_1_05=None)
    return dict(n=int(r.size), median=float(np.median(r)), p90=float(np.quantile(r, 0.9)),
                max=float(r.max()), above_1_05=float(np.mean(r > 1.05)))  # fmt: skip
