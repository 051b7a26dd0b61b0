"""Curved directions shared across data points, and fooling rates inside their span.

Stacking the unit normals (or the top principal directions) of the decision boundary at many
data points and taking singular values shows whether they concentrate in a low-dimensional
subspace ``S``: fast singular-value decay means shared directions. Random perturbations drawn
in ``S`` then fool the classifier far more often than isotropic ones of the same norm, the
geometric explanation of universal adversarial perturbations.

References
----------
Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal adversarial perturbations", CVPR 2017
(section 4); Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, Soatto, "Robustness of classifiers to
universal perturbations: a geometric perspective", ICLR 2018.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from geomrobust._deprecation import renamed
from geomrobust._validation import (
    check_batch,
    check_classifier,
    check_orthonormal,
    check_positive,
)
from geomrobust.engine import CHUNK_SIZE, run_program
from geomrobust.models import as_classifier

__all__ = ["FoolingRates", "SharedDirections", "shared_directions", "subspace_fooling_rate"]


class SharedDirections(NamedTuple):
    """singular_values ``(r,)`` of the stacked unit vectors; normalized ``(r,)`` = ``σ_i/σ_1``
    (the decay curve); explained ``(r,)`` cumulative energy ``Σ_{j<=i} σ_j² / Σ σ²``;
    basis ``(D, r)`` orthonormal right singular vectors (the shared directions, as columns,
    ready for :func:`subspace_fooling_rate` or a ``subspace=`` argument)."""

    singular_values: Array
    normalized: Array
    explained: Array
    basis: Array


class FoolingRates(NamedTuple):
    """subspace, isotropic : ``()`` fraction of (example, draw) pairs whose predicted label
    changes; per_example_subspace, per_example_isotropic : ``(N,)`` the same per example."""

    subspace: Array
    isotropic: Array
    per_example_subspace: Array
    per_example_isotropic: Array


def shared_directions(
    vectors: Array, *, input_shape: tuple[int, ...] | None = None, num: int | None = None
) -> SharedDirections:
    """Singular-value decay of stacked directions (normals or principal directions).

    Parameters
    ----------
    vectors : ``(N, *s)`` (e.g. unit normals ``Curvatures.normal``), or ``(N, M, *s)`` (e.g. the
        top ``M`` principal directions ``Curvatures.directions``) together with
        ``input_shape=s``. Every vector is normalised to unit length first.
    input_shape : the input shape ``s``; needed only for ``(N, M, *s)``.
    num : singular values kept (default all, ``min(R, D)`` for ``R`` stacked vectors).

    Returns
    -------
    SharedDirections; for ``R`` unit vectors ``Σ σ_i² = R``.
    """
    v = jnp.asarray(vectors)
    if v.ndim < 2:
        raise ValueError(f"vectors must be (N, *s) or (N, M, *s), got shape {tuple(v.shape)}")
    if input_shape is None:
        rows = v.reshape(v.shape[0], -1)
    else:
        input_shape = tuple(int(t) for t in input_shape)
        if tuple(v.shape[v.ndim - len(input_shape) :]) != input_shape:
            raise ValueError(
                f"vectors must end with input_shape {input_shape}, got shape {tuple(v.shape)}"
            )
        rows = v.reshape(-1, int(np.prod(input_shape)))
    norms = jnp.linalg.norm(rows, axis=1, keepdims=True)
    rows = rows / jnp.maximum(norms, jnp.finfo(rows.dtype).tiny)
    _, s, vt = jnp.linalg.svd(rows, full_matrices=False)
    r = s.shape[0] if num is None else int(num)
    if not 1 <= r <= s.shape[0]:
        raise ValueError(f"num must lie in [1, {s.shape[0]}], got {num!r}")
    energy = jnp.cumsum(s**2) / jnp.sum(s**2)
    return SharedDirections(s[:r], s[:r] / s[0], energy[:r], vt[:r].T)


@renamed(radius="eps")
def subspace_fooling_rate(
    logits_fn: Callable[[Array], Array],
    x: Array,
    basis: Array,
    *,
    eps: float,
    num_samples: int = 16,
    key: Array,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> FoolingRates:
    """Fooling rates of random perturbations in ``span(basis)`` versus isotropic ones.

    For each example, ``num_samples`` draws of ``eps · S c / ||c||`` with ``c ~ N(0, I_s)``
    (uniform on the sphere of radius ``eps`` in the subspace) and of
    ``eps · g / ||g||`` with ``g ~ N(0, I_D)`` (uniform on the full sphere). A draw fools the
    classifier when ``argmax f(x + δ) ≠ argmax f(x)``.

    Parameters
    ----------
    logits_fn : the classifier (any form :func:`geomrobust.as_classifier` accepts);
    x : ``(N, *s)``.
    basis : ``(D, s)`` orthonormal columns (e.g. ``SharedDirections.basis``).
    eps : perturbation norm (the radius of both spheres; the same for both kinds).
    num_samples : draws per example and kind.
    key : PRNG key (example ``i`` uses ``fold_in(key, i)``).
    chunk_size, devices, progress : the executor's options (see
        :func:`geomrobust.engine.map_chunks`).
    """
    clf = as_classifier(logits_fn)
    check_batch(x, "x")
    check_classifier(clf, x)
    check_orthonormal(basis, "basis")
    check_positive(eps, "eps")
    d = int(np.prod(x.shape[1:]))
    if basis.shape[0] != d:
        raise ValueError(f"basis must have D = {d} rows (the input size), got {basis.shape}")
    basis = jnp.asarray(basis, x.dtype)
    program = partial(_fooling_program, num_samples=int(num_samples))
    sub, iso = run_program(
        program, (clf, key, basis, jnp.asarray(eps, x.dtype)), (x, jnp.arange(x.shape[0])),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="fooling rates",
    )  # fmt: skip
    return FoolingRates(sub.mean(), iso.mean(), sub, iso)


@partial(jax.jit, static_argnames="num_samples")
def _fooling_program(clf, key, basis, eps, xc, idx, *, num_samples):
    """Per-example fooling rates of a chunk, subspace and isotropic."""
    n, shape = xc.shape[0], xc.shape[1:]
    d, s = basis.shape
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    ks = jax.vmap(lambda k: jax.random.split(k))(keys)
    c = jax.vmap(lambda k: jax.random.normal(k, (num_samples, s), xc.dtype))(ks[:, 0])
    g = jax.vmap(lambda k: jax.random.normal(k, (num_samples, d), xc.dtype))(ks[:, 1])
    dsub = (c @ basis.T) / jnp.linalg.norm(c, axis=-1, keepdims=True)
    diso = g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    clean = jnp.argmax(clf(xc), -1)

    def rate(delta):
        pts = xc[:, None] + eps * delta.reshape(n, num_samples, *shape)
        pred = jnp.argmax(clf(pts.reshape(n * num_samples, *shape)), -1)
        return jnp.mean(pred.reshape(n, num_samples) != clean[:, None], axis=1)

    return rate(dsub).astype(xc.dtype), rate(diso).astype(xc.dtype)
