"""Universal adversarial perturbations: one small vector that fools most inputs.

Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal adversarial perturbations", CVPR 2017.
Passes over the data (in an order drawn from an explicit key): for every point still correctly
labelled under ``x + v``, add the minimal DeepFool perturbation ``Δv`` that sends ``x + v``
across the boundary, and project ``v + Δv`` back onto the Lp ball of radius ``ξ``. Stop when
the fooling rate ``P(k̂(x + v) != k̂(x))`` reaches ``1 - δ`` or after ``steps``.
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
from .._status import STATUS_DTYPE, Status
from .._validation import check_positive
from ..models import as_classifier
from ..ops._norms import as_norm, project_ball
from ._deepfool import _as_bounds, _deepfool_loop, _validate
from ._fmn import finite_rows

__all__ = ["UniversalPerturbation", "universal_perturbation"]


class UniversalPerturbation(NamedTuple):
    """perturbation ``(*s)``; fooling_rate : the final rate; history ``(passes,)`` the fooling
    rate after each pass; converged : rate ``>= 1 - δ`` was reached; status : a scalar
    ``int8`` :class:`geomrobust.Status` (one perturbation for the whole dataset, so one
    status, not one per example: which examples it fools is a measurement, not how a search
    ended), ``SUCCESS`` (``== converged``) or ``MAX_STEPS`` (``steps`` passes ran out
    first)."""

    perturbation: Array
    fooling_rate: float
    history: np.ndarray
    converged: bool
    status: np.ndarray


@renamed(xi="eps", max_passes="steps", deepfool_iter="deepfool_steps")
def universal_perturbation(
    logits_fn: Callable[[Array], Array],
    x: Array,
    *,
    key: Array,
    eps: float,
    norm=jnp.inf,
    delta: float = 0.2,
    steps: int = 10,
    overshoot: float = 0.02,
    deepfool_steps: int = 10,
    bounds: tuple | None = None,
) -> UniversalPerturbation:
    """Universal perturbation ``v`` with ``||v||_p <= ε`` (``ξ`` of Algorithm 1 of the paper).

    Each pass is one jitted ``lax.scan`` over the shuffled data (one DeepFool of one example
    per scan step, compiled once for all passes); the fooling rate is then measured on the
    whole set in one batched forward pass. The pass compiles once per architecture,
    ``norm``, ``overshoot``, ``deepfool_steps`` and whether there are ``bounds``, with the
    weights, data, key, ``eps`` and the bounds' values as arguments: calling again with
    another model of the same architecture, other data of the same shape, another key or
    another radius does not recompile. ``Δv`` is L2 DeepFool's
    minimal perturbation of ``x + v`` (with the clean prediction as reference label), ignored
    where DeepFool does not converge. ``bounds`` clips ``x + v`` when measuring the fooling
    rate and in DeepFool.

    Parameters
    ----------
    x : ``(N, *s)`` data (inside ``bounds``; the dtype rule of every search: float16 /
        bfloat16 run in float32); key : PRNG key for the data order of every pass.
    eps : radius of the Lp ball (formerly ``xi``); norm : 2 or inf.
    delta : stop when the fooling rate reaches ``1 - delta``.
    steps : passes over the data at most (formerly ``max_passes``).
    deepfool_steps : the inner DeepFool's step budget (formerly ``deepfool_iter``).

    An example whose logit row is not finite (clean or perturbed) is never counted fooled.
    """
    clf = as_classifier(logits_fn)
    # the DeepFool checks (dtype rule, box, device) convert x once; see gr.deepfool
    x = _validate(clf, jnp.asarray(x), None, 2, overshoot, deepfool_steps, None, None, bounds)
    xi = check_positive(eps, "eps")
    p = as_norm(norm)
    if not (math.isinf(p) or p == 2.0):
        raise ValueError(f"norm must be 2 or inf, got {norm!r}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    logits0 = clf(x)
    label0 = jnp.where(finite_rows(logits0), jnp.argmax(logits0, -1), -1)
    has_bounds = bounds is not None
    lo, hi = _as_bounds(bounds if has_bounds else (0, 0), x.dtype)
    one_pass = partial(_one_pass, p=p, overshoot=float(overshoot),
                       deepfool_iter=int(deepfool_steps), has_bounds=has_bounds)  # fmt: skip
    xi_arr = jnp.asarray(xi, x.dtype)

    v = jnp.zeros(x.shape[1:], x.dtype)
    history = []
    for t in range(steps):
        v, rate = one_pass(clf, x, label0, v, jax.random.fold_in(key, t), xi_arr, lo, hi)
        history.append(float(rate))
        if history[-1] >= 1 - delta:
            break
    rate = history[-1] if history else 0.0
    converged = rate >= 1 - delta
    status = STATUS_DTYPE(Status.SUCCESS if converged else Status.MAX_STEPS)
    return UniversalPerturbation(v, rate, np.asarray(history), converged, np.asarray(status))


@partial(jax.jit, static_argnames=("p", "overshoot", "deepfool_iter", "has_bounds"))
def _one_pass(clf, x, label0, v, k, xi, lo, hi, *, p, overshoot, deepfool_iter, has_bounds):
    """One pass of Algorithm 1, ``-> (v, fooling rate)``: compiled once per architecture and
    settings (weights, data, key, radius and box are arguments)."""
    bounds = (lo, hi) if has_bounds else None
    order = jax.random.permutation(k, x.shape[0])

    def clip(z):
        return z if bounds is None else jnp.clip(z, lo, hi)

    def project(v):
        return project_ball(v.reshape(1, -1), xi, p).reshape(v.shape)

    def visit(v, i):
        xv = clip(x[i] + v)[None]
        still = (jnp.argmax(clf(xv), -1)[0] == label0[i]) & (label0[i] >= 0)

        def push(v):
            df = _deepfool_loop(
                clf, xv, label0[i][None], 2, overshoot, deepfool_iter, None, None, bounds
            )
            dv = jnp.where(df.converged[0], df.perturbation[0], 0)
            return project(v + dv)

        return jax.lax.cond(still, push, lambda v: v, v), None

    v, _ = jax.lax.scan(visit, v, order)
    logits = clf(clip(x + v[None]))
    fooled = (jnp.argmax(logits, -1) != label0) & finite_rows(logits) & (label0 >= 0)
    return v, jnp.mean(fooled.astype(jnp.float32))
