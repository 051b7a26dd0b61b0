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

from .._deprecation import renamed
from .._validation import all_concrete, check_classifier, check_key, check_positive, is_concrete
from ..models import as_classifier
from ._attacks import AttackResult, attack_status
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
from ._loop import Method, drive, run_while

__all__ = [
    "APGDInfo",
    "APGDState",
    "SquareInfo",
    "SquareState",
    "apgd",
    "apgd_checkpoints",
    "apgd_init",
    "apgd_step",
    "square_attack",
    "square_init",
    "square_result",
    "square_step",
]

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
    """Per-example APGD state (leading axis ``N``).

    x : the clean points; y : labels ``(N,)`` int32; eps : the radius ``(N,)``; point,
    prev : current and previous iterates; grad, loss : at ``point``; eta : the step
    size ``(N,)``; best, best_loss, best_grad : the highest-loss iterate; adv : an
    adversarial iterate (the last met) ``(N, *s)``; success ``(N,)``; count : loss increases
    since the last checkpoint ``(N,)`` int32; ckpt_loss : ``best_loss`` at the last
    checkpoint; reduced : the step was halved at the last checkpoint ``(N,)``; k : the
    iteration (scalar int32).
    """

    x: Array
    y: Array
    eps: Array
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


class APGDInfo(NamedTuple):
    """Per-step diagnostics of :func:`apgd_step`: the loss ``(N,)`` at the new iterate
    (``-inf`` where its logits are not finite) and whether it is adversarial ``(N,)``."""

    loss: Array
    adversarial: Array


def apgd_init(logits_fn, x, y, eps, *, key=None, norm=jnp.inf, loss="ce", bounds=None):
    """The state at the (random, with ``key``) start ``x_0`` in the ball: one forward + VJP.
    ``eps`` a scalar or ``(N,)``; the step starts at ``η = 2 ε``."""
    p = float(norm)
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    y = jnp.asarray(y, jnp.int32)
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    z0 = x if key is None else x + _random_start(key, x, eps, p)
    z0 = _proj(z0, x, eps, p, bounds)
    per, logits, g = _loss_and_grad(logits_fn, z0, y, loss)
    adv = (jnp.argmax(logits, -1) != y) & finite_rows(logits)
    n = x.shape[0]
    return APGDState(
        x=x, y=y, eps=eps, point=z0, prev=z0, grad=g, loss=per, eta=2 * eps, best=z0, best_loss=per,
        best_grad=g, adv=z0, success=adv, count=jnp.zeros((n,), jnp.int32),
        ckpt_loss=per, reduced=jnp.zeros((n,), bool), k=jnp.zeros((), jnp.int32),
    )  # fmt: skip


