"""Robustness evaluation during training and the catastrophic-overfitting monitor.

Catastrophic overfitting (Wong, Rice, Kolter, ICLR 2020; Andriushchenko & Flammarion,
NeurIPS 2020): during single-step (FGSM) adversarial training, within an epoch or two the
accuracy under multi-step PGD collapses to about 0 while the accuracy under FGSM *rises*
(often above the clean accuracy): the model has become locally highly non-linear, so the
one-step linear approximation no longer finds adversarial points. The alignment
``cos(∇ℓ(x), ∇ℓ(x + η))`` of input gradients at ``x`` and at a random point of the ε-ball
collapses with it (Andriushchenko & Flammarion, figure 3).

:func:`robustness_monitor` builds an epoch hook for :func:`geomrobust.train.fit` that measures
these quantities on a fixed held-out batch (one compiled program, reused every epoch) and
issues a :class:`CatastrophicOverfittingWarning` when :func:`detect_catastrophic_overfitting`
fires.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import renamed
from .._validation import check_batch
from ..ops._norms import as_norm
from ..search import fgsm, pgd
from ._robust import gradient_cosine, input_loss_grad

__all__ = [
    "CatastrophicOverfittingWarning",
    "detect_catastrophic_overfitting",
    "robustness_metrics",
    "robustness_monitor",
]


class CatastrophicOverfittingWarning(UserWarning):
    """PGD accuracy collapsed while FGSM accuracy rose (catastrophic overfitting)."""


def detect_catastrophic_overfitting(
    pgd_accuracy: Sequence[float],
    fgsm_accuracy: Sequence[float],
    *,
    drop: float = 0.5,
    min_drop: float = 0.05,
    gap: float = 0.3,
) -> bool:
    """True when the last epoch shows catastrophic overfitting.

    With ``t`` the last epoch and ``b = argmax_{s < t} pgd[s]`` the best earlier epoch, it
    fires when either

    * PGD accuracy collapsed while FGSM accuracy rose: ``pgd[t] <= (1 - drop) pgd[b]`` and
      ``pgd[b] - pgd[t] >= min_drop`` (relative and absolute collapse) and
      ``fgsm[t] > fgsm[b]``; or
    * FGSM accuracy exceeds PGD accuracy by at least ``gap`` (``fgsm[t] - pgd[t] >= gap``):
      the one-step attack no longer finds the adversarial points that PGD finds, the
      hallmark of a locally non-linear model (single-step training that works keeps the
      two within a few points; measured on the digits: 0.06-0.16 for FGSM-RS, N-FGSM,
      GradAlign vs 0.3-0.7 after the collapse).

    A plain loss of robustness (both accuracies falling) is not flagged.
    """
    pgd_acc = np.asarray(pgd_accuracy, np.float64).reshape(-1)
    fgsm_acc = np.asarray(fgsm_accuracy, np.float64).reshape(-1)
    if pgd_acc.shape != fgsm_acc.shape:
        raise ValueError(
            f"pgd_accuracy and fgsm_accuracy must have the same length, got "
            f"{pgd_acc.size} and {fgsm_acc.size}"
        )
    if pgd_acc.size == 0:
        return False
    if fgsm_acc[-1] - pgd_acc[-1] >= gap:
        return True
    if pgd_acc.size < 2:
        return False
    b = int(np.argmax(pgd_acc[:-1]))
    best, last = pgd_acc[b], pgd_acc[-1]
    collapsed = last <= (1 - drop) * best and best - last >= min_drop
    return bool(collapsed and fgsm_acc[-1] > fgsm_acc[b])


@renamed(epsilons="eval_eps")
def robustness_metrics(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    eps: float,
    key: Array,
    eval_eps: Sequence[float] | None = None,
    norm=jnp.inf,
    pgd_steps: int = 10,
    bounds: tuple | None = None,
) -> dict[str, Array]:
    """Clean, FGSM and PGD accuracy and gradient alignment on one batch (pure, jittable).

    For every ``e`` in ``eval_eps`` (default ``[eps]``): accuracy under
    :func:`geomrobust.search.fgsm` and under :func:`geomrobust.search.pgd` (``pgd_steps``
    steps of ``2.5 e / pgd_steps``, random start from ``key``), both clipped to ``bounds``
    (default None: no box; pass ``(0.0, 1.0)`` for images).
    ``grad_cosine`` is the mean over examples of ``cos(∇ℓ(x), ∇ℓ(x + η))``, ``η`` uniform
    in the Linf ``eps``-cube (rows with a zero gradient left out).

    Returns
    -------
    dict with ``clean_accuracy``, ``fgsm_accuracy`` / ``pgd_accuracy`` (at ``eps``),
    ``fgsm_by_eps`` / ``pgd_by_eps`` ``(E,)``, ``grad_cosine``; dtype of ``x``.
    """
    p = as_norm(norm)
    eps_list = [float(eps)] if eval_eps is None else [float(e) for e in eval_eps]
    dtype = x.dtype
    clean = jnp.argmax(logits_fn(x), axis=-1) == y

    def robust(e, k):
        f = fgsm(logits_fn, x, y, eps=e, norm=p, bounds=bounds).success
        g = pgd(logits_fn, x, y, key=k, eps=e, norm=p, steps=pgd_steps, bounds=bounds).success
        return jnp.mean(clean & ~f, dtype=dtype), jnp.mean(clean & ~g, dtype=dtype)

    keys = jax.random.split(key, len(eps_list) + 2)
    fg = [robust(e, keys[i]) for i, e in enumerate(eps_list)]
    fgsm_by = jnp.stack([a for a, _ in fg])
    pgd_by = jnp.stack([b for _, b in fg])
    if float(eps) in eps_list:
        i = eps_list.index(float(eps))
        f_at, p_at = fgsm_by[i], pgd_by[i]
    else:
        f_at, p_at = robust(float(eps), keys[-2])
    eta = jax.random.uniform(keys[-1], x.shape, dtype, -1.0, 1.0) * jnp.asarray(eps, dtype)
    _, g1 = input_loss_grad(logits_fn, x, y)
    _, g2 = input_loss_grad(logits_fn, x + eta, y)
    cos, ok = gradient_cosine(g1, g2)
    mean_cos = jnp.sum(jnp.where(ok, cos, 0)) / jnp.maximum(jnp.sum(ok), 1).astype(dtype)
    return {
        "clean_accuracy": jnp.mean(clean, dtype=dtype),
        "fgsm_accuracy": f_at,
        "pgd_accuracy": p_at,
        "fgsm_by_eps": fgsm_by,
        "pgd_by_eps": pgd_by,
        "grad_cosine": mean_cos,
    }


@renamed(epsilons="eval_eps")
def robustness_monitor(
    apply: Callable,
    x,
    y,
    *,
    eps: float,
    key: Array,
    eval_eps: Sequence[float] | None = None,
    norm=jnp.inf,
    pgd_steps: int = 10,
    bounds: tuple | None = None,
    drop: float = 0.5,
    min_drop: float = 0.05,
    gap: float = 0.3,
    warn: bool = True,
) -> Callable[[int, Any, dict], dict]:
    """An epoch hook ``hook(epoch, params, history) -> record`` for :func:`fit`.

    Evaluates :func:`robustness_metrics` of ``apply(params, ·)`` on the held-out batch
    ``(x, y)`` (jitted once; the same PGD key every epoch, so epochs are comparable) and
    returns Python floats: ``clean_accuracy``, ``fgsm_accuracy``, ``pgd_accuracy``,
    ``grad_cosine``, lists ``epsilons``, ``fgsm_by_eps``, ``pgd_by_eps``, and
    ``catastrophic_overfitting`` (bool, :func:`detect_catastrophic_overfitting` over the
    history including this epoch). With ``warn`` it also issues a
    :class:`CatastrophicOverfittingWarning` the first epochs it fires.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    check_batch(x, "x")
    if not (math.isfinite(float(eps)) and float(eps) > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    eps_list = [float(eps)] if eval_eps is None else [float(e) for e in eval_eps]

    # the held-out batch and the key are arguments, not constants baked into the program
    @jax.jit
    def metrics(params, x, y, key):
        return robustness_metrics(
            lambda z: apply(params, z),
            x,
            y,
            eps=eps,
            key=key,
            eval_eps=eps_list,
            norm=norm,
            pgd_steps=pgd_steps,
            bounds=bounds,
        )

    def hook(epoch: int, params, history: dict) -> dict:
        m = jax.device_get(metrics(params, x, y, key))
        record = {
            "clean_accuracy": float(m["clean_accuracy"]),
            "fgsm_accuracy": float(m["fgsm_accuracy"]),
            "pgd_accuracy": float(m["pgd_accuracy"]),
            "grad_cosine": float(m["grad_cosine"]),
            "epsilons": eps_list,
            "fgsm_by_eps": [float(v) for v in m["fgsm_by_eps"]],
            "pgd_by_eps": [float(v) for v in m["pgd_by_eps"]],
        }
        flag = detect_catastrophic_overfitting(
            [*history.get("pgd_accuracy", []), record["pgd_accuracy"]],
            [*history.get("fgsm_accuracy", []), record["fgsm_accuracy"]],
            drop=drop,
            min_drop=min_drop,
            gap=gap,
        )
        record["catastrophic_overfitting"] = flag
        if flag and warn:
            warnings.warn(
                f"epoch {epoch}: catastrophic overfitting: PGD accuracy fell to "
                f"{record['pgd_accuracy']:.3f} (best earlier "
                f"{max(history.get('pgd_accuracy', [record['pgd_accuracy']])):.3f}) while FGSM "
                f"accuracy is "
                f"{record['fgsm_accuracy']:.3f}; gradient cosine {record['grad_cosine']:.3f}",
                CatastrophicOverfittingWarning,
                stacklevel=2,
            )
        return record

    return hook
