"""Input normalization as part of the classifier, so that geometry is measured in pixel space.

Pretrained networks expect normalized inputs ``(x - mean) / std``, while margins, curvatures
and box bounds are meaningful in the space of the images (pixels in ``[0, 1]``). Wrapping the
network with its normalization makes the classifier a function of the images: every
distance the package reports is then in pixel units, and ``bounds=(0, 1)`` is the true image
box. (Measuring on normalized inputs instead would stretch each channel by ``1/std``.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._classifier import as_classifier

__all__ = ["Normalized"]


def _input_shape(classifier) -> tuple[int, ...] | None:
    """The per-example input shape a model records in its configuration (None: unknown)."""
    config = getattr(classifier, "config", None)
    try:
        shape = dict(config).get("input_shape") if config is not None else None
        return None if shape is None else tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        return None


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        return None


@jax.tree_util.register_pytree_node_class
class Normalized:
    """``Normalized(classifier, mean, std)(x) = classifier((x - mean) / std)``.

    Parameters
    ----------
    classifier : any classifier :func:`geomrobust.as_classifier` accepts (an NNX module, a
        :class:`~geomrobust.Classifier`, an Equinox module, a function).
    mean, std : scalars or arrays broadcastable to one example, usually per channel
        ``(C,)`` for NHWC images (e.g. CIFAR-10's ``(0.4914, 0.4822, 0.4465)`` and
        ``(0.2471, 0.2435, 0.2616)``); ``std > 0``. They are leaves of the pytree (traced,
        so one compilation serves every normalization of the same shape).

    A pytree: its leaves are the wrapped classifier's weights, ``mean`` and ``std``.
    """

    __slots__ = ("__weakref__", "classifier", "mean", "std")

    def __init__(self, classifier, mean, std):
        shape = _input_shape(classifier)
        self.classifier = as_classifier(classifier)
        mean, std = np.asarray(mean), np.asarray(std)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError(f"mean must be finite and std finite and > 0, got {mean}, {std}")
        dtype = jax.dtypes.canonicalize_dtype(np.result_type(mean.dtype, std.dtype, np.float32))
        # (x - mean) / std runs in the input's dtype, float32 at the least: a std that is
        # subnormal or 0 there, or whose reciprocal overflows, makes every logit inf/NaN
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            s32 = np.abs(std.astype(np.float64)).astype(np.float32)
            ok = np.isfinite(s32) & (s32 >= np.finfo(np.float32).tiny) & np.isfinite(1 / s32)
            bad = ~ok | ~np.isfinite(mean.astype(np.float64).astype(np.float32)).all()
        if np.any(bad):
            raise ValueError(
                f"mean {mean.tolist()} and std {std.tolist()} are not usable in float32 (std "
                f"in [{np.finfo(np.float32).tiny:.3g}, {float(np.finfo(np.float32).max):.3g}]"
                ", |mean| below the latter): give the statistics of images in pixel units"
            )
        for name, v in (("mean", mean), ("std", std)):
            if shape is not None and v.ndim and _broadcast(v.shape, shape) != shape:
                raise ValueError(
                    f"{name} has shape {v.shape}, which does not broadcast to the "
                    f"classifier's input shape {shape} (NHWC images: one value per channel, "
                    f"shape ({shape[-1]},))"
                )
        self.mean = jnp.asarray(mean, dtype)
        self.std = jnp.asarray(std, dtype)

    def __call__(self, x):
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return self.classifier((x - mean) / std)

    def tree_flatten(self):
        return (self.classifier, self.mean, self.std), None

    @classmethod
    def tree_unflatten(cls, _, children):
        obj = object.__new__(cls)
        obj.classifier, obj.mean, obj.std = children
        return obj

    def __repr__(self) -> str:
        return f"Normalized({self.classifier!r}, mean={np.asarray(self.mean).tolist()}, " \
               f"std={np.asarray(self.std).tolist()})"  # fmt: skip