def apgd_step(logits_fn, state: APGDState, *, norm=jnp.inf, loss="ce", bounds=None,
              checkpoints=(), rho=0.75, momentum=0.75) -> tuple[APGDState, APGDInfo]:  # fmt: skip
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
    x, y, eps = state.x, state.y, state.eps
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
    new_state = APGDState(
        x=x,
        y=y,
        eps=eps,
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
    return new_state, APGDInfo(loss=per, adversarial=is_adv)


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
    loop: str = "auto",
) -> AttackResult:
    """APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size halved at
    checkpoints when progress stalls, on the cross-entropy (``loss="ce"``, APGD-CE) or the
    difference-of-logits-ratio loss (``loss="dlr"``, APGD-DLR; needs ``K >= 3``).

    ``steps`` iterations from a random start in the ball (explicit ``key``), the step rule
    :func:`apgd_step` with the checkpoints :func:`apgd_checkpoints`; ``restarts`` runs with
    keys ``fold_in(key, r)``, an example counting as broken when any run finds an
    adversarial iterate (``random_start=False``: every run starts at ``x``, as one run).
    ``eps`` a scalar or ``(N,)``; ``x`` ``(N, *s)``, ``y`` ``(N,)``.

    ``loop``: ``"host"`` (a host loop of jitted steps, each restart in turn), ``"device"``
    (one ``lax.while_loop`` per restart) or ``"auto"`` (host on the CPU backend); under
    ``jit``/``vmap`` the restarts run under ``lax.fori_loop``. A non-finite logit row at the
    returned point is never a success.

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
    y = jnp.asarray(y).astype(jnp.int32)
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    static = _APGDStatic(p, loss, int(steps), bounds is not None, bool(random_start))
    runs = int(restarts) if random_start else 1
    if not all_concrete(clf, x, y, key, eps, lo, hi):
        return _apgd_traced(clf, x, y, key, eps, lo, hi, static=static, restarts=runs)
    carry = _no_run(x)
    for r in range(runs):  # one host-driven APGD run per restart
        kr = jax.random.fold_in(key, r) if random_start else key
        run = drive(APGD, clf, (kr, lo, hi), (x, y, eps), static, loop=loop, chunk_size=None)
        carry = _merge_runs(carry, run)
    return _apgd_final(clf, x, y, carry)


def _no_run(x):
    """``(adv, success, best, best_loss)`` before the first run."""
    return x, jnp.zeros(x.shape[:1], bool), x, jnp.full(x.shape[:1], -jnp.inf, x.dtype)


class _APGDStatic(NamedTuple):
    p: float
    loss: str
    steps: int
    has_bounds: bool
    random_start: bool


def _a_init(clf, settings, batch, st: _APGDStatic):
    key, lo, hi = settings
    x, y, eps = batch
    return apgd_init(clf, x, y, eps, key=key if st.random_start else None, norm=st.p,
                     loss=st.loss, bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _a_step(clf, settings, state, st: _APGDStatic):
    _, lo, hi = settings
    return apgd_step(clf, state, norm=st.p, loss=st.loss,
                     bounds=(lo, hi) if st.has_bounds else None,
                     checkpoints=apgd_checkpoints(st.steps))  # fmt: skip


def _a_done(state, st: _APGDStatic):
    return jnp.broadcast_to(state.k >= st.steps, state.y.shape)


def _a_result(clf, settings, state, st: _APGDStatic):
    """One run's ``(adv, success, best, best_loss)``."""
    return state.adv, state.success, state.best, state.best_loss


APGD = Method("apgd", _a_init, _a_step, _a_done, _a_result)
"""One APGD run as a method of the search driver (all rows take ``steps`` steps)."""


@jax.jit
def _merge_runs(carry, run):
    """Join a restart's ``(adv, success, best, best_loss)`` into those of the runs before:
    the first adversarial iterate found, the highest-loss iterate."""
    adv, success, best, best_loss = carry
    r_adv, r_success, r_best, r_loss = run
    nd = adv.ndim
    new_succ = r_success & ~success
    adv = jnp.where(rows(new_succ, nd), r_adv, adv)
    better = r_loss > best_loss
    best = jnp.where(rows(better, nd), r_best, best)
    return adv, success | r_success, best, jnp.maximum(best_loss, r_loss)


@jax.jit
def _apgd_final(clf, x, y, carry):
    """The returned point: an adversarial iterate where one was met, else the highest-loss
    one, re-tested (a non-finite logit row there is never a success)."""
    adv, success, best, _ = carry
    z = jnp.where(rows(success, x.ndim), adv, best)
    logits = clf(z)
    label = jnp.argmax(logits, -1).astype(jnp.int32)
    finite = finite_rows(logits)
    success = success & (label != y) & finite
    return AttackResult(z - x, z, success, label, attack_status(success, finite))


@partial(jax.jit, static_argnames=("static", "restarts"))
def _apgd_traced(clf, x, y, key, eps, lo, hi, *, static, restarts):
    """The transformable form (under ``jit``/``vmap``): every restart's run under
    ``lax.fori_loop``, the same arithmetic as the host-driven runs."""

    def run(r, carry):
        kr = jax.random.fold_in(key, r) if static.random_start else key
        one = run_while(APGD, clf, (kr, lo, hi), (x, y, eps), static)
        return _merge_runs(carry, one)

    carry = jax.lax.fori_loop(0, restarts, run, _no_run(x))
    return _apgd_final(clf, x, y, carry)


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


