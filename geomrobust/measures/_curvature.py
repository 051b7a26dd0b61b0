"""Curvature of the decision boundary: principal curvatures and normal curvatures.

At a boundary point ``z`` between classes ``y`` and ``k`` (``F_k = f_k - f_y``, ``F_k(z) ≈ 0``,
``F_k > 0`` the adversarial side), with ``g = ∇F_k(z)``, ``n = g/||g||``, ``P = I - n nᵀ`` and
``H = ∇²F_k(z)`` (docs/methods.md):

* normal curvature along a unit tangent ``u``: ``κ(u) = uᵀ H u / ||g||``;
* principal curvatures: eigenvalues of the shape operator ``S = P H P / ||g||`` on ``n⊥``.

Sign: positive curvature bends the boundary towards the ``y`` side; a ball-shaped class-``y``
region of radius ``r`` has every principal curvature ``+1/r``, a hyperplane ``0``.

Reference: Fawzi, Moosavi-Dezfooli, Frossard, Soatto, "Empirical study of the topology and
geometry of deep networks", CVPR 2018; Moosavi-Dezfooli et al., "Robustness of classifiers to
universal perturbations: a geometric perspective", ICLR 2018.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from geomrobust._deprecation import deprecated_alias, positional_key, renamed
from geomrobust._status import STATUS_DTYPE, Status
from geomrobust._validation import (
    check_batch,
    check_labels,
    check_positive,
    is_concrete,
    search_inputs,
)
from geomrobust.engine import CHUNK_SIZE, run_program
from geomrobust.models import as_classifier
from geomrobust.ops import batch_logit_difference_grads, logit_difference
from geomrobust.ops._norms import lp_norm
from geomrobust.search._loop import loop_form

from ._driver import default_tol
from ._eigsolve import lanczos_init, lanczos_result, lanczos_sizes, thick_restart_lanczos
from ._lanczos_host import LanczosProblem, host_lanczos
from ._shape_operator import shape_operator, tangent_shape_matrix, tangent_to_ambient
from ._smoothed import cross_fitted, gradient_samples, smoothed_quadratic_form

__all__ = [
    "AUTO_DENSE_MAX_DIM",
    "BOUNDARY_TOL",
    "Curvatures",
    "NormalCurvatures",
    "PiecewiseLinearWarning",
    "normal_curvature",
    "normal_curvatures",
    "principal_curvatures",
    "random_tangents",
]

# ``method="auto"`` uses the dense path up to this input dimension. Measured with
# benchmarks/curvature.py (LeNet, top-20, float32, 2 shared CPU cores): Lanczos was 1.7x faster
# than dense at D = 256 and 11x at D = 1024, so the crossover lies below 256.
AUTO_DENSE_MAX_DIM = 128

# A point z counts as ON the (y, k) boundary when its first-order distance to it,
# |F_k(z)| / ||∇F_k(z)||, is at most BOUNDARY_TOL · max(1, ||z||): the curvature of the level
# set through a point at distance δ differs from the boundary's by O(δ κ²) (a sphere of
# radius r: 1/(r + δ) vs 1/r), and refine_boundary's points sit at ~1e-6 of the margin.
BOUNDARY_TOL = 1e-3


class Curvatures(NamedTuple):
    """Principal curvatures at ``N`` boundary points.

    values : ``(N, num)`` principal curvatures, largest magnitude first; ``nan`` where a value
        did not converge (never a plausible number).
    directions : ``(N, num_directions, *s)`` unit principal directions (tangent to the
        boundary), in the order of ``values`` (all ``num`` unless asked otherwise).
    converged : ``(N,)`` every value of the point converged: ``status == Status.SUCCESS``.
    residuals : ``(N, num)`` residual norms ``||S u - κ u||`` (0 for the dense method).
    normal : ``(N, *s)`` unit normal ``n = ∇F_k/||∇F_k||``.
    grad_norm : ``(N,)`` ``||∇F_k(z)||``.
    restarts : ``(N,)`` Lanczos restarts used (0 for the dense method).
    stderr : ``(N, num)`` standard errors of the values (Monte Carlo, ``scale=σ``; 0 exact).
    status : ``(N,)`` int8 :class:`geomrobust.Status`, how each point ended (the first that
        applies):

        * ``OFF_BOUNDARY``: ``|F_k(z)| > boundary_tol · max(1, ||z||) · ||∇F_k(z)||`` (exact
          ``F_k``, also at a scale): ``z`` is not on the boundary to first order, so the
          values would be those of the level set through ``z`` (refine it onto the boundary
          with :func:`geomrobust.search.refine_boundary`);
        * ``PIECEWISE_LINEAR``: the exact Hessian of ``F_k`` is exactly zero on every probe
          (a ReLU / max-pool network, or an affine classifier): its exact curvatures (zeros)
          describe one flat piece, not the boundary; measure at a scale (``scale=σ``);
        * ``NONFINITE``: a non-finite value, or a zero or non-finite gradient (no normal);
        * ``MAX_STEPS``: a Lanczos value had not converged after ``restarts`` restarts;
        * ``SUCCESS``.

    ``value_converged`` (``isfinite(values)``), ``piecewise_linear`` and ``on_boundary``
    (from ``status``) are deprecated properties, kept for one release. With ``scale=σ`` the
    normal and gradient are those of the smoothed function.
    """

    values: Array
    directions: Array
    converged: Array
    residuals: Array
    normal: Array
    grad_norm: Array
    restarts: Array
    stderr: Array
    status: Array

    @property
    def value_converged(self) -> Array:
        """Deprecated: ``isfinite(values)`` (unconverged values are ``nan``)."""
        deprecated_alias("Curvatures.value_converged", "isfinite(Curvatures.values)")
        return jnp.isfinite(self.values)

    @property
    def piecewise_linear(self) -> Array:
        """Deprecated: ``status == Status.PIECEWISE_LINEAR``."""
        deprecated_alias("Curvatures.piecewise_linear", "status == Status.PIECEWISE_LINEAR")
        return self.status == Status.PIECEWISE_LINEAR

    @property
    def on_boundary(self) -> Array:
        """Deprecated: ``status != Status.OFF_BOUNDARY``."""
        deprecated_alias("Curvatures.on_boundary", "status != Status.OFF_BOUNDARY")
        return self.status != Status.OFF_BOUNDARY


class _PointCurvatures(NamedTuple):
    """What the per-point kernels compute; :func:`_result` makes the public result."""

    values: Array
    directions: Array
    converged: Array
    value_converged: Array
    residuals: Array
    normal: Array
    grad_norm: Array
    restarts: Array
    stderr: Array
    piecewise_linear: Array
    on_boundary: Array


def _result(out: _PointCurvatures) -> Curvatures:
    """The public :class:`Curvatures` of the kernels' output: one ``status`` per point, and
    ``nan`` for every value that did not converge. ``converged`` is unchanged (it already
    requires every value converged and the point on the boundary)."""
    finite = jnp.isfinite(out.grad_norm) & (out.grad_norm > 0)
    finite = finite & jnp.all(jnp.isfinite(out.values) & jnp.isfinite(out.stderr), axis=-1)
    status = jnp.select(
        [~out.on_boundary, out.piecewise_linear, ~finite, ~out.converged],
        [Status.OFF_BOUNDARY, Status.PIECEWISE_LINEAR, Status.NONFINITE, Status.MAX_STEPS],
        Status.SUCCESS,
    ).astype(STATUS_DTYPE)
    values = jnp.where(out.value_converged, out.values, jnp.nan)
    return Curvatures(
        values, out.directions, out.converged, out.residuals, out.normal, out.grad_norm,
        out.restarts, out.stderr, status,
    )  # fmt: skip


class PiecewiseLinearWarning(UserWarning):
    """The classifier's exact Hessian vanished at some boundary points (piecewise linear)."""


