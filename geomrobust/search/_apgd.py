"""APGD (cross-entropy and DLR losses) and a Square-attack random search, in an Lp ball.

APGD: Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. Square attack: Andriushchenko, Croce, Flammarion, Hein,
"Square Attack: a query-efficient black-box adversarial attack via random search", ECCV 2020.

Both return :class:`~geomrobust.search.AttackResult` and run as module-level jitted programs
with the classifier as a traced argument. APGD is an ``init``/``step`` pair
(:func:`apgd_init`, :func:`apgd_step`) under ``lax.fori_loop``, restarts under
``lax.fori_loop`` too; the square search needs no gradient (one forward pass per query).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._validation import check_classifier, check_key, check_positive, is_concrete
from ..models import as_classifier
from ._attacks import AttackResult
from ._fmn import (
    best_other,
    bounds_pair,
    check_common,
    check_steps,
    finite_rows,
    project_rows,
    rows,
    unit_l2,
)

__all__ = ["APGDState", "apgd", "apgd_checkpoints", "apgd_init", "apgd_step", "square_attack"]

_LOSSES = ("ce", "dlr")


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
    """The iterations ``w_j = ceil(p_j N)`` at which APGD may halve its step:
    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (Croce & Hein
    2020, Sec. 3.2), below ``N = steps``."""
    ps = [0.0, 0.22]
    while True:
        nxt = ps[-1] + max(ps[-1] - ps[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        ps.append(nxt)
    w = sorted({math.ceil(round(p * steps, 9)) for p in ps[1:]})
    return tuple(v for v in w if 0 < v < steps)


def _loss(logits, y, loss):
    """Per-example loss to ascend: cross-entropy, or DLR ``-(z_y - max_{i != y} z_i) /
    (z_π1 - z_π3 + 1e-12)`` with ``π`` the logits sorted decreasingly."""
    idx = jnp.arange(logits.shape[0])
    if loss == "ce":
        return -jax.nn.log_softmax(logits, axis=-1)[idx, y]
    srt = jnp.sort(logits, axis=-1)
    j = best_other(logits, y)
    gap = logits[idx, y] - logits[idx, j]
    return -gap / (srt[:, -1] - srt[:, -3] + 1e-12)


def _loss_and_grad(logits_fn, z, y, loss):
    def total(z):
        logits = logits_fn(z)
        per = _loss(logits, y, loss)
        return jnp.sum(per), (per, logits)

    (_, (per, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
    return per, logits, g


class APGDState(NamedTuple):
    """Per-example APGD state (leading axis ``N``; ``eps`` and ``x`` fixed).

    point, prev : current and previous iterates; grad, loss : at ``point``; eta : the step
    size ``(N,)``; best, best_loss, best_grad : the highest-loss iterate; adv : an
    adversarial iterate (the last met) ``(N, *s)``; success ``(N,)``; count : loss increases
    since the last checkpoint ``(N,)`` int32; ckpt_loss : ``best_loss`` at the last
    checkpoint; reduced : the step was halved at the last checkpoint ``(N,)``; k : the
    iteration (scalar int32).
    """

    point: Array
    prev: Array
    grad: Array
    loss: Array
    eta: Array
    best: Array
    best_loss: Array
    best_grad: Array
    adv: Array
    success: Array
    count: Array
    ckpt_loss: Array
    reduced: Array
    k: Array


def _proj(z, x, eps, p, bounds):
    d = project_rows(z - x, eps, p)
    z = x + d
    return z if bounds is None else jnp.clip(z, bounds[0], bounds[1])


def _direction(g, p):
    return jnp.sign(g) if math.isinf(p) else unit_l2(g)


def _random_start(key, x, eps, p):
    n = x.shape[0]
    if math.isinf(p):
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * rows(eps, x.ndim)
    g = jax.random.normal(key, x.shape, x.dtype)
    return unit_l2(g) * rows(eps, x.ndim) * jnp.ones((n,) + (1,) * (x.ndim - 1), x.dtype)


def apgd_init(logits_fn, x, y, eps, *, key=None, norm=jnp.inf, loss="ce", bounds=None):
    """The state at the (random, with ``key``) start ``x_0`` in the ball: one forward + VJP.
    ``eps`` ``(N,)``; the step starts at ``η = 2 ε``."""
    p = float(norm)
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    z0 = x if key is None else x + _random_start(key, x, eps, p)
    z0 = _proj(z0, x, eps, p, bounds)
    per, logits, g = _loss_and_grad(logits_fn, z0, y, loss)
    adv = (jnp.argmax(logits, -1) != y) & finite_rows(logits)
    n = x.shape[0]
    return APGDState(
        point=z0, prev=z0, grad=g, loss=per, eta=2 * eps, best=z0, best_loss=per,
        best_grad=g, adv=z0, success=adv, count=jnp.zeros((n,), jnp.int32),
        ckpt_loss=per, reduced=jnp.zeros((n,), bool), k=jnp.zeros((), jnp.int32),
    )  # fmt: skip


def apgd_step(logits_fn, state: APGDState, x, y, eps, *, norm=jnp.inf, loss="ce",
              bounds=None, checkpoints=(), rho=0.75, momentum=0.75) -> APGDState:  # fmt: skip
    """One APGD iteration (Croce & Hein 2020, Alg. 1):

        z = P(x_k + η ∇ℓ-direction),  x_{k+1} = P(x_k + α (z - x_k) + (1 - α)(x_k - x_{k-1}))

    (``α = momentum``, 1 at the first step; the direction ``sign(∇ℓ)`` for Linf,
    ``∇ℓ / ||∇ℓ||_2`` for L2; ``P`` the projection on the ball and the box), then one forward
    + VJP at ``x_{k+1}``. At a checkpoint ``w_j`` (``checkpoints``, the iterations after
    which to test), ``η`` is halved and the iterate moved back to the best point where the
    loss increased in at most ``ρ`` of the steps since the last checkpoint, or where the
    step was not halved at the last checkpoint and the best loss has not improved since.
    """
    p = float(norm)
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    nd = x.ndim
    eta = rows(state.eta, nd)
    z = _proj(state.point + eta * _direction(state.grad, p), x, eps, p, bounds)
    a = jnp.where(state.k == 0, 1.0, momentum).astype(x.dtype)
    new = _proj(state.point + a * (z - state.point) + (1 - a) * (state.point - state.prev),
                x, eps, p, bounds)  # fmt: skip
    per, logits, g = _loss_and_grad(logits_fn, new, y, loss)
    finite = finite_rows(logits, g)
    per = jnp.where(finite, per, -jnp.inf)
    g = jnp.where(rows(finite, nd), g, 0)
    is_adv = (jnp.argmax(logits, -1) != y) & finite
    improved = per > state.best_loss
    best = jnp.where(rows(improved, nd), new, state.best)
    best_loss = jnp.where(improved, per, state.best_loss)
    best_grad = jnp.where(rows(improved, nd), g, state.best_grad)
    count = state.count + (per > state.loss).astype(jnp.int32)
    k1 = state.k + 1
    ck = jnp.asarray((0, *checkpoints), jnp.int32)  # previous checkpoint of each
    is_ck = jnp.any(ck[1:] == k1) if len(checkpoints) else jnp.asarray(False)
    pos = jnp.argmax(ck == k1)
    since = (k1 - ck[jnp.maximum(pos - 1, 0)]).astype(x.dtype)
    osc = count.astype(x.dtype) <= rho * since
    stale = ~state.reduced & (state.ckpt_loss >= best_loss)
    halve = is_ck & (osc | stale)
    point = jnp.where(rows(halve, nd), best, new)
    grad = jnp.where(rows(halve, nd), best_grad, g)
    return APGDState(
        point=point,
        prev=state.point,
        grad=grad,
        loss=jnp.where(halve, best_loss, per),
        eta=jnp.where(halve, state.eta / 2, state.eta),
        best=best,
        best_loss=best_loss,
        best_grad=best_grad,
        adv=jnp.where(rows(is_adv, nd), new, state.adv),
        success=state.success | is_adv,
        count=jnp.where(is_ck, 0, count),
        ckpt_loss=jnp.where(is_ck, best_loss, state.ckpt_loss),
        reduced=jnp.where(is_ck, halve, state.reduced),
        k=k1,
    )


def _check_attack(clf, x, y, eps, norm, bounds, key, steps, restarts):
    p, x = check_common(clf, x, y, norm, bounds)
    if y is None:
        raise ValueError("y (the labels) is required")
    if is_concrete(eps) and not np.all(np.asarray(eps) >= 0):
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    check_key(key, "key")
    check_steps(steps, "steps")
    check_steps(restarts, "restarts")
    return p, x


def apgd(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    key: Array,
    eps,
    norm=jnp.inf,
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    random_start: bool = True,
    bounds: tuple | None = None,
) -> AttackResult:
    """APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size halved at
    checkpoints when progress stalls, on the cross-entropy (``loss="ce"``, APGD-CE) or the
    difference-of-logits-ratio loss (``loss="dlr"``, APGD-DLR; needs ``K >= 3``).

    ``steps`` iterations from a random start in the ball (explicit ``key``), the step rule
    :func:`apgd_step` with the checkpoints :func:`apgd_checkpoints`; ``restarts`` runs with
    keys ``fold_in(key, r)``, an example counting as broken when any run finds an
    adversarial iterate (``random_start=False``: every run starts at ``x``, as one run).
    ``eps`` a scalar or ``(N,)``; ``x`` ``(N, *s)``, ``y`` ``(N,)``.

    Returns
    -------
    AttackResult
        ``adversarial`` an adversarial iterate where ``success``, else the highest-loss one.
    """
    if loss not in _LOSSES:
        raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
    clf = as_classifier(logits_fn)
    p, x = _check_attack(clf, x, y, eps, norm, bounds, key, steps, restarts)
    k = check_classifier(clf, x)
    if loss == "dlr" and k < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {k}; use loss='ce'")
    x = jnp.asarray(x)
    lo, hi = bounds_pair(bounds, x.dtype)
    return _apgd_program(
        clf, x, jnp.asarray(y).astype(jnp.int32), key, jnp.asarray(eps, x.dtype), lo, hi, p=p,
        loss=loss, steps=int(steps), restarts=int(restarts) if random_start else 1,
        random_start=bool(random_start), has_bounds=bounds is not None,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("p", "loss", "steps", "restarts", "random_start", "has_bounds"))
def _apgd_program(clf, x, y, key, eps, lo, hi, *, p, loss, steps, restarts, has_bounds,
                  random_start=True):  # fmt: skip
    bounds = (lo, hi) if has_bounds else None
    eps = jnp.broadcast_to(eps, (x.shape[0],))
    ckpts = apgd_checkpoints(steps)

    def run(r, carry):
        adv, success, best, best_loss = carry
        kr = jax.random.fold_in(key, r) if random_start else None
        st = apgd_init(clf, x, y, eps, key=kr, norm=p, loss=loss, bounds=bounds)

        def body(_, s):
            return apgd_step(clf, s, x, y, eps, norm=p, loss=loss, bounds=bounds,
                             checkpoints=ckpts)  # fmt: skip

        st = jax.lax.fori_loop(0, steps, body, st)
        new_succ = st.success & ~success
        adv = jnp.where(rows(new_succ, x.ndim), st.adv, adv)
        better = st.best_loss > best_loss
        best = jnp.where(rows(better, x.ndim), st.best, best)
        return adv, success | st.success, best, jnp.maximum(best_loss, st.best_loss)

    init = (x, jnp.zeros(x.shape[:1], bool), x, jnp.full(x.shape[:1], -jnp.inf, x.dtype))
    adv, success, best, _ = jax.lax.fori_loop(0, restarts, run, init)
    z = jnp.where(rows(success, x.ndim), adv, best)
    label = jnp.argmax(clf(z), -1).astype(jnp.int32)
    success = success & (label != y)  # re-tested at the returned point
    return AttackResult(z - x, z, success, label)


# ----------------------------------------------------------------------------- square attack
def _p_schedule(i, queries, p_init):
    """The fraction of coordinates changed at query ``i``: ``p_init`` halved at the queries
    10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query run (rescaled)."""
    marks = jnp.asarray([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000], jnp.float32)
    it = (i.astype(jnp.float32) * 10000.0 / queries).astype(jnp.float32)
    return p_init / 2.0 ** jnp.sum(it > marks)


def _margin(logits, y):
    idx = jnp.arange(logits.shape[0])
    return logits[idx, y] - logits[idx, best_other(logits, y)]


def square_attack(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    key: Array,
    eps,
    queries: int = 1000,
    p_init: float = 0.05,
    bounds: tuple | None = None,
) -> AttackResult:
    """A Square-attack style random search in the Linf ball (Andriushchenko et al. 2020):
    no gradients, one forward pass per query.

    Start from vertical stripes ``x + ε s`` (``s = ±1`` random per column and channel);
    at each query replace a random square window (side ``sqrt(p h w)``, ``p`` from
    ``p_init`` halved on the authors' schedule) of each image by ``±ε`` (random per channel)
    and keep the proposal where it lowers the margin ``f_y - max_{j != y} f_j``. Inputs that
    are not ``(N, H, W, C)`` images use a random subset of a fraction ``p`` of the coordinates
    instead of a window (and at least one). ``eps`` a scalar or ``(N,)``. Used by
    :func:`geomrobust.search.masking_checks` as the black-box reference: a classifier whose
    accuracy under this search is lower than under the gradient attacks masks its gradients.
    """
    if not check_positive(p_init, "p_init") <= 1:
        raise ValueError(
            f"p_init must lie in (0, 1] (the fraction of the image a square covers), got {p_init!r}"
        )
    clf = as_classifier(logits_fn)
    _, x = _check_attack(clf, x, y, eps, jnp.inf, bounds, key, queries, 1)
    x = jnp.asarray(x)
    lo, hi = bounds_pair(bounds, x.dtype)
    return _square_program(clf, x, jnp.asarray(y).astype(jnp.int32), key,
                           jnp.asarray(eps, x.dtype), jnp.asarray(p_init, jnp.float32), lo, hi,
                           queries=int(queries), has_bounds=bounds is not None)  # fmt: skip


@partial(jax.jit, static_argnames=("queries", "has_bounds"))
def _square_program(clf, x, y, key, eps, p_init, lo, hi, *, queries, has_bounds):
    n = x.shape[0]
    nd = x.ndim
    e = rows(jnp.broadcast_to(eps, (n,)), nd)

    def clip(z):
        return jnp.clip(z, lo, hi) if has_bounds else z

    image = nd == 4
    k0, key = jax.random.split(key)
    if image:
        _, h, w, c = x.shape
        stripes = jax.random.choice(k0, jnp.asarray([-1.0, 1.0], x.dtype), (n, 1, w, c))
        z = clip(x + e * stripes)
    else:
        z = clip(x + e * jax.random.choice(k0, jnp.asarray([-1.0, 1.0], x.dtype), x.shape))
    logits = clf(z)
    m = jnp.where(finite_rows(logits), _margin(logits, y), jnp.inf)

    def body(i, carry):
        z, m = carry
        ki = jax.random.fold_in(key, i)
        k1, k2, k3 = jax.random.split(ki, 3)
        frac = _p_schedule(i, queries, p_init)
        if image:
            side = jnp.clip(jnp.round(jnp.sqrt(frac * h * w)), 1, h - 1).astype(jnp.int32)
            r0 = jax.random.randint(k1, (n, 1, 1, 1), 0, h - side + 1)
            c0 = jax.random.randint(k2, (n, 1, 1, 1), 0, w - side + 1)
            ii = jnp.arange(h)[None, :, None, None]
            jj = jnp.arange(w)[None, None, :, None]
            win = (ii >= r0) & (ii < r0 + side) & (jj >= c0) & (jj < c0 + side)
            vals = jax.random.choice(k3, jnp.asarray([-1.0, 1.0], x.dtype), (n, 1, 1, c))
        else:
            u = jax.random.uniform(k1, x.shape)
            one = jax.random.randint(k2, (n,), 0, math.prod(x.shape[1:]))  # >= 1 coordinate
            hit = jax.nn.one_hot(one, math.prod(x.shape[1:]), dtype=bool).reshape(x.shape)
            win = (u < frac) | hit
            vals = jax.random.choice(k3, jnp.asarray([-1.0, 1.0], x.dtype), x.shape)
        prop = clip(jnp.where(win, x + e * vals, z))
        lg = clf(prop)
        mp = jnp.where(finite_rows(lg), _margin(lg, y), jnp.inf)
        take = (mp < m) & (m >= 0)  # broken examples stop moving
        return jnp.where(rows(take, nd), prop, z), jnp.where(take, mp, m)

    z, m = jax.lax.fori_loop(0, queries, body, (z, m))
    label = jnp.argmax(clf(z), -1).astype(jnp.int32)
    return AttackResult(z - x, z, label != y, label)
