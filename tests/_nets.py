"""Small smooth classifiers written by hand in plain JAX, independent of geomrobust.models.

Used by the operator and geometry tests, so that they check the operators on "any JAX
model" (docs/methods.md), not only on this package's models. Each returns a
:class:`geomrobust.Classifier` of a module-level ``apply`` and its weights: the weights are
arguments of every compiled program, so the tests of one architecture, shape and dtype share
their programs (in a worker, and across workers through the persistent compilation cache)
whatever their seeds. ``plain=True`` gives the same network as a plain closure over its
weights (the "any callable" form; tests/test_classifiers.py covers every form).
"""

import jax
import jax.numpy as jnp

from geomrobust import Classifier


def _mlp_apply(params, x):
    h = x.reshape(x.shape[0], -1)
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return h


def _convnet_apply(params, x):
    kernel, dense = params
    n, h, w, _ = x.shape
    channels = kernel.shape[-1]
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = jax.nn.softplus(y)
    y = y.reshape(n, h // 2, 2, w // 2, 2, channels).mean(axis=(2, 4))
    return y.reshape(n, -1) @ dense


def _affine_apply(params, x):
    w, b = params
    return x.reshape(x.shape[0], -1) @ w + b


def _form(apply, params, plain):
    if plain:
        return lambda x: apply(params, x)
    return Classifier(apply, params)


def mlp(key, input_shape, num_classes, width=16, depth=2, dtype=jnp.float32, plain=False):
    """A tanh MLP ``(N, *input_shape) -> (N, K)`` with random weights of ``dtype``."""
    d = 1
    for s in input_shape:
        d *= s
    sizes = [d] + [width] * depth + [num_classes]
    keys = jax.random.split(key, len(sizes))
    params = [
        (
            jax.random.normal(k, (a, b), dtype) / jnp.sqrt(a).astype(dtype),
            0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,), dtype),
        )
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    return _form(_mlp_apply, params, plain)


def convnet(key, input_shape, num_classes, channels=4, dtype=jnp.float32, plain=False):
    """A softplus conv net on NHWC images: conv 3x3 -> softplus -> mean-pool -> dense."""
    h, w, c = input_shape
    k1, k2 = jax.random.split(key)
    kernel = jax.random.normal(k1, (3, 3, c, channels), dtype) / jnp.asarray(3.0 * c, dtype)
    dense = jax.random.normal(k2, (h * w * channels // 4, num_classes), dtype) * 0.3
    return _form(_convnet_apply, (kernel, dense), plain)


def affine(w, b, plain=False):
    """Affine classifier ``x -> x W + b`` with ``W`` of shape ``(D, K)``."""
    return _form(_affine_apply, (w, b), plain)
