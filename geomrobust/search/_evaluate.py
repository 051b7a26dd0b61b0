"""Dataset-level evaluation of the attacks: robust accuracy over a list of radii.

Above the single attacks (:mod:`geomrobust.search._attacks`, :mod:`geomrobust.search._apgd`)
and the gradient-masking checks (:mod:`geomrobust.search._masking`), which it can run on the
same data. A clean input whose logit row is not finite is never correct (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._deprecation import deprecated_alias, renamed
from .._validation import check_key, check_positive, is_concrete
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ._apgd import apgd, square_attack
from ._attacks import _check, fgsm, pgd
from ._fmn import finite_rows
from ._masking import masking_checks, monotone_flags

__all__ = ["RobustAccuracy", "robust_accuracy"]


class RobustAccuracy(NamedTuple):
    """eps ``(E,)`` (``epsilons``, its old name, still reads it); accuracy ``(E,)``
    fraction correct under the attack at each ``eps``; clean_accuracy; success ``(E, N)`` bool per
    example; flags: the gradient-masking
    checks failed, as sentences (see :func:`geomrobust.search.masking_checks`)."""

    eps: np.ndarray
    accuracy: np.ndarray
    clean_accuracy: float
    success: np.ndarray
    flags: tuple = ()

    @property
    def epsilons(self) -> np.ndarray:
        """Deprecated: the field ``eps``."""
        deprecated_alias("RobustAccuracy.epsilons", "RobustAccuracy.eps")
        return self.eps


@renamed(epsilons="eps")
def robust_accuracy(
    logits_fn: Callable[[Array], Array],
    x,
    y,
    eps: Sequence[float],
    *,
    key: Array,
    attack: str = "pgd",
    checks: bool = False,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
    **attack_kw,
) -> RobustAccuracy:
    """Accuracy under ``fgsm`` or ``pgd`` for every radius in ``eps`` (formerly
    ``epsilons``), in one call.

    One jitted function runs the attack for all ``E`` epsilons (``lax.map`` over ``eps``) on
    a chunk of ``chunk_size`` examples; chunks are fed by the executor
    (:func:`geomrobust.engine.map_chunks`; ``devices`` and ``progress`` as there), so it
    compiles once per architecture and attack settings, with the weights, data, ``key``,
    ``epsilons`` and array settings (``step_size``, per-pixel ``bounds``) as arguments:
    calling again with another model of the same architecture, other data, another key or
    other epsilons of the same length does not recompile. An example
    counts as robust at ``eps`` when it is correctly classified and the attack fails. Each
    chunk uses ``fold_in(key, chunk_start)``, so results do not depend on the device or chunk
    order. ``attack_kw`` are passed on to :func:`pgd` / :func:`fgsm` (a ``target`` ``(N,)``
    is split into chunks with ``x``), or to :func:`geomrobust.search.apgd` (``attack=
    "apgd-ce"`` or ``"apgd-dlr"``) / :func:`geomrobust.search.square_attack` (``"square"``).

    ``flags`` reports every gradient-masking check that fails: always whether the accuracy
    rises with ``eps`` (by more than 2 %); with ``checks=True`` also the checks of
    :func:`geomrobust.search.masking_checks` (FGSM stronger than PGD, the square search
    stronger than the gradient attacks, accuracy above 0 in a ball covering the box), run on
    the same data, ``epsilons``, ``norm``, ``bounds`` and ``key`` (its own attacks, at their
    default strengths; its cost is several attacks').
    """
    if attack not in _ATTACK_NAMES:
        raise ValueError(f"attack must be one of {_ATTACK_NAMES}, got {attack!r}")
    clf = as_classifier(logits_fn)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    eps_in = eps
    eps = np.asarray(eps_in, np.float64).reshape(-1)
    if eps.size == 0 or not np.all(eps >= 0):
        raise ValueError(f"eps must be a non-empty list of values >= 0, got {eps_in!r}")
    attack_kw = dict(attack_kw)
    target = attack_kw.pop("target", None)
    if target is not None:
        target = jnp.asarray(target)
        if attack not in ("pgd", "fgsm"):
            raise ValueError(f"target is supported by attack='pgd' or 'fgsm', not {attack!r}")
    # checked here: inside the program, traced settings (array bounds, a traced key) are not
    norm = attack_kw.get("norm", jnp.inf)  # x in the search dtype (then eps is cast to it)
    _, x, _ = _check(clf, x, y, 0.0, norm, target, attack_kw.get("bounds"))
    check_key(key, "key")
    step_size = attack_kw.get("step_size")
    if attack == "pgd" and step_size is not None and is_concrete(step_size):
        check_positive(step_size, "step_size")
    static, traced = _split_settings(attack_kw)
    program = partial(_robust_program, attack=attack, static=static)
    n = x.shape[0]
    starts = jnp.arange(n, dtype=jnp.uint32)
    arrays = (x, y, starts) if target is None else (x, y, starts, target)
    clean, success = run_program(
        program, (clf, key, jnp.asarray(eps, x.dtype), traced), arrays,
        chunk_size=min(int(chunk_size), n), devices=devices, progress=progress,
        desc=f"{attack} accuracy",
    )  # fmt: skip
    clean, success = np.asarray(clean), np.asarray(success).T
    robust = clean[None, :] & ~success
    accuracy = robust.mean(axis=1)
    flags = monotone_flags(eps, accuracy, attack)
    if checks:
        mc = masking_checks(
            clf, x, y, eps, key=key, norm=attack_kw.get("norm", jnp.inf),
            bounds=attack_kw.get("bounds"), chunk_size=chunk_size, devices=devices,
        )  # fmt: skip
        flags += [f for f in mc.flags if f not in flags]
    return RobustAccuracy(eps, accuracy, float(clean.mean()), success, tuple(flags))


_ATTACK_NAMES = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "square")

# settings of the attacks that shape the program (Python values): never traced
_STRUCTURAL = ("norm", "steps", "random_start", "unroll", "restarts", "queries", "loss")


def _split_settings(attack_kw: dict) -> tuple[tuple, dict]:
    """Split the attack settings into a hashable key ``((name, type, value), ...)`` (sorted
    by name; the type keeps ``unroll=True`` and ``unroll=1`` apart) and the settings holding
    arrays (``step_size``, per-pixel ``bounds``), which the program takes as traced arguments
    so that neither they nor their values are baked into it."""
    static, traced = [], {}
    for name in sorted(attack_kw):
        v = attack_kw[name]
        has_array = any(isinstance(a, jax.Array | np.ndarray) for a in jax.tree.leaves(v))
        if name in _STRUCTURAL and has_array:
            if np.ndim(v) != 0 or not is_concrete(v):
                raise TypeError(
                    f"{name} must be a Python value (it selects the compiled program), "
                    f"got {type(v).__name__} of shape {np.shape(v)}"
                )
            v, has_array = np.asarray(v).item(), False
        if not has_array:
            try:
                hash(v)
            except TypeError:
                has_array = True  # e.g. bounds as a list [lo, hi]: traced like an array
        if has_array:
            traced[name] = v
        else:
            static.append((name, type(v), v))
    return tuple(static), traced


@partial(jax.jit, static_argnames=("attack", "static"))
def _robust_program(clf, key, eps, traced, xc, yc, start, target=None, *, attack, static):
    """The chunk of :func:`robust_accuracy`: ``-> (clean (C,), success (C, E))``; one
    compilation per architecture, shapes and attack settings."""
    kw = {name: v for name, _, v in static}
    k = jax.random.fold_in(key, start[0])
    settings = dict(kw, **traced)
    if target is not None:
        settings["target"] = target

    def one(e):
        if attack == "pgd":
            return pgd(clf, xc, yc, key=k, eps=e, **settings).success
        if attack == "fgsm":
            return fgsm(clf, xc, yc, eps=e, **settings).success
        if attack == "square":
            return square_attack(clf, xc, yc, key=k, eps=e, **settings).success
        return apgd(clf, xc, yc, key=k, eps=e, loss=attack[5:], **settings).success

    logits = clf(xc)
    clean = (jnp.argmax(logits, axis=-1) == yc) & finite_rows(logits)  # NaN: never correct
    return clean, jax.lax.map(one, eps).T  # (C,), (C, E)
