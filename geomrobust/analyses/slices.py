"""2-D slices of the decision boundary and of the loss around selected examples.

``compute(classifier, data, settings)`` is ``geomrobust slice`` (README.md, "Command line";
Fawzi, Moosavi-Dezfooli, Frossard, Soatto, CVPR 2018, section 4): at the boundary point
``z`` of each selected example (:func:`boundary_points`), the classifier's labels, the logit
difference ``f_k - f_y`` and the loss on an ``R x R`` grid of a plane. The planes
(:data:`PLANES`) are spanned by two of: the unit normal ``n`` at ``z``, the most curved
principal direction there, a random tangent direction, the DeepFool direction at ``x``;
they are centred on ``z`` or on the example ``x``. Random directions of example ``i`` come
from ``fold_in(key, i)``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust._deprecation import renamed
from geomrobust.engine import track
from geomrobust.measures import boundary_slice, principal_curvatures, random_orthogonal
from geomrobust.models import as_classifier

from ._boundary import boundary_points
from ._common import AnalysisResult, inputs, resolve_key

__all__ = ["PLANES", "Plane", "SliceSettings", "compute"]


class Plane(NamedTuple):
    """A slice plane: ``center`` ``"x"`` or ``"z"``; ``u``, ``v`` among ``"normal"``,
    ``"top"`` (most curved principal direction), ``"adversarial"`` (DeepFool direction) and
    ``("random", c)`` (a random direction orthogonal to the other axis, drawn from
    ``fold_in(key_i, c)``, or ``key_i`` itself for ``c = None``); ``scale`` multiplies the
    half-width; ``xlabel``, ``ylabel`` name the axes."""

    center: str
    u: object
    v: object
    scale: float
    xlabel: str
    ylabel: str


#: The planes, by name: ``adversarial``, ``principal`` and ``tangent`` are those of
#: ``geomrobust slice``; ``curved``, ``flat`` and ``data`` those of the report.
PLANES: dict[str, Plane] = {
    "adversarial": Plane(
        "x", "adversarial", ("random", None), 1.0, "adversarial direction", "random direction"
    ),
    "principal": Plane("z", "normal", "top", 1.0, "normal n", "top principal direction"),
    "tangent": Plane("z", "normal", ("random", 1), 1.0, "normal n", "random tangent direction"),
    "curved": Plane("z", "top", "normal", 1.0, "top curved direction", "boundary normal"),
    "flat": Plane("z", ("random", 0), "normal", 1.0, "random tangent direction", "boundary normal"),
    "data": Plane("x", "normal", ("random", 1), 2.0, "adversarial direction", "random direction"),
}

FIELDS = ("labels", "logit_diff", "loss", "contour", "a", "b")


@renamed(max_iter="deepfool_steps")  # old field names (docs/api.md)
@dataclasses.dataclass(frozen=True)
class SliceSettings:
    """The options that change the numbers (defaults: those of ``geomrobust slice``).

    index : examples to slice (positions in ``data``); planes : names in :data:`PLANES`;
    resolution : grid points per axis; extent : half-width of the grid, or None for
    ``extent_scale × max(margin, 1e-3)`` (the DeepFool margin of the example);
    overshoot, deepfool_steps : DeepFool's; key : PRNG seed.
    """

    index: tuple[int, ...] = (0,)
    planes: tuple[str, ...] = ("adversarial", "principal", "tangent")
    resolution: int = 101
    extent: float | None = None
    extent_scale: float = 3.0
    overshoot: float = 0.02
    deepfool_steps: int = 50
    key: int = 0

    def __post_init__(self):
        unknown = [p for p in self.planes if p not in PLANES]
        if unknown:
            raise ValueError(f"planes must be among {list(PLANES)}, got {unknown}")

    def check(self, n: int) -> SliceSettings:
        """Raise ValueError unless every index lies in ``[0, n)``."""
        bad = [i for i in self.index if not 0 <= i < n]
        if bad:
            raise ValueError(f"--index {bad} outside [0, {n})")
        return self


def compute(
    classifier,
    data,
    settings: SliceSettings = SliceSettings(),
    *,
    key=None,
    points=None,
    devices=None,
    progress=None,
) -> AnalysisResult:
    """Slices of the boundary at the examples ``settings.index`` of ``data``.

    A handful of examples, one grid each: nothing to resume per chunk (the contours differ
    in length from one slice to the next), so there is no store.

    Parameters
    ----------
    classifier : anything :func:`geomrobust.as_classifier` accepts.
    data : an ``ArrayDataset``, ``(x, y)`` or ``x`` (boundary points around the predicted
        labels).
    settings : :class:`SliceSettings`.
    progress : None, True or a callable counting slices; devices : the executor's devices.
    key : a PRNG key replacing ``jax.random.key(settings.key)``.
    points : boundary points already found for the selected examples (a mapping with
        ``z``, ``y``, ``k``, ``normal``, ``top_direction``, ``margin``, one row per index),
        e.g. by the curvature analysis; None finds them (:func:`boundary_points`, and one
        principal direction per point).

    Returns
    -------
    (arrays, summary)
        ``arrays["<field>_<index>_<plane>"]`` for the fields of :class:`geomrobust.Slice`;
        ``summary["slices"]``: one record per slice, or ``{"index", "status"}`` for an
        example without a boundary point; ``summary["n_no_boundary_point"]`` counts them.
    """
    clf = as_classifier(classifier)
    x, _ = inputs(data)
    s = settings.check(int(x.shape[0]))
    root = resolve_key(s, key)
    sel = jnp.asarray(x[np.asarray(s.index)])
    pts = _points(clf, sel, s, root, devices) if points is None else points
    planes = [p for p in PLANES if p in s.planes]
    arrays, records = {}, []
    with track(progress, len(s.index) * len(planes), "slices") as report:
        for j, i in enumerate(s.index):
            if "valid" in pts and not bool(pts["valid"][j]):
                records.append({"index": int(i), "status": "no boundary point found"})
                continue
            kj = jax.random.fold_in(root, int(i))
            margin = float(pts["margin"][j])
            extent = s.extent or s.extent_scale * max(margin, 1e-3)
            cls = (int(pts["y"][j]), int(pts["k"][j]))
            for name in planes:
                c, u, v, scale = _plane(PLANES[name], sel[j], pts, j, kj)
                sl = boundary_slice(
                    clf, c, u, v, scale * extent, s.resolution, classes=cls, devices=devices
                )
                for f in FIELDS:
                    arrays[f"{f}_{i}_{name}"] = np.asarray(getattr(sl, f))
                records.append(
                    dict(
                        index=int(i),
                        plane=name,
                        y=cls[0],
                        k=cls[1],
                        margin=margin,
                        extent=float(scale * extent),
                        boundary_points=int(sl.contour.shape[0]),
                    )
                )
                if report is not None:
                    report(1)
    missing = sum(1 for r in records if "status" in r)
    summary = {"slices": records, "n_slices": len(records) - missing}
    return AnalysisResult(arrays, {**summary, "n_no_boundary_point": missing})


def _points(clf, x, s: SliceSettings, root, devices) -> dict:
    """Boundary points of the selected examples and, where a plane needs them, the normal
    and the most curved direction (one principal curvature per point, from ``key_i``)."""

    bs = boundary_points(
        clf, x, overshoot=s.overshoot, deepfool_steps=s.deepfool_steps, devices=devices
    )
    pts = {f: np.array(v) for f, v in bs._asdict().items()}
    need = any({"normal", "top"} & {PLANES[p].u, PLANES[p].v} for p in s.planes)
    pts["top_direction"] = np.zeros_like(pts["z"])
    for j, i in enumerate(s.index):
        if need and pts["valid"][j]:
            curv = principal_curvatures(
                clf,
                bs.z[j : j + 1],
                bs.y[j : j + 1],
                bs.k[j : j + 1],
                num=1,
                key=jax.random.fold_in(root, int(i)),
            )
            pts["normal"][j] = np.asarray(curv.normal[0])
            pts["top_direction"][j] = np.asarray(curv.directions[0, 0])
    return pts


def _plane(plane: Plane, x, pts, j, kj):
    """``(center, u, v, scale)`` of ``plane`` at point ``j``."""
    dtype = x.dtype
    fixed = {
        "normal": lambda: jnp.asarray(pts["normal"][j], dtype),
        "top": lambda: jnp.asarray(pts["top_direction"][j], dtype),
        "adversarial": lambda: _unit(jnp.asarray(pts["perturbation"][j], dtype)),
    }
    u = None if isinstance(plane.u, tuple) else fixed[plane.u]()
    v = None if isinstance(plane.v, tuple) else fixed[plane.v]()

    def draw(spec, other):
        c = spec[1]
        return random_orthogonal(other, key=kj if c is None else jax.random.fold_in(kj, c))

    if u is None:
        u = draw(plane.u, v)
    if v is None:
        v = draw(plane.v, u)
    center = x if plane.center == "x" else jnp.asarray(pts["z"][j], dtype)
    return center, u, v, plane.scale


def _unit(v):
    return v / jnp.linalg.norm(v)