@renamed(queries="steps")
def square_attack(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    key: Array,
    eps,
    steps: int = 1000,
    p_init: float = 0.05,
    bounds: tuple | None = None,
    loop: str = "auto",
) -> AttackResult:
    """A Square-attack style random search in the Linf ball (Andriushchenko et al. 2020):
    no gradients, one forward pass per query; ``steps`` queries (formerly ``queries``).

    Start from vertical stripes ``x + ε s`` (``s = ±1`` random per column and channel);
    at each query replace a random square window (side ``sqrt(p h w)``, ``p`` from
    ``p_init`` halved on the authors' schedule) of each image by ``±ε`` (random per channel)
    and keep the proposal where it lowers the margin ``f_y - max_{j != y} f_j``. Inputs that
    are not ``(N, H, W, C)`` images use a random subset of a fraction ``p`` of the coordinates
    instead of a window (and at least one). ``eps`` a scalar or ``(N,)``. Used by
    :func:`geomrobust.search.masking_checks` as the black-box reference: a classifier whose
    accuracy under this search is lower than under the gradient attacks masks its gradients.

    The kernels :func:`square_init` / :func:`square_step` / :func:`square_result` (the PRNG
    key lives in the state) run through the search driver (``loop`` as for
    :func:`apgd`). A non-finite logit row at the returned point is never a success.
    """
    if not check_positive(p_init, "p_init") <= 1:
        raise ValueError(
            f"p_init must lie in (0, 1] (the fraction of the image a square covers), got {p_init!r}"
        )
    clf = as_classifier(logits_fn)
    _, x = _check_attack(clf, x, y, eps, jnp.inf, bounds, key, steps, 1)
    x = jnp.asarray(x)
    lo, hi = bounds_pair(bounds, x.dtype)
    y = jnp.asarray(y).astype(jnp.int32)
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    static = _SquareStatic(int(steps), bounds is not None)
    settings = (key, jnp.asarray(p_init, jnp.float32), lo, hi)
    return AttackResult(*drive(SQUARE, clf, settings, (x, y, eps), static, loop=loop,
                               chunk_size=None))  # fmt: skip


class SquareState(NamedTuple):
    """The Square search's state: x, y, eps ``(N,)``, the current point z ``(N, *s)``, its
    margin m ``(N,)`` (``inf`` where its logits are not finite), its label ``(N,)`` and
    ``finite`` ``(N,)`` (its logit row is finite), the PRNG key of the draws and the query
    count ``i`` (scalar: every row takes the same ``steps`` queries)."""

    x: Array
    y: Array
    eps: Array
    z: Array
    m: Array
    label: Array
    finite: Array
    key: Array
    i: Array


class SquareInfo(NamedTuple):
    """Per-step diagnostics of :func:`square_step`: the proposal was kept ``(N,)``."""

    accepted: Array


def _clip_box(z, bounds):
    return z if bounds is None else jnp.clip(z, bounds[0], bounds[1])


def square_init(logits_fn, x, y, eps, *, key, bounds=None) -> SquareState:
    """The start ``x + ε s`` (vertical stripes ``s = ±1`` per column and channel for
    ``(N, H, W, C)`` images, per coordinate otherwise) and one forward pass there."""
    n, nd = x.shape[0], x.ndim
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    y = jnp.asarray(y, jnp.int32)
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (n,))
    e = rows(eps, nd)
    k0, key = jax.random.split(key)
    signs = jnp.asarray([-1.0, 1.0], x.dtype)
    if nd == 4:
        _, _, w, c = x.shape
        z = _clip_box(x + e * jax.random.choice(k0, signs, (n, 1, w, c)), bounds)
    else:
        z = _clip_box(x + e * jax.random.choice(k0, signs, x.shape), bounds)
    logits = logits_fn(z)
    finite = finite_rows(logits)
    m = jnp.where(finite, _margin(logits, y), jnp.inf)
    label = jnp.argmax(logits, -1).astype(jnp.int32)
    return SquareState(x, y, eps, z, m, label, finite, key, jnp.zeros((), jnp.int32))


