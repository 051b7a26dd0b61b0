"""Robust accuracy you can trust: several attacks side by side, and the sanity checks that
flag gradient masking.

Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry, Kurakin, "On
evaluating adversarial robustness", arXiv:1902.06705 (2019), Sec. 5; Athalye, Carlini,
Wagner, "Obfuscated gradients give a false sense of security", ICML 2018; Croce & Hein,
ICML 2020 (APGD). A defence whose robustness comes from gradients that are zero, noisy or
misleading shows it in the accuracy curves of the attacks: more robust at a larger radius, a
single step stronger than many, a gradient-free search stronger than the gradient attacks,
examples that survive a radius covering the whole input box.
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

from .._deprecation import deprecated_alias, renamed
from .._validation import check_key, check_positive
from ..engine import CHUNK_SIZE, run_program
from ..models import as_classifier
from ._apgd import apgd_run, square_run
from ._attacks import _fgsm_program, pgd_run
from ._fmn import bounds_pair, check_common, check_steps, finite_rows

__all__ = ["ATTACKS", "MaskingChecks", "masking_checks", "monotone_flags"]

ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square")
WHITE_BOX = ("pgd", "apgd-ce", "apgd-dlr")


class MaskingChecks(NamedTuple):
    """Accuracy under each attack, and the gradient-masking flags raised.

    eps : ``(E,)`` (``epsilons``, its old name, still reads it); clean_accuracy : float.
    accuracy : ``{attack: (E,)}`` fraction of examples correct and not broken, per attack in
    :data:`ATTACKS` (``apgd-dlr`` absent for ``K < 3``, ``square`` for L2).
    worst_case : ``(E,)``, the fraction correct and broken by NO attack (the reliable figure).
    large_eps : the radius of the large-radius check; large_eps_accuracy : the accuracy
    there under the gradient attacks (all but ``square``) together.
    flags : a tuple of sentences, one per check failed (empty: no sign of masking found).
    success : ``{attack: (E + 1, N)}`` bool per example (the last row at ``large_eps``).
    """

    eps: np.ndarray
    clean_accuracy: float
    accuracy: dict
    worst_case: np.ndarray
    large_eps: float
    large_eps_accuracy: float
    flags: tuple
    success: dict

    @property
    def epsilons(self) -> np.ndarray:
        """Deprecated: the field ``eps``."""
        deprecated_alias("MaskingChecks.epsilons", "MaskingChecks.eps")
        return self.eps


def monotone_flags(epsilons, accuracy, name: str, tol: float = 0.02) -> list[str]:
    """A flag where ``accuracy`` (at ``epsilons``) rises by more than ``tol`` between two
    increasing radii: a stronger perturbation set can only contain more adversarials, so a
    correct attack's accuracy is non-increasing in ``ε``."""
    eps = np.asarray(epsilons, np.float64)
    acc = np.asarray(accuracy, np.float64)
    order = np.argsort(eps, kind="stable")
    eps, acc = eps[order], acc[order]
    out = []
    for i in range(1, len(eps)):
        if eps[i] > eps[i - 1] and acc[i] > acc[i - 1] + tol:
            out.append(
                f"non-monotone: {name} accuracy rises from {acc[i - 1]:.3f} at eps={eps[i - 1]:g} "
                f"to {acc[i]:.3f} at eps={eps[i]:g} (a larger ball cannot hold fewer "
                "adversarial points: the attack fails where it should not)"
            )
    return out


