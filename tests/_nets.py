"""Small smooth classifiers written by hand in plain JAX, independent of geomrobust.models.

Used by the operator and geometry tests, so that they check the operators on "any JAX
callable" (docs/methods.md), not only on this package's models.
"""

import jax
import jax.numpy as jnp


def mlp(key, input_shape, num_classes, width=16, depth=2, dtype=jnp.float32):
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

    def logits_fn(x):
        h = x.reshape(x.shape[0], -1)
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return h

    return logits_fn


def convnet(key, input_shape, num_classes, channels=4, dtype=jnp.float32):
    """A softplus conv net on NHWC images: conv 3x3 -> softplus -> mean-pool -> dense."""
    h, w, c = input_shape
    k1, k2 = jax.random.split(key)
    kernel = jax.random.normal(k1, (3, 3, c, channels), dtype) / jnp.asarray(3.0 * c, dtype)
    dense = jax.random.normal(k2, (h * w * channels // 4, num_classes), dtype) * 0.3

    def logits_fn(x):
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = jax.nn.softplus(y)
        y = y.reshape(x.shape[0], h // 2, 2, w // 2, 2, channels).mean(axis=(2, 4))
        return y.reshape(x.shape[0], -1) @ dense

    return logits_fn


def affine(w, b):
    """Affine classifier ``x -> x W + b`` with ``W`` of shape ``(D, K)``."""

    def logits_fn(x):
        return x.reshape(x.shape[0], -1) @ w + b

    return logits_fn