def _warn_piecewise_linear(flags, what: str) -> None:
    if not is_concrete(flags):
        return
    n = int(np.sum(np.asarray(flags)))
    if n:
        warnings.warn(
            f"{n} of {np.size(flags)} points: the exact Hessian of F_k = f_k - f_y is exactly "
            f"zero there (a piecewise-linear network: ReLU, max pooling). Their exact {what} "
            "(zeros) describe one flat linear piece, not the boundary: their status is "
            "PIECEWISE_LINEAR (not converged, values nan); measure the curvature at a scale "
            "instead, e.g. scale=0.05 (the Gaussian-smoothed boundary; see docs/curvature.md)",
            PiecewiseLinearWarning,
            stacklevel=3,
        )


def _validate(logits_fn, z, y, k, name="z"):
    """The curvature entry points' checks; returns ``z`` in the search dtype (float32 for
    float16 / bfloat16, otherwise the wider of ``z``'s and the logits' dtype) and on the
    classifier's device (:func:`geomrobust._validation.search_inputs`)."""
    check_batch(z, name)
    n = z.shape[0]
    z, K, _ = search_inputs(logits_fn, jnp.asarray(z), name)
    if is_concrete(z):
        check_labels(y, K, n, "y")
        check_labels(k, K, n, "k")
        if np.any(np.asarray(y) == np.asarray(k)):
            raise ValueError("y and k must differ for every point (the boundary between y and k)")
    return z


def _on_boundary(clf, z, y, k, btol):
    """``|F_k(z)| <= btol · max(1, ||z||) · ||∇F_k(z)||`` per point (one forward + VJP)."""
    F, g = batch_logit_difference_grads(clf, z, y, k)
    n = z.shape[0]
    gn = lp_norm(g.reshape(n, -1), 2)
    zn = lp_norm(z.reshape(n, -1), 2)
    return jnp.abs(F) <= btol * jnp.maximum(zn, 1) * gn


