"""SparseFool: sparse (L1) adversarial perturbations from the boundary's local geometry.

Modas, Moosavi-Dezfooli, Frossard, "SparseFool: a few pixels make a big difference", CVPR 2019.
At the iterate ``x_i``, L2 DeepFool gives a boundary point ``x_B`` and the boundary normal
``w = ∇F_k(x_B)``; the boundary is approximated by the hyperplane through
``x_B^λ = x_0 + λ (x_B - x_0)`` (``λ = 3``: a point further out, which trades sparsity for
fewer iterations), and a box-constrained linearized L1 problem

    min ||x - x_i||_1   s.t.   <w, x - x_B^λ> = 0,   lo <= x <= hi

is solved greedily one coordinate at a time in decreasing ``|w_j|`` (its exact solution: each
coordinate moves as far as needed, or to the face of the box, before the next one is used).
Then ``x_{i+1} = clip(x_0 + (1 + η)(x_LS - x_0))`` and repeat until the label changes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._status import STATUS_DTYPE, Status
from .._validation import check_bounds, check_labels, check_positive, search_inputs
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ..ops import batch_logit_difference_grads
from ._deepfool import _adv_label, _deepfool_loop, _top_gap

__all__ = ["SparseFoolResult", "linear_solver", "sparsefool"]


class SparseFoolResult(NamedTuple):
    """perturbation ``(N, *s)`` (where not converged: the last iterate's, for diagnosis);
    converged ``(N,)`` bool (the label changed); adv_label ``(N,)`` (-1 if not converged);
    iterations ``(N,)``; sparsity ``(N,)`` fraction of changed coordinates (of the last
    iterate where not converged: read it with ``converged``); l1 ``(N,)`` the L1 norm of the
    perturbation, ``inf`` where not converged (the unconverged sentinel); status ``(N,)`` int8
    :class:`geomrobust.Status` (``converged == (status == Status.SUCCESS)``): ``NONFINITE``
    non-finite logits (clean, at the linear solve's point) or gradients, ``MAX_STEPS`` the
    outer budget ``steps`` ran out, or the inner DeepFool's did (its status is passed on),
    ``NOT_FOUND`` the inner DeepFool found no boundary to project on."""

    perturbation: Array
    converged: Array
    adv_label: Array
    iterations: Array
    sparsity: Array
    l1: Array
    status: Array


def linear_solver(x: Array, w: Array, point: Array, lo, hi) -> Array:
    """Greedy L1 projection of the rows of ``x`` ``(N, D)`` onto ``{<w, z - point> >= 0}``
    inside the box ``[lo, hi]``, moving coordinates in decreasing ``|w_j|``.

    With ``g = <w, point - x>`` (> 0: the distance to cover), coordinate ``j`` can contribute
    at most ``|w_j| · room_j`` where ``room_j`` is the distance to the box face in the
    direction ``sign(w_j)``; the sorted cumulative contributions tell how many coordinates are
    moved to the face and how far the last one moves. Rows with ``g <= 0`` are returned as is.
    """
    n = x.shape[0]
    g = jnp.sum(w * (point - x), axis=1)  # needed increase of <w, z>
    lo = jnp.broadcast_to(lo, x.shape)
    hi = jnp.broadcast_to(hi, x.shape)
    room = jnp.where(w > 0, hi - x, x - lo)  # feasible move in the helpful direction
    room = jnp.maximum(room, 0)
    a = jnp.abs(w)
    order = jnp.argsort(-a, axis=1)
    a_s = jnp.take_along_axis(a, order, 1)
    room_s = jnp.take_along_axis(room, order, 1)
    contrib = jnp.where(a_s > 0, a_s * room_s, 0)  # room may be inf (no box)
    before = jnp.cumsum(contrib, axis=1)  # covered by coordinates 0..j, shifted to 0..j-1:
    before = jnp.concatenate([jnp.zeros_like(before[:, :1]), before[:, :-1]], axis=1)
    need = jnp.clip(g[:, None] - before, 0, None)  # still to cover when reaching j
    move_s = jnp.where(a_s > 0, jnp.minimum(need / jnp.where(a_s > 0, a_s, 1), room_s), 0)
    move = jnp.zeros_like(x).at[jnp.arange(n)[:, None], order].set(move_s)
    out = x + jnp.sign(w) * move
    return jnp.where((g > 0)[:, None], out, x)


@renamed(max_iter="steps", deepfool_iter="deepfool_steps")
def sparsefool(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array | None = None,
    *,
    lambda_: float = 3.0,
    overshoot: float = 0.02,
    steps: int = 20,
    bounds: tuple | None = None,
    deepfool_steps: int = 50,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> SparseFoolResult:
    """Sparse adversarial perturbations by SparseFool (Modas et al. 2019), batched.

    Parameters
    ----------
    logits_fn : the classifier (any form :func:`geomrobust.as_classifier` accepts);
    x : ``(N, *s)`` inside ``bounds`` (outside by more than ``max(1e-6 (hi - lo),
        8 eps max(|lo|, |hi|))``: ``ValueError`` naming how many examples); float16 /
        bfloat16 run in float32, otherwise the wider of ``x``'s and the logits' dtype
        (docs/conventions.md "Input checks"). y : labels or None.
    lambda_ : ``λ >= 1``, how far beyond the DeepFool boundary point the hyperplane is put.
    overshoot : ``η``, applied to ``x_LS - x_0`` after each linear solve.
    steps : outer iterations (each one runs a DeepFool to convergence; formerly
        ``max_iter``).
    bounds : the box ``(lo, hi)``, default None: no box, as every entry point
        (docs/api.md); each linear solve then moves the single coordinate with the largest
        ``|w_j|`` as far as needed. Pass ``(0.0, 1.0)`` for images: the box is what makes
        the greedy solve spread the perturbation over several pixels (formerly the default).
    deepfool_steps : the inner DeepFool's step budget (formerly ``deepfool_iter``).
    chunk_size, devices, progress : the executor's options (one compilation per
        architecture and chunk shape; inside ``jit`` the whole batch is one program).

    Returns
    -------
    SparseFoolResult; ``sparsity`` is the fraction of coordinates with ``x_adv != x``;
    ``status`` (int8 :class:`geomrobust.Status`) says per example how the search ended.
    """
    clf = as_classifier(logits_fn)
    check_bounds(bounds, "bounds")
    x, n_classes, _ = search_inputs(clf, jnp.asarray(x), "x", bounds=bounds)
    if y is not None:
        y = y if hasattr(y, "dtype") else np.asarray(y)
        check_labels(y, n_classes, x.shape[0], "y")
    lam = check_positive(lambda_, "lambda_")
    check_positive(overshoot, "overshoot", allow_zero=True)
    if not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    dtype = x.dtype
    if bounds is None:
        lo = jnp.asarray(-jnp.inf, dtype)
        hi = jnp.asarray(jnp.inf, dtype)
    else:
        lo, hi = (jnp.asarray(b, dtype) for b in bounds)
    program = partial(
        _sparsefool_program, lam=float(lam), overshoot=float(overshoot), steps=int(steps),
        deepfool_steps=int(deepfool_steps),
    )  # fmt: skip
    if y is None:
        return run_program(
            lambda c, a, b, xc: program(c, xc, None, a, b), (clf, lo, hi), (x,),
            chunk_size=chunk_size, devices=devices, progress=progress, desc="sparsefool",
        )  # fmt: skip
    y = jnp.asarray(y, jnp.int32)
    return run_program(
        lambda c, a, b, xc, yc: program(c, xc, yc, a, b), (clf, lo, hi), (x, y),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="sparsefool",
    )  # fmt: skip


@partial(jax.jit, static_argnames=("lam", "overshoot", "steps", "deepfool_steps"))
def _sparsefool_program(clf, x, y, lo, hi, *, lam, overshoot, steps, deepfool_steps):
    """SparseFool on a batch: one compilation per architecture, shapes and settings
    (weights, data and box are arguments)."""
    dtype = x.dtype
    n = x.shape[0]
    logits0 = clf(x).astype(dtype)
    y = jnp.argmax(logits0, -1).astype(jnp.int32) if y is None else y
    flat0 = x.reshape(n, -1)
    lo_f = jnp.broadcast_to(lo, x.shape).reshape(n, -1)
    hi_f = jnp.broadcast_to(hi, x.shape).reshape(n, -1)
    finite0 = jnp.all(jnp.isfinite(logits0), -1)
    # misclassified, or ON the boundary (tied top logits): a zero perturbation, converged
    wrong = (_top_gap(logits0, y) >= 0) & finite0

    def cond(c):
        _, done, _, it, _, _ = c
        return jnp.any(~done & (it < steps))

    def body(c):
        xi, done, conv, it, bad, why = c
        run = ~done & (it < steps)
        df = _deepfool_loop(clf, xi, y, 2, overshoot, deepfool_steps, None, None, None)
        xb = xi + df.perturbation
        k = jnp.where(df.converged, df.adv_label, 0)
        k = jnp.where(k == y, (y + 1) % logits0.shape[-1], k)
        _, w = batch_logit_difference_grads(clf, xb, y, k)
        w = w.reshape(n, -1)
        xb_l = flat0 + lam * (xb.reshape(n, -1) - flat0)
        xs = linear_solver(xi.reshape(n, -1), w, xb_l, lo_f, hi_f)
        xs = jnp.clip(flat0 + (1 + overshoot) * (xs - flat0), lo_f, hi_f).reshape(x.shape)
        lg = clf(xs)
        fin = jnp.all(jnp.isfinite(lg), -1) & jnp.all(jnp.isfinite(w), -1)
        ok = df.converged & fin  # DeepFool found a boundary to project on
        flipped = (jnp.argmax(lg, -1) != y) & ok
        step = run & ok
        xi = jnp.where(step.reshape((-1,) + (1,) * (x.ndim - 1)), xs, xi)
        newly_bad = run & ~ok
        # why a row stops without a flip: non-finite values, else the inner DeepFool's status
        reason = jnp.where(fin, df.status, jnp.int8(Status.NONFINITE)).astype(STATUS_DTYPE)
        return (
            xi,
            done | (run & (flipped | ~ok)),
            conv | (run & flipped),
            it + run.astype(jnp.int32),
            bad | newly_bad,
            jnp.where(newly_bad, reason, why),
        )

    why0 = jnp.where(finite0, jnp.int8(Status.MAX_STEPS), jnp.int8(Status.NONFINITE))
    init = (x, wrong | ~finite0, wrong, jnp.zeros(n, jnp.int32), ~finite0, why0)
    xi, _, conv, it, _, why = jax.lax.while_loop(cond, body, init)
    pert = xi - x
    changed = jnp.mean((pert.reshape(n, -1) != 0).astype(dtype), axis=1)
    l1 = jnp.where(conv, jnp.sum(jnp.abs(pert.reshape(n, -1)), 1), jnp.asarray(jnp.inf, dtype))
    adv = jnp.where(conv, _adv_label(clf(xi).astype(dtype), y), -1).astype(jnp.int32)
    # rows that never stopped otherwise ran out of the outer budget (``why`` MAX_STEPS)
    status = jnp.where(conv, jnp.int8(Status.SUCCESS), why).astype(STATUS_DTYPE)
    return SparseFoolResult(pert, conv, adv, it, changed, l1, status)
