"""Curvature of the decision boundary: principal curvatures and normal curvatures.

At a boundary point ``z`` between classes ``y`` and ``k`` (``F_k = f_k - f_y``, ``F_k(z) ≈ 0``,
``F_k > 0`` the adversarial side), with ``g = ∇F_k(z)``, ``n = g/||g||``, ``P = I - n nᵀ`` and
``H = ∇²F_k(z)`` (DESIGN.md 3.4):

* normal curvature along a unit tangent ``u``: ``κ(u) = uᵀ H u / ||g||``;
* principal curvatures: eigenvalues of the shape operator ``S = P H P / ||g||`` on ``n⊥``.

Sign: positive curvature bends the boundary towards the ``y`` side; a ball-shaped class-``y``
region of radius ``r`` has every principal curvature ``+1/r``, a hyperplane ``0``.

Reference: Fawzi, Moosavi-Dezfooli, Frossard, Soatto, "Empirical study of the topology and
geometry of deep networks", CVPR 2018; Moosavi-Dezfooli et al., "Robustness of classifiers to
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

from geomrobust._validation import check_batch, check_classifier, check_labels, is_concrete
from geomrobust.engine import run_program
from geomrobust.models import as_classifier
from geomrobust.ops import logit_difference

from ._driver import default_tol
from ._eigsolve import thick_restart_lanczos
from ._shape_operator import shape_operator, tangent_shape_matrix, tangent_to_ambient

__all__ = [
    "AUTO_DENSE_MAX_DIM",
    "Curvatures",
    "normal_curvature",
    "normal_curvatures",
    "principal_curvatures",
    "random_tangents",
]

# ``method="auto"`` uses the dense path up to this input dimension. Measured with
# benchmarks/curvature.py (LeNet, top-20, float32, 2 shared CPU cores): Lanczos was 1.7x faster
# than dense at D = 256 and 11x at D = 1024, so the crossover lies below 256.
AUTO_DENSE_MAX_DIM = 128


class Curvatures(NamedTuple):
    """Principal curvatures at ``N`` boundary points.

    values : ``(N, num)`` principal curvatures, largest magnitude first.
    directions : ``(N, num_directions, *s)`` unit principal directions (tangent to the
        boundary), in the order of ``values`` (all ``num`` unless asked otherwise).
    converged : ``(N,)`` every value of the point converged (and the normal is defined).
    value_converged : ``(N, num)`` per value: residual ``||S u - κ u|| <= tol · max|κ|``.
    residuals : ``(N, num)`` residual norms ``||S u - κ u||`` (0 for the dense method).
    normal : ``(N, *s)`` unit normal ``n = ∇F_k/||∇F_k||``.
    grad_norm : ``(N,)`` ``||∇F_k(z)||``.
    restarts : ``(N,)`` Lanczos restarts used (0 for the dense method).

    Values flagged unconverged are the solver's last Ritz values, not valid curvatures.
    """

    values: Array
    directions: Array
    converged: Array
    value_converged: Array
    residuals: Array
    normal: Array
    grad_norm: Array
    restarts: Array


def _validate(logits_fn, z, y, k, name="z"):
    check_batch(z, name)
    n = z.shape[0]
    if is_concrete(z):
        K = check_classifier(logits_fn, z)
        check_labels(y, K, n, "y")
        check_labels(k, K, n, "k")
        if np.any(np.asarray(y) == np.asarray(k)):
            raise ValueError("y and k must differ for every point (the boundary between y and k)")


def _dense_one(logits_fn, num):
    def one(z, y, k, _key):
        s_t, w, c, g = tangent_shape_matrix(logits_fn, z, y, k)
        vals, U = jnp.linalg.eigh(s_t)
        idx = jnp.argsort(-jnp.abs(vals), stable=True)[:num]
        dirs = tangent_to_ambient(U[:, idx], w, c).T.reshape(num, *z.shape)
        gnorm = jnp.linalg.norm(g)
        ok = jnp.isfinite(gnorm) & (gnorm > 0) & jnp.all(jnp.isfinite(vals))
        zeros = jnp.zeros((num,), z.dtype)
        return Curvatures(
            vals[idx], dirs, ok, jnp.broadcast_to(ok, (num,)), zeros, g / gnorm, gnorm,
            jnp.zeros((), jnp.int32),
        )  # fmt: skip

    return one


def _lanczos_one(logits_fn, num, krylov_dim, keep, tol, max_restarts):
    def one(z, y, k, key):
        op, g = shape_operator(logits_fn, z, y, k)
        gnorm = jnp.linalg.norm(g)
        n = g.ravel() / gnorm

        def matvec(v):
            return op(v.reshape(z.shape)).ravel()

        def project(v):
            return v - n * jnp.vdot(n, v)

        k0, k1 = jax.random.split(key)
        v0 = jax.random.normal(k0, (z.size,), z.dtype)
        res = thick_restart_lanczos(
            matvec, v0, num=num, krylov_dim=krylov_dim, keep=keep, which="LM", tol=tol,
            max_restarts=max_restarts, key=k1, project=project, guard=max(2, num // 4),
        )  # fmt: skip
        ok_n = jnp.isfinite(gnorm) & (gnorm > 0)
        vc = res.converged & ok_n & jnp.isfinite(res.values)
        return Curvatures(
            res.values, res.vectors.reshape(num, *z.shape), vc.all(), vc, res.residuals,
            g / gnorm, gnorm, res.restarts,
        )  # fmt: skip

    return one


def principal_curvatures(
    logits_fn: Callable[[Array], Array],
    z: Array,
    y: Array,
    k: Array,
    *,
    num: int = 20,
    key: Array,
    method: str = "auto",
    tol: float | None = None,
    krylov_dim: int | None = None,
    keep: int | None = None,
    max_restarts: int = 30,
    chunk_size: int | None = 64,
    progress: Callable[[int], None] | None = None,
    devices=None,
    ids=None,
    num_directions: int | None = None,
) -> Curvatures:
    """Principal curvatures of the boundary between ``y`` and ``k`` at boundary points ``z``.

    Eigenvalues of the shape operator ``S = P H P / ||g||`` restricted to the tangent space
    ``n⊥`` (DESIGN.md 3.4), the ``num`` of largest magnitude, both signs, sorted by ``|κ|``.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, :class:`geomrobust.Classifier`,
        NNX or Equinox module (see :func:`geomrobust.as_classifier`).
    z : ``(N, *s)`` boundary points (e.g. from :func:`geomrobust.search.refine_boundary`).
    y, k : ``(N,)`` integer classes on either side (``F_k = f_k - f_y``).
    num : number of principal curvatures per point, ``num <= D - 1``.
    key : PRNG key (Lanczos starting vectors; the point with id ``i`` uses
        ``fold_in(key, i)``, so results do not depend on ``chunk_size``).
    method : ``"dense"`` (``D`` HVPs forming ``H``, then ``eigh`` of the ``(D-1, D-1)`` tangent
        matrix), ``"lanczos"`` (matrix-free thick-restart Lanczos on ``S``, both ends of the
        spectrum at once) or ``"auto"`` (dense when ``D <= AUTO_DENSE_MAX_DIM`` or the Krylov
        space would not be smaller than ``D``).
    tol : relative residual tolerance, ``||S u - κ u|| <= tol · max|κ|``; default 1e-3 in
        float32 and 1e-6 in float64 (Lanczos only).
    krylov_dim : Lanczos basis size per cycle (default ``min(D - 1, max(2 num + 20, 3 num))``).
    keep : Ritz vectors kept at a restart (default about ``(num + krylov_dim) // 2``).
    max_restarts : Lanczos restarts after the first cycle.
    chunk_size : points per jitted call (default 64, None: all at once), so peak memory does
        not grow with ``N``; memory of the dense path grows as ``chunk_size · D²``.
    progress : None, True (a progress bar counting points) or a callable ``progress(n)``
        with the number of points done after each chunk.
    devices : None (one device), ``"all"``, an int or a list of devices: chunks are
        spread over the devices (:func:`geomrobust.engine.map_chunks`), results
        bit-for-bit identical to one device; set ``chunk_size <= N / n_devices``.
    ids : ``(N,)`` integer ids of the points for the PRNG (default ``0 .. N-1``). Pass the
        points' global indices when measuring part of a dataset (a chunk, a host's shard),
        so that every point gets the same starting vector however the dataset is split.
    num_directions : how many principal directions to return per point, the first
        ``num_directions`` by ``|κ|`` (default None: all ``num``; 0: none). The directions are
        the largest output, ``N · num · D`` numbers: over a whole dataset, ask for the few
        you use (``geomrobust curvature`` keeps 1) so that host memory stays ``O(N · D)``.

    Returns
    -------
    Curvatures (see its docstring), dtype of ``z``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([4.0 - jnp.sum(x**2, -1), jnp.zeros(x.shape[0])], -1)
    >>> z = jnp.array([[2.0, 0.0, 0.0, 0.0]])  # on the sphere of radius 2
    >>> c = principal_curvatures(f, z, jnp.array([0]), jnp.array([1]), num=3,
    ...                          key=jax.random.key(0))
    >>> [round(float(v), 6) for v in c.values[0]]
    [0.5, 0.5, 0.5]
    """
    clf = as_classifier(logits_fn)
    _validate(clf, z, y, k)
    d = int(np.prod(z.shape[1:]))
    if not isinstance(num, int | np.integer) or not 1 <= num <= d - 1:
        raise ValueError(f"num must be an integer in [1, D-1] = [1, {d - 1}], got {num!r}")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}")
    m = min(d - 1, max(2 * num + 20, 3 * num)) if krylov_dim is None else int(krylov_dim)
    if method == "auto":
        method = "dense" if (d <= AUTO_DENSE_MAX_DIM or m <= num + 1) else "lanczos"
    if method == "lanczos":
        if not num < m <= d - 1:
            raise ValueError(f"krylov_dim must lie in ({num}, {d - 1}] (num < m <= D-1), got {m}")
        keep_ = None if keep is None else int(keep)
        settings = (num, m, keep_, default_tol(z.dtype, tol), int(max_restarts))
    else:
        settings = (num,)
    nd = num if num_directions is None else num_directions
    if not isinstance(nd, int | np.integer) or not 0 <= nd <= num:
        raise ValueError(f"num_directions must be an integer in [0, num={num}], got {nd!r}")
    if ids is None:
        ids = jnp.arange(z.shape[0])
    else:
        ids = np.asarray(ids) if is_concrete(ids) else ids
        if ids.shape != (z.shape[0],) or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(
                f"ids must be integers of shape ({z.shape[0]},) (one per point), got "
                f"{ids.dtype} {tuple(ids.shape)}"
            )
        ids = jnp.asarray(ids)
    program = partial(_curvatures_program, method=method, settings=settings,
                      num_directions=int(nd))  # fmt: skip
    return run_program(
        program, (clf, key), (z, y, k, ids), chunk_size=chunk_size, devices=devices,
        progress=progress, desc="curvatures",
    )  # fmt: skip


@partial(jax.jit, static_argnames=("method", "settings", "num_directions"))
def _curvatures_program(clf, key, zc, yc, kc, idx, *, method, settings, num_directions):
    """Principal curvatures of a chunk of points (compiled once per architecture, shapes and
    solver settings; the weights, points and key are arguments)."""
    one = _lanczos_one(clf, *settings) if method == "lanczos" else _dense_one(clf, *settings)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    out = jax.vmap(one)(zc, yc, kc, keys)
    return out._replace(directions=out.directions[:, :num_directions])  # only these leave


def normal_curvature(
    logits_fn: Callable[[Array], Array],
    z: Array,
    y: Array,
    k: Array,
    u: Array,
    *,
    chunk_size: int | None = 256,
    devices=None,
    progress=None,
) -> Array:
    """Normal curvature ``κ(u) = uᵀ H u / ||g||`` of the ``(y, k)`` boundary at each ``z``.

    ``u`` (``(N, *s)``) is made an explicit unit tangent first: ``u <- P u / ||P u||`` (a no-op
    for a unit tangent), so the result is the curvature of the normal section along ``u``.
    ``u`` (nearly) parallel to the normal has no tangent part and raises ``ValueError``.

    Returns
    -------
    ``(N,)`` in the dtype of ``z``; sign as in :func:`principal_curvatures`.
    """
    clf = as_classifier(logits_fn)
    _validate(clf, z, y, k)
    check_batch(u, "u")
    if u.shape != z.shape:
        raise ValueError(f"u must have the shape of z {tuple(z.shape)}, got {tuple(u.shape)}")
    return normal_curvatures(clf, z, y, k, u[:, None], chunk_size=chunk_size, devices=devices,
                             progress=progress)[:, 0]  # fmt: skip


def normal_curvatures(
    logits_fn: Callable[[Array], Array],
    z: Array,
    y: Array,
    k: Array,
    directions: Array,
    *,
    chunk_size: int | None = 256,
    devices=None,
    progress=None,
) -> Array:
    """Curvature profile: normal curvatures along ``M`` directions per point, ``(N, M)``.

    ``directions`` is ``(M, *s)`` (shared) or ``(N, M, *s)`` (per point); each is projected
    onto the tangent space and normalised, as in :func:`normal_curvature`. Along the principal
    directions the profile equals the principal curvatures; along random tangent directions
    (:func:`random_tangents`) it concentrates around ``tr(S)/(D-1)``. ``chunk_size``,
    ``devices``, ``progress``: as in :func:`principal_curvatures`.
    """
    clf = as_classifier(logits_fn)
    _validate(clf, z, y, k)
    directions = jnp.asarray(directions, z.dtype)  # the tangents live in z's precision
    if directions.ndim == z.ndim:
        directions = jnp.broadcast_to(directions, (z.shape[0], *directions.shape))
    if directions.shape[0] != z.shape[0] or directions.shape[2:] != z.shape[1:]:
        raise ValueError(
            f"directions must be (M, *s) or (N, M, *s) with s={tuple(z.shape[1:])}, "
            f"N={z.shape[0]}, got {tuple(directions.shape)}"
        )

    kappa, ratio = run_program(
        _normal_curvatures_program, (clf,), (z, y, k, directions), chunk_size=chunk_size,
        devices=devices, progress=progress, desc="normal curvatures",
    )  # fmt: skip
    if is_concrete(ratio) and np.any(~(np.asarray(ratio) > 1e-3)):
        raise ValueError(
            "directions must have a tangent part: some are (nearly) parallel to the boundary "
            f"normal (||P u||/||u|| = {float(np.nanmin(np.asarray(ratio))):.1e})"
        )
    return kappa


@jax.jit
def _normal_curvatures_program(clf, z, y, k, directions):
    """``(κ, ||P u||/||u||)`` of a chunk, ``(C, M)`` each."""

    def one(zi, yi, ki, dirs):
        F = logit_difference(clf, yi, ki)
        g, op = jax.linearize(jax.grad(F), zi)
        gnorm = jnp.linalg.norm(g)
        n = g / gnorm

        def kappa(u):
            pu = u - n * jnp.vdot(n, u)
            t = pu / jnp.linalg.norm(pu)
            return jnp.vdot(t, op(t)) / gnorm, jnp.linalg.norm(pu) / jnp.linalg.norm(u)

        return jax.vmap(kappa)(dirs)

    return jax.vmap(one)(z, y, k, directions)


def random_tangents(key: Array, normals: Array, num: int) -> Array:
    """``num`` random unit tangent directions per point: ``(N, num, *s)``.

    Isotropic Gaussian vectors projected onto ``n⊥`` and normalised (uniform on the unit sphere
    of the tangent space). ``normals`` is ``(N, *s)`` of unit normals (``Curvatures.normal``).
    """
    n = normals.reshape(normals.shape[0], 1, -1)
    v = jax.random.normal(key, (normals.shape[0], num, n.shape[-1]), normals.dtype)
    v = v - n * jnp.sum(n * v, -1, keepdims=True)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return v.reshape(normals.shape[0], num, *normals.shape[1:])