def _flag_off_boundary(out: _PointCurvatures, on: Array) -> _PointCurvatures:
    return out._replace(
        on_boundary=on,
        converged=out.converged & on,
        value_converged=out.value_converged & on[:, None],
    )


def _check_boundary_tol(boundary_tol) -> float:
    return check_positive(boundary_tol, "boundary_tol", allow_inf=True)


def _dense_one(logits_fn, num):
    def one(z, y, k, _key):
        s_t, w, c, g = tangent_shape_matrix(logits_fn, z, y, k)
        vals, U = jnp.linalg.eigh(s_t)
        idx = jnp.argsort(-jnp.abs(vals), stable=True)[:num]
        dirs = tangent_to_ambient(U[:, idx], w, c).T.reshape(num, *z.shape)
        gnorm = lp_norm(g.ravel(), 2)
        flat = jnp.all(s_t == 0)  # the exact Hessian vanishes on n⊥: piecewise linear
        ok = jnp.isfinite(gnorm) & (gnorm > 0) & jnp.all(jnp.isfinite(vals)) & ~flat
        zeros = jnp.zeros((num,), z.dtype)
        return _PointCurvatures(
            vals[idx], dirs, ok, jnp.broadcast_to(ok, (num,)), zeros, g / gnorm, gnorm,
            jnp.zeros((), jnp.int32), zeros, flat, jnp.ones((), bool),
        )  # fmt: skip

    return one