@partial(jax.jit, static_argnames=("p", "names", "steps", "queries", "has_bounds"))
def _checks_program(clf, key, eps, lo, hi, xc, yc, start, *, p, names, steps, queries,
                    has_bounds):  # fmt: skip
    """A chunk: ``clean (C,)`` and ``success (C, A, E)`` of every attack at every radius."""
    k = jax.random.fold_in(key, start[0])
    alpha_scale = 2.5 / steps

    def one(e):
        out = []
        for i, name in enumerate(names):
            ki = jax.random.fold_in(k, i)
            if name == "fgsm":
                r = _fgsm_program(clf, xc, yc, e, None, lo, hi, p=p, has_bounds=has_bounds)
            elif name == "pgd":
                r = pgd_run(clf, xc, yc, ki, e, alpha_scale * e, lo, hi, p=p, steps=steps,
                            has_bounds=has_bounds)  # fmt: skip
            elif name == "square":
                r = square_run(clf, xc, yc, ki, e, jnp.asarray(0.05, jnp.float32), lo, hi,
                               steps=queries, has_bounds=has_bounds)  # fmt: skip
            else:
                r = apgd_run(clf, xc, yc, ki, e, lo, hi, p=p, loss=name[5:], steps=steps,
                             restarts=1, has_bounds=has_bounds)  # fmt: skip
            out.append(r.success)
        return jnp.stack(out, axis=-1)  # (C, A)

    logits = clf(xc)
    clean = (jnp.argmax(logits, -1) == yc) & finite_rows(logits)  # a NaN row is never correct
    return clean, jnp.moveaxis(jax.lax.map(one, eps), 0, -1)  # (C,), (C, A, E)


