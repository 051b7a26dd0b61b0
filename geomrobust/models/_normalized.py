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
        self.classifier = as_classifier(classifier)
        mean, std = np.asarray(mean), np.asarray(std)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError(f"mean must be finite and std finite and > 0, got {mean}, {std}")
        dtype = jax.dtypes.canonicalize_dtype(np.result_type(mean.dtype, std.dtype, np.float32))
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
