"""Two-dimensional slices of the decision boundary and of the loss.

The classifier is evaluated on the plane ``{x + a u + b v}`` through a point ``x`` on an
``R × R`` grid of ``(a, b)``: predicted labels, a logit difference whose zero level set is the
boundary, and the cross-entropy loss (the loss surface in the same plane). Typical planes
(docs/methods.md): through a data point, its adversarial direction and a random one; at a
boundary point, its normal and the top principal direction, or the normal and a random tangent
direction (the boundary looks flat in the second and curved in the first).

Reference: Fawzi, Moosavi-Dezfooli, Frossard, Soatto, "Empirical study of the topology and
geometry of deep networks", CVPR 2018 (figures of boundary sections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from geomrobust._deprecation import positional_key
from geomrobust._validation import check_batch, check_finite, check_positive
from geomrobust.engine import CHUNK_SIZE, run_program
from geomrobust.models import as_classifier

__all__ = ["Slice", "boundary_slice", "orthonormal_plane", "random_orthogonal"]


class Slice(NamedTuple):
    """A 2-D section of the classifier through ``x``.

    Grid layout: entry ``[i, j]`` is the point ``x + a_j u + b_i v`` (rows follow ``b``, columns
    follow ``a``), ready for ``imshow(..., origin="lower")``.

    labels : ``(R, R)`` predicted class.
    logit_diff : ``(R, R)`` ``f_k - f_y`` when ``classes=(y, k)`` is given (zero level set = the
        ``(y, k)`` boundary, positive on the ``k`` side), else top-1 minus runner-up logit
        (``>= 0``, zero exactly on every boundary).
    loss : ``(R, R)`` cross-entropy of the reference label (``y``, or the prediction at ``x``).
    contour : ``(P, 2)`` ``(a, b)`` points of the boundary: zero crossings of ``f_k - f_y`` along
        grid edges (linear interpolation) when ``classes`` is given, else midpoints of the
        grid edges whose two ends have different labels.
    a, b : ``(R,)`` grid coordinates along ``u`` and ``v``.
    u, v : ``(*s)`` the orthonormal plane directions used.
    """

    labels: Array
    logit_diff: Array
    loss: Array
    contour: Array
    a: Array
    b: Array
    u: Array
    v: Array


class OrthonormalPlane(NamedTuple):
    """u, v: the orthonormal directions of a plane (:func:`orthonormal_plane`)."""

    u: Array
    v: Array


def orthonormal_plane(u: Array, v: Array) -> OrthonormalPlane:
    """Gram-Schmidt: ``u <- u/||u||``, ``v <- (v - (u·v) u)/||·||``; raises if ``v ∥ u``."""
    u = jnp.asarray(u)
    v = jnp.asarray(v, u.dtype)
    nu = jnp.linalg.norm(u)
    if not float(nu) > 0:
        raise ValueError("u must be a nonzero direction")
    u = u / nu
    w = v - u * jnp.vdot(u, v)
    nw = jnp.linalg.norm(w)
    if not float(nw) > 1e-6 * float(jnp.linalg.norm(v)):
        raise ValueError("v must not be parallel to u (the plane would be degenerate)")
    return OrthonormalPlane(u, w / nw)


@positional_key(0)
def random_orthogonal(u: Array, *, key: Array) -> Array:
    """A random unit direction orthogonal to ``u`` (Gaussian, projected, normalised).

    ``key`` is keyword-only (the old form ``random_orthogonal(key, u)`` works for one release
    with a ``DeprecationWarning``).
    """
    u = jnp.asarray(u)
    g = jax.random.normal(key, u.shape, u.dtype)
    n = u / jnp.linalg.norm(u)
    g = g - n * jnp.vdot(n, g)
    return g / jnp.linalg.norm(g)


def boundary_slice(
    logits_fn: Callable[[Array], Array],
    x: Array,
    u: Array,
    v: Array,
    extent: float | tuple[float, float, float, float],
    resolution: int,
    *,
    classes: tuple[int, int] | None = None,
    y: int | None = None,
    chunk_size: int | None = CHUNK_SIZE,
    devices=None,
    progress=None,
) -> Slice:
    """Evaluate the classifier on the plane ``x + a u + b v`` over an ``R × R`` grid.

    Parameters
    ----------
    logits_fn : the classifier ``(N, *s) -> (N, K)``: a function, :class:`geomrobust.Classifier`,
        NNX or Equinox module (see :func:`geomrobust.as_classifier`).
    x : ``(*s)`` one point (a data point or a boundary point).
    u, v : ``(*s)`` plane directions, made orthonormal by :func:`orthonormal_plane`.
    extent : ``e`` for ``a, b ∈ [-e, e]``, or ``(a_min, a_max, b_min, b_max)``.
    resolution : ``R`` grid points per axis.
    classes : optional ``(y, k)``: ``logit_diff = f_k - f_y`` (else top-1 minus runner-up).
    y : label of the loss slice (default ``classes[0]`` if given, else the prediction at ``x``).
    chunk_size : grid points per forward pass (one jitted program for every chunk).
    devices, progress : the executor's options (progress counts grid points).

    Returns
    -------
    Slice (arrays in the dtype of ``x``; labels int32).
    """
    clf = as_classifier(logits_fn)
    check_batch(x[None], "x")
    check_finite(u, "u")
    check_finite(v, "v")
    if u.shape != x.shape or v.shape != x.shape:
        raise ValueError(
            f"u and v must have the shape of x {tuple(x.shape)}, got {u.shape} and {v.shape}"
        )
    if isinstance(extent, int | float | np.floating | np.integer):
        e = check_positive(extent, "extent")
        lims = (-e, e, -e, e)
    else:
        lims = tuple(float(t) for t in extent)
        if len(lims) != 4 or lims[0] >= lims[1] or lims[2] >= lims[3]:
            raise ValueError(f"extent must be e > 0 or (a_min, a_max, b_min, b_max), got {extent}")
    if not isinstance(resolution, int | np.integer) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    x = jnp.asarray(x)
    u, v = orthonormal_plane(jnp.asarray(u, x.dtype), jnp.asarray(v, x.dtype))
    K = jax.eval_shape(clf, x[None]).shape[-1]
    if classes is not None:
        cy, ck = (int(c) for c in classes)
        if not (0 <= cy < K and 0 <= ck < K) or cy == ck:
            raise ValueError(f"classes must be two different classes in [0, {K}), got {classes}")
    if y is None:
        y = classes[0] if classes is not None else int(jnp.argmax(clf(x[None])[0]))
    if not 0 <= int(y) < K:
        raise ValueError(f"y must lie in [0, {K}), got {y}")

    a = jnp.linspace(lims[0], lims[1], resolution, dtype=x.dtype)
    b = jnp.linspace(lims[2], lims[3], resolution, dtype=x.dtype)
    bb, aa = jnp.meshgrid(b, a, indexing="ij")
    coef = jnp.stack([aa.ravel(), bb.ravel()], axis=1)  # row-major: [i, j] <-> (a_j, b_i)
    pair = jnp.asarray((-1, -1) if classes is None else classes, jnp.int32)
    labels, diff, loss = run_program(
        _slice_program, (clf, x, u, v, pair, jnp.asarray(int(y), jnp.int32)), (coef,),
        chunk_size=chunk_size, devices=devices, progress=progress, desc="slice",
    )  # fmt: skip
    shape = (resolution, resolution)
    labels, diff, loss = labels.reshape(shape), diff.reshape(shape), loss.reshape(shape)
    if classes is None:
        contour = _label_edges(np.asarray(labels), np.asarray(a), np.asarray(b))
    else:
        contour = _zero_crossings(np.asarray(diff), np.asarray(a), np.asarray(b))
    return Slice(labels, diff, loss, jnp.asarray(contour, x.dtype), a, b, u, v)


@jax.jit
def _slice_program(clf, x, u, v, pair, y, coef):
    """Labels, logit difference and loss at the grid points ``x + a u + b v`` of a chunk."""
    pts = x[None] + coef[:, :1].reshape(-1, *[1] * x.ndim) * u
    pts = pts + coef[:, 1:].reshape(-1, *[1] * x.ndim) * v
    logits = clf(pts)
    top2 = jax.lax.top_k(logits, 2)[0]
    diff = jnp.where(pair[0] < 0, top2[:, 0] - top2[:, 1], logits[:, pair[1]] - logits[:, pair[0]])
    loss = -jax.nn.log_softmax(logits)[:, y]
    return jnp.argmax(logits, -1).astype(jnp.int32), diff, loss


def _zero_crossings(F: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Points where ``F`` changes sign along horizontal and vertical grid edges (marching-squares
    edge intersections with linear interpolation)."""
    pts = []
    f0, f1 = F[:, :-1], F[:, 1:]  # horizontal edges: a_j -> a_{j+1} at b_i
    i, j = np.nonzero(np.signbit(f0) != np.signbit(f1))
    t = _fraction(f0[i, j], f1[i, j])
    pts.append(np.stack([a[j] + t * (a[j + 1] - a[j]), b[i]], 1))
    f0, f1 = F[:-1, :], F[1:, :]  # vertical edges: b_i -> b_{i+1} at a_j
    i, j = np.nonzero(np.signbit(f0) != np.signbit(f1))
    t = _fraction(f0[i, j], f1[i, j])
    pts.append(np.stack([a[j], b[i] + t * (b[i + 1] - b[i])], 1))
    return np.concatenate(pts).reshape(-1, 2)


def _fraction(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Where the linear interpolant of ``f0 -> f1`` vanishes, in ``[0, 1]`` (0.5 if flat)."""
    den = f0 - f1
    safe = np.where(den != 0, den, 1)
    return np.clip(np.where(den != 0, f0 / safe, 0.5), 0, 1)


def _label_edges(L: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Midpoints of grid edges whose end points have different labels."""
    i, j = np.nonzero(L[:, :-1] != L[:, 1:])
    h = np.stack([(a[j] + a[j + 1]) / 2, b[i]], 1)
    i, j = np.nonzero(L[:-1, :] != L[1:, :])
    vv = np.stack([a[j], (b[i] + b[i + 1]) / 2], 1)
    return np.concatenate([h, vv]).reshape(-1, 2)