def _guard(num: int) -> int:
    """Extra Ritz pairs that must converge beside the ``num`` wanted (see
    :func:`~._eigsolve.thick_restart_lanczos`)."""
    return max(2, num // 4)


def _lanczos_point(res, normal, gnorm, flat, shape, num) -> _PointCurvatures:
    """One point's :class:`_PointCurvatures` from its Lanczos result (both loop forms)."""
    ok_n = jnp.isfinite(gnorm) & (gnorm > 0) & ~flat
    vc = res.converged & ok_n & jnp.isfinite(res.values)
    zeros = jnp.zeros((num,), normal.dtype)
    return _PointCurvatures(
        res.values, res.vectors.reshape(num, *shape), vc.all(), vc, res.residuals,
        normal.reshape(shape), gnorm, res.restarts, zeros, flat, jnp.ones((), bool),
    )  # fmt: skip


def _start_vectors(key, d: int, dtype):
    """The Lanczos start ``v0``, the solver's key and the second piecewise-linear probe of a
    point (both loop forms draw the same)."""
    k0, k1 = jax.random.split(key)
    v0 = jax.random.normal(k0, (d,), dtype)
    v1 = jax.random.normal(jax.random.fold_in(k0, 1), (d,), dtype)
    return v0, v1, k1


def _lanczos_one(logits_fn, num, krylov_dim, keep, tol, restarts):
    def one(z, y, k, key):
        op, g = shape_operator(logits_fn, z, y, k)[:2]
        gnorm = lp_norm(g.ravel(), 2)
        n = g.ravel() / gnorm

        def matvec(v):
            return op(v.reshape(z.shape)).ravel()

        def project(v):
            return v - n * jnp.vdot(n, v)

        v0, v1, k1 = _start_vectors(key, z.size, z.dtype)
        res = thick_restart_lanczos(
            matvec, v0, num=num, krylov_dim=krylov_dim, keep=keep, which="LM", tol=tol,
            restarts=restarts, key=k1, project=project, guard=_guard(num),
        )  # fmt: skip
        # two probes of the exact operator: both exactly zero means a piecewise-linear F_k
        flat = jnp.all(matvec(v0) == 0) & jnp.all(matvec(v1) == 0)
        return _lanczos_point(res, n, gnorm, flat, z.shape, num)

    return one


def _smoothed_one(clf, num, num_samples, sigma):
    """Curvature at scale ``sigma`` of ONE point (see :mod:`geomrobust.measures._smoothed`)."""

    def one(z, y, k, key):
        def grad_batch(pts):
            b = pts.shape[0]
            return batch_logit_difference_grads(
                clf, pts, jnp.full((b,), y, jnp.int32), jnp.full((b,), k, jnp.int32)
            )[1]

        gbar, d, e = gradient_samples(grad_batch, z, key, sigma, num_samples)
        gnorm = lp_norm(gbar.ravel(), 2)
        n = gbar / jnp.where(gnorm > 0, gnorm, 1)
        vals, se, vecs = cross_fitted(d, e, n, num, "LM")
        ok_n = jnp.isfinite(gnorm) & (gnorm > 0)
        vc = ok_n & jnp.isfinite(vals) & jnp.isfinite(se)
        zeros = jnp.zeros((num,), z.dtype)
        return _PointCurvatures(
            vals / gnorm, vecs.reshape(num, *z.shape), vc.all(), vc, zeros,
            n.reshape(z.shape), gnorm, jnp.zeros((), jnp.int32), se / gnorm,
            jnp.zeros((), bool), jnp.ones((), bool),
        )  # fmt: skip

    return one


@renamed(max_restarts="restarts")
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
    restarts: int = 30,
    ids=None,
    num_directions: int | None = None,
    scale: float | None = None,
    num_samples: int = 256,
    boundary_tol: float = BOUNDARY_TOL,
    loop: str = "auto",
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress: Callable[[int], None] | None = None,
) -> Curvatures:
    """Principal curvatures of the boundary between ``y`` and ``k`` at boundary points ``z``.

    Eigenvalues of the shape operator ``S = P H P / ||g||`` restricted to the tangent space
    ``n⊥`` (docs/methods.md), the ``num`` of largest magnitude, both signs, sorted by ``|κ|``.

    **Piecewise-linear networks** (ReLU, max pooling): the exact Hessian is zero almost
    everywhere. Points where it is exactly zero on every probe get the status
    ``PIECEWISE_LINEAR``, reported not converged, and a :class:`PiecewiseLinearWarning` says
    so; use ``scale=σ`` there.

    **Curvature at a scale** ``scale=σ``: the principal curvatures of the level set through
    ``z`` of the Gaussian-smoothed ``F_σ = E[F_k(· + σ ε)]``, from ``num_samples`` antithetic
    gradient samples (Stein's identity; a linear, symmetric, unbiased Hessian estimate; the
    directions from one half of the samples, the values along them from the other half with
    their standard errors in ``stderr``). Exact for a quadratic boundary at every ``σ``, the
    exact curvature as ``σ -> 0`` on a C² network, and finite on a ReLU network. Definition,
    estimator and its errors: :mod:`geomrobust.measures._smoothed` and docs/curvature.md.

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
    restarts : Lanczos restarts after the first cycle.
    ids : ``(N,)`` integer ids of the points for the PRNG (default ``0 .. N-1``). Pass the
        points' global indices when measuring part of a dataset (a chunk, a host's shard),
        so that every point gets the same starting vector however the dataset is split.
    scale : ``σ > 0`` for the curvature at that scale (input units), or None (exact).
    num_samples : ``m`` gradient samples per point at a scale (even, >= 4; each costs two
        gradients, evaluated in one batch of ``2m``); ``num <= m``; the standard error
        falls as ``1/sqrt(m)``. ``method``, ``tol``, ``krylov_dim``, ``keep`` and
        ``restarts`` do not apply at a scale.
    num_directions : how many principal directions to return per point, the first
        ``num_directions`` by ``|κ|`` (default None: all ``num``; 0: none). The directions are
        the largest output, ``N · num · D`` numbers: over a whole dataset, ask for the few
        you use (``geomrobust curvature`` keeps 1) so that host memory stays ``O(N · D)``.
    boundary_tol : points with ``|F_k(z)| > boundary_tol · max(1, ||z||) · ||∇F_k(z)||``
        (first-order distance to the boundary above ``boundary_tol · max(1, ||z||)``) are
        get the status ``OFF_BOUNDARY``, not converged (default ``BOUNDARY_TOL = 1e-3``;
        ``inf`` measures the level set through any ``z``).
    loop : how Lanczos is driven (``method="lanczos"`` only): ``"host"`` runs each Arnoldi
        step of a chunk, each restart and each Ritz close as one top-level jitted program and
        tests convergence on the host (XLA's CPU backend runs a convolution inside a loop
        body many times slower: docs/performance.md, "Lanczos on the CPU"); ``"device"``
        runs the whole solve as one program (``while_loop``); ``"auto"`` (default): ``"host"``
        on the CPU backend, ``"device"`` elsewhere and always under ``jit``/``vmap``/``grad``.
        Both forms give the same converged set and the same values to rounding.
    chunk_size : points per jitted call (default :data:`geomrobust.engine.CHUNK_SIZE`, None:
        all at once), so peak memory does not grow with ``N``; memory of the dense path grows
        as ``chunk_size · D²``: lower it for a large ``D`` with ``method="dense"``.
    devices : None (one device), ``"all"``, an int or a list of devices: chunks are
        spread over the devices (:func:`geomrobust.engine.map_chunks`), results
        bit-for-bit identical to one device; set ``chunk_size <= N / n_devices``.
    progress : None, True (a progress bar counting points) or a callable ``progress(n)``
        with the number of points done after each chunk.

    Returns
    -------
    Curvatures (see its docstring), in the search dtype: ``z``'s, float32 for float16 /
    bfloat16, the wider of ``z``'s and the logits' dtype (docs/conventions.md "Input
    checks").

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
    z = _validate(clf, z, y, k)
    btol = _check_boundary_tol(boundary_tol)
    d = int(np.prod(z.shape[1:]))
    if not isinstance(num, int | np.integer) or not 1 <= num <= d - 1:
        raise ValueError(f"num must be an integer in [1, D-1] = [1, {d - 1}], got {num!r}")
    if scale is not None:
        sigma, m_samples = _check_scale(scale, num_samples, num)
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}")
    m = min(d - 1, max(2 * num + 20, 3 * num)) if krylov_dim is None else int(krylov_dim)
    if method == "auto":
        method = "dense" if (d <= AUTO_DENSE_MAX_DIM or m <= num + 1) else "lanczos"
    if method == "lanczos":
        if not num < m <= d - 1:
            raise ValueError(f"krylov_dim must lie in ({num}, {d - 1}] (num < m <= D-1), got {m}")
        keep_ = None if keep is None else int(keep)
        settings = (num, m, keep_, default_tol(z.dtype, tol), int(restarts))
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
    form = loop_form(loop, clf, z, y, k, key, ids)
    if scale is not None:
        program = partial(_smoothed_curvatures_program, num=int(num), num_samples=m_samples,
                          num_directions=int(nd))  # fmt: skip
        shared = (clf, key, jnp.asarray(btol, z.dtype), jnp.asarray(sigma, z.dtype))
    else:
        host = method == "lanczos" and form == "host"
        program = partial(_curvatures_host if host else _curvatures_program,
                          settings=settings, num_directions=int(nd),
                          **({} if host else {"method": method}))  # fmt: skip
        shared = (clf, key, jnp.asarray(btol, z.dtype))
    out = run_program(
        program, shared, (z, y, k, ids), chunk_size=chunk_size, devices=devices,
        progress=progress, desc="curvatures" if scale is None else f"curvatures at σ={scale:g}",
    )  # fmt: skip
    _warn_piecewise_linear(out.status == Status.PIECEWISE_LINEAR, "principal curvatures")
    return out


def _check_scale(scale, num_samples, num: int | None = None) -> tuple[float, int]:
    sigma = check_positive(scale, "scale")
    m = num_samples
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 4 or m % 2:
        raise ValueError(f"num_samples must be an even integer >= 4, got {num_samples!r}")
    if num is not None and num > m:
        raise ValueError(
            f"num={num} principal curvatures at a scale need num_samples >= num (the rank of "
            f"the estimate), got num_samples={m}"
        )
    return sigma, int(m)


@partial(jax.jit, static_argnames=("num", "num_samples", "num_directions"))
def _smoothed_curvatures_program(clf, key, btol, sigma, zc, yc, kc, idx, *, num, num_samples,
                                 num_directions):  # fmt: skip
    """Curvatures at scale ``sigma`` of a chunk: one point at a time (``lax.map``), each a
    batch of ``2 num_samples`` gradients, so memory is ``O(num_samples · D)``."""
    one = _smoothed_one(clf, num, num_samples, sigma)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    out = jax.lax.map(lambda a: one(*a), (zc, yc, kc, keys))
    out = _flag_off_boundary(out, _on_boundary(clf, zc, yc, kc, btol))
    return _result(out._replace(directions=out.directions[:, :num_directions]))


@partial(jax.jit, static_argnames=("method", "settings", "num_directions"))
def _curvatures_program(clf, key, btol, zc, yc, kc, idx, *, method, settings, num_directions):
    """Principal curvatures of a chunk of points (compiled once per architecture, shapes and
    solver settings; the weights, points and key are arguments)."""
    one = _lanczos_one(clf, *settings) if method == "lanczos" else _dense_one(clf, *settings)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    out = jax.vmap(one)(zc, yc, kc, keys)
    out = _flag_off_boundary(out, _on_boundary(clf, zc, yc, kc, btol))
    return _result(out._replace(directions=out.directions[:, :num_directions]))  # only these leave


class _ShapeData(NamedTuple):
    """The per-point arrays of the host form's shape operators: the points, their classes,
    unit normals ``(C, D)`` and gradient norms ``(C,)``."""

    z: Array
    y: Array
    k: Array
    normal: Array
    grad_norm: Array


def _summed_logit_difference(clf, y, k):
    """``Z -> Σ_i F_{k_i}(z_i)``: its gradient holds every point's ``∇F_k`` (the examples of a
    classifier do not interact), its Hessian is block diagonal."""

    def F(Z):
        logits = clf(Z)
        idx = jnp.arange(Z.shape[0])
        return jnp.sum(logits[idx, k] - logits[idx, y])

    return F


def _shape_linearize(clf, data: _ShapeData):
    """The Hessians of the chunk's ``F_k``, linearized at its points (one batched
    forward-over-reverse linearization)."""
    grad = jax.grad(_summed_logit_difference(clf, data.y, data.k))
    return jax.linearize(grad, data.z)[1]


def _shape_apply(data: _ShapeData, hvp, V):
    """``S_i V[i] = P H_i P V[i] / ||g_i||`` for every point (``V`` ``(C, D)``)."""
    n = data.normal
    pv = V - n * jnp.sum(n * V, -1, keepdims=True)
    hv = hvp(pv.reshape(data.z.shape)).reshape(V.shape)
    hv = hv - n * jnp.sum(n * hv, -1, keepdims=True)
    return hv / data.grad_norm[:, None]


def _tangent_project(data_i: _ShapeData, v):
    return v - data_i.normal * jnp.vdot(data_i.normal, v)


_SHAPE_OPERATORS = LanczosProblem(_shape_linearize, _shape_apply, _tangent_project)


@partial(jax.jit, static_argnames="settings")
def _host_start(clf, key, btol, zc, yc, kc, idx, *, settings):
    """The host form's set-up of a chunk: normals, boundary test, the two piecewise-linear
    probes and the Lanczos states (the start vectors of the device form)."""
    num, m, keep, _, _ = settings
    c, d = zc.shape[0], int(np.prod(zc.shape[1:]))
    F, g = batch_logit_difference_grads(clf, zc, yc, kc)
    g = g.reshape(c, d)
    gnorm = lp_norm(g, 2)
    zn = lp_norm(zc.reshape(c, -1), 2)
    on = jnp.abs(F) <= btol * jnp.maximum(zn, 1) * gnorm
    data = _ShapeData(zc, yc, kc, g / gnorm[:, None], gnorm)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    v0, v1, k1 = jax.vmap(lambda kk: _start_vectors(kk, d, zc.dtype))(keys)
    hvp = _shape_linearize(clf, data)
    flat = jnp.all(_shape_apply(data, hvp, v0) == 0, -1)
    flat = flat & jnp.all(_shape_apply(data, hvp, v1) == 0, -1)
    _, num_, _ = lanczos_sizes(num, m, keep, _guard(num))

    def init(d_i, v, kk):
        return lanczos_init(v, num=num_, krylov_dim=m, key=kk,
                            project=lambda u: _tangent_project(d_i, u))  # fmt: skip

    return jax.vmap(init)(data, v0, k1), data, flat, on


@partial(jax.jit, static_argnames=("settings", "num_directions"))
def _host_finish(state, data: _ShapeData, flat, on, *, settings, num_directions):
    num, m, keep, tol, _ = settings
    _, num_, _ = lanczos_sizes(num, m, keep, _guard(num))
    shape = data.z.shape[1:]

    def one(s, n, gn, fl):
        res = lanczos_result(s, num=num_, out=num, which="LM", tol=tol)
        return _lanczos_point(res, n, gn, fl, shape, num)

    out = jax.vmap(one)(state, data.normal, data.grad_norm, flat)
    out = _flag_off_boundary(out, on)
    return _result(out._replace(directions=out.directions[:, :num_directions]))


def _curvatures_host(clf, key, btol, zc, yc, kc, idx, *, settings, num_directions):
    """Lanczos curvatures of a chunk in the host form (docs/performance.md): the
    Arnoldi steps, restarts and Ritz closes of the whole chunk as top-level programs
    (:mod:`geomrobust.measures._lanczos_host`), the stop test on the host."""
    num, m, keep, tol, restarts = settings
    state, data, flat, on = _host_start(clf, key, btol, zc, yc, kc, idx, settings=settings)
    _, num_, keep_ = lanczos_sizes(num, m, keep, _guard(num))
    state = host_lanczos(_SHAPE_OPERATORS, clf, data, state, num=num_, keep=keep_, which="LM",
                         tol=tol, restarts=restarts)  # fmt: skip
    return _host_finish(state, data, flat, on, settings=settings, num_directions=num_directions)


class NormalCurvatures(NamedTuple):
    """Normal curvatures ``κ(u) = uᵀ H u / ||g||`` along given directions.

    values : ``(N,)`` (:func:`normal_curvature`) or ``(N, M)`` (:func:`normal_curvatures`), in
        the dtype of ``z``; ``nan`` where not converged.
    stderr : the standard errors of ``values`` (Monte Carlo, ``scale=σ``; zeros exact).
    converged : ``(N,)`` bool, ``status == Status.SUCCESS``.
    status : ``(N,)`` int8 :class:`geomrobust.Status`: ``SUCCESS``; ``OFF_BOUNDARY`` (``z``
        farther than ``boundary_tol`` from the boundary: raised as ``ValueError`` for
        concrete inputs, flagged under a transformation); ``NONFINITE`` (a non-finite value).
    """

    values: Array
    stderr: Array
    converged: Array
    status: Array


def _check_return_stderr(return_stderr) -> None:
    if return_stderr is not None:
        deprecated_alias(
            "return_stderr=", "the stderr field of the NormalCurvatures result", stacklevel=4
        )


def normal_curvature(
    logits_fn: Callable[[Array], Array],
    z: Array,
    y: Array,
    k: Array,
    u: Array,
    *,
    scale: float | None = None,
    key: Array | None = None,
    num_samples: int = 256,
    boundary_tol: float = BOUNDARY_TOL,
    return_stderr: bool | None = None,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> NormalCurvatures:
    """Normal curvature ``κ(u) = uᵀ H u / ||g||`` of the ``(y, k)`` boundary at each ``z``.

    ``u`` (``(N, *s)``) is made an explicit unit tangent first: ``u <- P u / ||P u||`` (a no-op
    for a unit tangent), so the result is the curvature of the normal section along ``u``.
    ``u`` (nearly) parallel to the normal has no tangent part and raises ``ValueError``.
    ``scale=σ`` (with ``key`` and ``num_samples``): the normal curvature of the level set of
    the Gaussian-smoothed ``F_σ`` (see :func:`principal_curvatures`), ``u`` projected on the
    smoothed gradient's tangent space, with its standard error in ``stderr``.
    ``z`` off the boundary (``|F_k(z)| > boundary_tol · max(1, ||z||) · ||∇F_k(z)||``, as
    in :func:`principal_curvatures`) raises ``ValueError`` naming how many points (concrete
    inputs; under a transformation its ``status`` is ``OFF_BOUNDARY``).
    ``return_stderr`` is deprecated (the result always holds ``stderr``).

    Returns
    -------
    NormalCurvatures with ``values (N,)`` in the dtype of ``z``; sign as in
    :func:`principal_curvatures`.
    """
    _check_return_stderr(return_stderr)
    clf = as_classifier(logits_fn)
    z = _validate(clf, z, y, k)
    check_batch(u, "u")
    if u.shape != z.shape:
        raise ValueError(f"u must have the shape of z {tuple(z.shape)}, got {tuple(u.shape)}")
    out = _normal_curvatures(
        clf, z, y, k, u[:, None], scale=scale, key=key, num_samples=num_samples,
        boundary_tol=boundary_tol, chunk_size=chunk_size, devices=devices, progress=progress,
    )  # fmt: skip
    return out._replace(values=out.values[:, 0], stderr=out.stderr[:, 0])


def normal_curvatures(
    logits_fn: Callable[[Array], Array],
    z: Array,
    y: Array,
    k: Array,
    directions: Array,
    *,
    scale: float | None = None,
    key: Array | None = None,
    num_samples: int = 256,
    boundary_tol: float = BOUNDARY_TOL,
    return_stderr: bool | None = None,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> NormalCurvatures:
    """Curvature profile: normal curvatures along ``M`` directions per point, ``(N, M)``.

    ``directions`` is ``(M, *s)`` (shared) or ``(N, M, *s)`` (per point); each is projected
    onto the tangent space and normalised, as in :func:`normal_curvature`. Along the principal
    directions the profile equals the principal curvatures; along random tangent directions
    (:func:`random_tangents`) it concentrates around ``tr(S)/(D-1)``. ``chunk_size``,
    ``devices``, ``progress``, ``scale``, ``key``, ``num_samples``: as in
    :func:`principal_curvatures` (point ``i`` draws its samples from ``fold_in(key, i)``).
    Points off the boundary beyond ``boundary_tol`` raise ``ValueError`` (see
    :func:`normal_curvature`). Returns NormalCurvatures with ``values`` and ``stderr``
    ``(N, M)``.
    """
    _check_return_stderr(return_stderr)
    return _normal_curvatures(
        logits_fn, z, y, k, directions, scale=scale, key=key, num_samples=num_samples,
        boundary_tol=boundary_tol, chunk_size=chunk_size, devices=devices, progress=progress,
    )  # fmt: skip


def _normal_curvatures(
    logits_fn, z, y, k, directions, *, scale, key, num_samples, boundary_tol, chunk_size,
    devices, progress,
) -> NormalCurvatures:  # fmt: skip
    clf = as_classifier(logits_fn)
    z = _validate(clf, z, y, k)
    btol = _check_boundary_tol(boundary_tol)
    directions = jnp.asarray(directions, z.dtype)  # the tangents live in z's precision
    if directions.ndim == z.ndim:
        directions = jnp.broadcast_to(directions, (z.shape[0], *directions.shape))
    if directions.shape[0] != z.shape[0] or directions.shape[2:] != z.shape[1:]:
        raise ValueError(
            f"directions must be (M, *s) or (N, M, *s) with s={tuple(z.shape[1:])}, "
            f"N={z.shape[0]}, got {tuple(directions.shape)}"
        )

    if scale is None:
        program, shared, batched = _normal_curvatures_program, (clf,), (z, y, k, directions)
    else:
        sigma, m = _check_scale(scale, num_samples)
        if key is None:
            raise TypeError("normal curvatures at a scale need key= (the gradient samples)")
        program = partial(_smoothed_normal_program, num_samples=m)
        shared = (clf, key, jnp.asarray(sigma, z.dtype))
        batched = (z, y, k, directions, jnp.arange(z.shape[0]))
    kappa, se, ratio, on = run_program(
        program, (*shared[:1], jnp.asarray(btol, z.dtype), *shared[1:]), batched,
        chunk_size=chunk_size, devices=devices, progress=progress, desc="normal curvatures",
    )  # fmt: skip
    if is_concrete(on) and not np.all(np.asarray(on)):
        off = np.flatnonzero(~np.asarray(on))
        raise ValueError(
            f"{off.size} of {z.shape[0]} points z are not on the (y, k) boundary: "
            f"|F_k(z)| > boundary_tol · max(1, ||z||) · ||∇F_k(z)|| (boundary_tol={btol:g}; "
            f"first {off[:5].tolist()}). Refine them onto the boundary with "
            "geomrobust.search.refine_boundary, or pass boundary_tol=float('inf') to measure "
            "the level set through z"
        )
    if is_concrete(ratio) and np.any(~(np.asarray(ratio) > 1e-3)):
        raise ValueError(
            "directions must have a tangent part: some are (nearly) parallel to the boundary "
            f"normal (||P u||/||u|| = {float(np.nanmin(np.asarray(ratio))):.1e})"
        )
    finite = jnp.all(jnp.isfinite(kappa), axis=1) & jnp.all(jnp.isfinite(se), axis=1)
    status = jnp.where(
        ~on, Status.OFF_BOUNDARY, jnp.where(finite, Status.SUCCESS, Status.NONFINITE)
    ).astype(STATUS_DTYPE)
    ok = status == Status.SUCCESS
    kappa = jnp.where(ok[:, None], kappa, jnp.nan)
    return NormalCurvatures(kappa, se, ok, status)


@partial(jax.jit, static_argnames="num_samples")
def _smoothed_normal_program(clf, btol, key, sigma, z, y, k, directions, idx, *, num_samples):
    """``(κ_σ, stderr, ||P u||/||u||)`` of a chunk at scale ``sigma``, ``(C, M)`` each."""

    def one(a):
        zi, yi, ki, dirs, i = a

        def grad_batch(pts):
            b = pts.shape[0]
            return batch_logit_difference_grads(
                clf, pts, jnp.full((b,), yi, jnp.int32), jnp.full((b,), ki, jnp.int32)
            )[1]

        gbar, d, e = gradient_samples(grad_batch, zi, jax.random.fold_in(key, i), sigma,
                                      num_samples)  # fmt: skip
        gnorm = lp_norm(gbar.ravel(), 2)
        n = gbar / gnorm
        u = dirs.reshape(dirs.shape[0], -1)
        pu = u - (u @ n)[:, None] * n[None, :]
        norms = jnp.linalg.norm(pu, axis=1)
        t = pu / norms[:, None]
        val, se = smoothed_quadratic_form(d, e, t)
        return val / gnorm, se / gnorm, norms / jnp.linalg.norm(u, axis=1)

    kappa, se, ratio = jax.lax.map(one, (z, y, k, directions, idx))
    return kappa, se, ratio, _on_boundary(clf, z, y, k, btol)


@jax.jit
def _normal_curvatures_program(clf, btol, z, y, k, directions):
    """``(κ, ||P u||/||u||)`` of a chunk, ``(C, M)`` each."""

    def one(zi, yi, ki, dirs):
        F = logit_difference(clf, yi, ki)
        g, op = jax.linearize(jax.grad(F), zi)
        gnorm = lp_norm(g.ravel(), 2)
        n = g / gnorm

        def kappa(u):
            pu = u - n * jnp.vdot(n, u)
            t = pu / jnp.linalg.norm(pu)
            kap = jnp.vdot(t, op(t)) / gnorm
            return kap, jnp.zeros_like(kap), jnp.linalg.norm(pu) / jnp.linalg.norm(u)

        return jax.vmap(kappa)(dirs)

    kappa, se, ratio = jax.vmap(one)(z, y, k, directions)
    return kappa, se, ratio, _on_boundary(clf, z, y, k, btol)


@positional_key(0)
def random_tangents(normals: Array, num: int, *, key: Array) -> Array:
    """``num`` random unit tangent directions per point: ``(N, num, *s)``.

    Isotropic Gaussian vectors projected onto ``n⊥`` and normalised (uniform on the unit sphere
    of the tangent space). ``normals`` is ``(N, *s)`` of unit normals (``Curvatures.normal``).
    """
    n = normals.reshape(normals.shape[0], 1, -1)
    v = jax.random.normal(key, (normals.shape[0], num, n.shape[-1]), normals.dtype)
    v = v - n * jnp.sum(n * v, -1, keepdims=True)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return v.reshape(normals.shape[0], num, *normals.shape[1:])