@renamed(epsilons="eps", queries="square_steps")
def masking_checks(
    logits_fn: Callable[[Array], Array],
    x,
    y,
    eps: Sequence[float],
    *,
    key: Array,
    norm=jnp.inf,
    bounds: tuple | None = None,
    attacks: Sequence[str] = ATTACKS,
    steps: int = 50,
    square_steps: int = 500,
    large_eps: float | None = None,
    tol: float = 0.02,
    chunk_size: int = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> MaskingChecks:
    """Accuracy under FGSM, PGD, APGD-CE, APGD-DLR and a Square random search at every
    ``eps``, and the checks of gradient masking (Carlini et al. 2019, Sec. 5):

    1. **non-monotone**: an attack's accuracy rises with ``ε`` (:func:`monotone_flags`);
    2. **fgsm-stronger**: FGSM's accuracy is below PGD's by more than ``tol`` at some ``ε``
       (an iterative attack that starts with the same step can only do better);
    3. **black-box-stronger**: more than a fraction ``tol`` of the examples are broken by the
       gradient-free square search and by none of the gradient attacks at some ``ε``;
    4. **large-eps**: the accuracy at ``large_eps`` under the gradient attacks together is
       above ``tol``. By default
       ``large_eps`` is the box's width (Linf) or ``sqrt(D)`` times it (L2), a ball holding
       the whole box, where every example of a classifier that is not constant on the box can
       be misclassified; without a box, ``100 max(epsilons)``.

    Each attack runs ``steps`` iterations (PGD: step ``2.5 ε / steps``, random start; APGD:
    its own schedule), the square search ``square_steps`` forward passes (Linf only; skipped
    for L2; formerly ``queries``). ``eps`` (formerly ``epsilons``): the radii. A clean input
    whose logit row is not finite is never correct. An example counts as robust at ``ε`` when it is
    correctly classified and not broken.
    Chunks of ``chunk_size`` examples run through :func:`geomrobust.engine.run_program`,
    each with ``fold_in(key, chunk_start)``.

    Returns
    -------
    MaskingChecks
        ``flags`` lists every check failed, as sentences naming the attack and the radius.
    """
    clf = as_classifier(logits_fn)
    p, x = check_common(clf, x, y, norm, bounds)
    if y is None:
        raise ValueError("y (the labels) is required")
    check_key(key, "key")
    steps = check_steps(steps, "steps")
    queries = check_steps(square_steps, "square_steps")
    check_positive(tol, "tol", allow_zero=True)
    eps_in = eps
    eps = np.asarray(eps_in, np.float64).reshape(-1)
    if eps.size == 0 or not np.all(eps >= 0):
        raise ValueError(f"eps must be a non-empty list of values >= 0, got {eps_in!r}")
    names = tuple(attacks)
    bad = [a for a in names if a not in ATTACKS]
    if bad or not names:
        raise ValueError(f"attacks must be names among {ATTACKS}, got {tuple(attacks)!r}")
    x = jnp.asarray(x)
    y = jnp.asarray(y).astype(jnp.int32)
    k = clf(x[:1]).shape[-1]
    if k < 3:
        names = tuple(a for a in names if a != "apgd-dlr")
    if not math.isinf(p):
        names = tuple(a for a in names if a != "square")
    if large_eps is None:
        if bounds is not None:
            span = float(np.max(np.asarray(bounds[1]) - np.asarray(bounds[0])))
            large_eps = span if math.isinf(p) else span * math.sqrt(math.prod(x.shape[1:]))
        else:
            large_eps = 100.0 * float(eps.max())
    else:
        check_positive(large_eps, "large_eps")
    all_eps = np.concatenate([eps, [float(large_eps)]])
    lo, hi = bounds_pair(bounds, x.dtype)
    n = x.shape[0]
    program = partial(_checks_program, p=p, names=names, steps=steps, queries=queries,
                      has_bounds=bounds is not None)  # fmt: skip
    clean, success = run_program(
        program, (clf, key, jnp.asarray(all_eps, x.dtype), lo, hi),
        (x, y, jnp.arange(n, dtype=jnp.uint32)), chunk_size=min(int(chunk_size), n),
        devices=devices, progress=progress, desc="masking checks",
    )  # fmt: skip
    clean = np.asarray(clean)
    success = np.asarray(success)  # (N, A, E + 1)
    per = {a: success[:, i, :].T for i, a in enumerate(names)}  # (E + 1, N)
    acc = {a: (clean[None, :] & ~s).mean(axis=1) for a, s in per.items()}
    broken_any = np.any(success, axis=1).T  # (E + 1, N)
    worst = (clean[None, :] & ~broken_any).mean(axis=1)
    flags: list[str] = []
    for a in names:
        flags += monotone_flags(eps, acc[a][:-1], a, tol)
    flags += monotone_flags(eps, worst[:-1], "worst-case", tol)
    if "fgsm" in acc and "pgd" in acc:
        for i, e in enumerate(eps):
            if acc["fgsm"][i] < acc["pgd"][i] - tol:
                flags.append(
                    f"fgsm-stronger: FGSM accuracy {acc['fgsm'][i]:.3f} < PGD accuracy "
                    f"{acc['pgd'][i]:.3f} at eps={e:g} (the iterative attack fails where one "
                    "step succeeds: its gradients mislead it)"
                )
    white = [a for a in WHITE_BOX if a in per]
    if "square" in per and white:
        wb = np.any(np.stack([per[a] for a in white]), axis=0)
        only = (clean[None, :] & per["square"] & ~wb).mean(axis=1)
        for i, e in enumerate(eps):
            if only[i] > tol:
                flags.append(
                    f"black-box-stronger: the gradient-free square search breaks "
                    f"{only[i]:.3f} of the examples that no gradient attack "
                    f"({', '.join(white)}) breaks at eps={e:g}"
                )
    grad_attacks = [a for a in names if a != "square"]
    broken_wb = np.any(np.stack([per[a] for a in grad_attacks]), axis=0)
    wb_large = float((clean & ~broken_wb[-1]).mean())
    if wb_large > tol:
        where = "a ball covering the whole input box" if bounds is not None else "a large ball"
        flags.append(
            f"large-eps: accuracy {wb_large:.3f} under the gradient attacks at "
            f"eps={large_eps:g} ({where}; it should be 0: the attacks cannot follow the "
            "gradients)"
        )
    return MaskingChecks(
        eps=eps,
        clean_accuracy=float(clean.mean()),
        accuracy={a: v[:-1] for a, v in acc.items()},
        worst_case=worst[:-1],
        large_eps=float(large_eps),
        large_eps_accuracy=wb_large,
        flags=tuple(flags),
        success=per,
    )