def square_step(logits_fn, state: SquareState, *, steps: int, p_init=0.05, bounds=None):
    """One query for every row: a random window (side ``sqrt(p h w)``, ``p`` from ``p_init``
    on the authors' schedule over ``steps`` queries) set to ``x ± ε`` (random per channel),
    kept where it lowers the margin of a row not yet broken; ``-> (state, SquareInfo)``."""
    x, y, z, m = state.x, state.y, state.z, state.m
    n, nd = x.shape[0], x.ndim
    bounds = None if bounds is None else bounds_pair(bounds, x.dtype)
    e = rows(state.eps, nd)
    i = state.i
    k1, k2, k3 = jax.random.split(jax.random.fold_in(state.key, i), 3)
    frac = _p_schedule(i, steps, p_init)
    signs = jnp.asarray([-1.0, 1.0], x.dtype)
    if nd == 4:
        _, h, w, c = x.shape
        side = jnp.clip(jnp.round(jnp.sqrt(frac * h * w)), 1, h - 1).astype(jnp.int32)
        r0 = jax.random.randint(k1, (n, 1, 1, 1), 0, h - side + 1)
        c0 = jax.random.randint(k2, (n, 1, 1, 1), 0, w - side + 1)
        ii = jnp.arange(h)[None, :, None, None]
        jj = jnp.arange(w)[None, None, :, None]
        win = (ii >= r0) & (ii < r0 + side) & (jj >= c0) & (jj < c0 + side)
        vals = jax.random.choice(k3, signs, (n, 1, 1, c))
    else:
        d = math.prod(x.shape[1:])
        u = jax.random.uniform(k1, x.shape)
        one = jax.random.randint(k2, (n,), 0, d)  # at least one coordinate
        hit = jax.nn.one_hot(one, d, dtype=bool).reshape(x.shape)
        win = (u < frac) | hit
        vals = jax.random.choice(k3, signs, x.shape)
    prop = _clip_box(jnp.where(win, x + e * vals, z), bounds)
    lg = logits_fn(prop)
    fin = finite_rows(lg)
    mp = jnp.where(fin, _margin(lg, y), jnp.inf)
    take = (mp < m) & (m >= 0)  # broken examples stop moving
    new = state._replace(
        z=jnp.where(rows(take, nd), prop, z),
        m=jnp.where(take, mp, m),
        label=jnp.where(take, jnp.argmax(lg, -1).astype(jnp.int32), state.label),
        finite=jnp.where(take, fin, state.finite),
        i=i + 1,
    )
    return new, SquareInfo(accepted=take)


def square_result(state: SquareState) -> AttackResult:
    """The :class:`AttackResult` at the current point (a non-finite logit row is never a
    success)."""
    success = (state.label != state.y) & state.finite
    return AttackResult(state.z - state.x, state.z, success, state.label,
                        attack_status(success, state.finite))  # fmt: skip


class _SquareStatic(NamedTuple):
    steps: int
    has_bounds: bool


def _s_init(clf, settings, batch, st: _SquareStatic):
    key, _, lo, hi = settings
    x, y, eps = batch
    return square_init(clf, x, y, eps, key=key, bounds=(lo, hi) if st.has_bounds else None)


def _s_step(clf, settings, state, st: _SquareStatic):
    _, p_init, lo, hi = settings
    return square_step(clf, state, steps=st.steps, p_init=p_init,
                       bounds=(lo, hi) if st.has_bounds else None)  # fmt: skip


def _s_done(state, st: _SquareStatic):
    return jnp.broadcast_to(state.i >= st.steps, state.y.shape)


def _s_result(clf, settings, state, st: _SquareStatic):
    return square_result(state)


SQUARE = Method("square", _s_init, _s_step, _s_done, _s_result)
"""The Square search as a method of the search driver (every row takes ``steps`` queries)."""


def square_run(clf, x, y, key, eps, p_init, lo, hi, *, steps: int, has_bounds: bool):
    """The Square search in its transformable form (one ``lax.while_loop``), for programs
    that run it on traced data (:func:`geomrobust.search.masking_checks`)."""
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    out = run_while(
        SQUARE, clf, (key, p_init, lo, hi), (x, y, eps), _SquareStatic(steps, has_bounds)
    )
    return AttackResult(*out)


def apgd_run(clf, x, y, key, eps, lo, hi, *, p, loss, steps, restarts=1, has_bounds,
             random_start=True):  # fmt: skip
    """APGD in its transformable form (restarts under ``lax.fori_loop``), for programs that
    run it on traced data."""
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    static = _APGDStatic(p, loss, steps, has_bounds, random_start)
    return _apgd_traced(clf, x, y, key, eps, lo, hi, static=static, restarts=restarts)
