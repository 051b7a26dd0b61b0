"""Building blocks shared by the model zoo: activations, pooling, config records.

Activations are looked up by name so that a model's configuration stays a JSON-serializable
dictionary (a checkpoint rebuilds the model from it). Curvature and Hessian measurements need a
twice-differentiable classifier: ``relu`` (the default, as in the published models) is
piecewise linear, so its input Hessian is zero almost everywhere; use ``softplus``, ``gelu``,
``tanh``, ``swish`` or ``elu`` (and average pooling) for a C² network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "ACTIVATIONS",
    "SMOOTH_ACTIVATIONS",
    "conv2d_im2col",
    "freeze_config",
    "get_activation",
    "init_kwargs",
    "pool2d",
    "resolve_dtype",
    "thaw_config",
]

ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
    "elu": jax.nn.elu,
}
SMOOTH_ACTIVATIONS = frozenset({"softplus", "gelu", "tanh", "swish"})


def _freeze(v):
    if isinstance(v, dict):
        return tuple((k, _freeze(x)) for k, x in v.items())
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


def freeze_config(config: dict) -> tuple:
    """A model configuration as a hashable tuple of ``(name, value)`` pairs (lists become
    tuples). Models store it in ``self.config``: it is part of the NNX graph definition, the
    jit cache key of every program, so it must be hashable (a dict is not)."""
    return tuple((str(k), _freeze(v)) for k, v in config.items())


def thaw_config(config) -> dict:
    """The JSON-ready dict of a configuration (frozen pairs or a mapping); tuples -> lists."""

    def thaw(v):
        return [thaw(x) for x in v] if isinstance(v, tuple | list) else v

    items = config.items() if hasattr(config, "items") else config
    return {k: thaw(v) for k, v in items}


def get_activation(name: str) -> Callable:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def resolve_dtype(param_dtype: str) -> np.dtype:
    """Parameter dtype from its name (``"float32"`` or ``"float64"``)."""
    if param_dtype not in ("float32", "float64"):
        raise ValueError(f"param_dtype must be 'float32' or 'float64', got {param_dtype!r}")
    return np.dtype(param_dtype)


INITS = ("flax", "pytorch")


def init_kwargs(init: str, fan_in: int) -> dict:
    """``kernel_init`` / ``bias_init`` keyword arguments of an ``nnx.Linear`` / ``nnx.Conv``.

    ``"flax"``: Flax's defaults (LeCun-normal kernel, zero bias), i.e. no arguments.
    ``"pytorch"``: PyTorch's defaults for ``nn.Linear`` and ``nn.Conv2d``, kernel and bias both
    uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (``kaiming_uniform_(a=sqrt(5))``), with
    ``fan_in`` the inputs of one output unit (``k·k·C_in`` for a convolution); use it to
    reproduce experiments run in PyTorch from their initialisation on (for example the NADs
    paper's Fourier accuracy maps, ``docs/conventions.md``).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "flax":
        return {}
    bound = 1.0 / np.sqrt(float(fan_in))

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return {"kernel_init": uniform, "bias_init": uniform}


def conv2d_im2col(x: jax.Array, kernel: jax.Array, bias, padding: str = "SAME") -> jax.Array:
    """Stride-1 2-D convolution (cross-correlation, NHWC, kernel HWIO) as one matrix product.

    The ``k_h·k_w`` shifted views of the (padded) input are concatenated along channels and
    multiplied by the kernel reshaped to ``(k_h·k_w·C_in, C_out)``: the same function as
    ``lax.conv_general_dilated`` (and ``nnx.Conv``) up to rounding, differentiable to any
    order (slices and a matmul). On the CPU, XLA's convolutions with few channels are slow,
    above all their weight gradients: an SGD step of a 32×32 LeNet on 128 images is 5-11×
    faster this way (``python -m benchmarks.bench_conv``; 13.6 vs 72.9 ms VALID, 18.8 vs
    206.9 ms SAME on 2 cores), a DeepFool-sized input VJP 1.2×; the programs are larger and
    compile more slowly (``LeNet(conv=...)``).
    """
    kh, kw, cin, cout = kernel.shape
    if padding != "VALID":
        pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (1, 1), padding)
        x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    views = [x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(views, axis=-1) if len(views) > 1 else views[0]
    y = patches @ kernel.reshape(kh * kw * cin, cout)
    return y if bias is None else y + bias


def pool2d(x: jax.Array, kind: str, window: int = 2) -> jax.Array:
    """``window``×``window`` pooling with stride ``window`` and SAME padding on NHWC input.

    SAME padding makes odd sizes work (7×7 -> 4×4) and never shrinks a side below 1, so the
    same architecture runs on 8×8, 28×28 and 32×32 inputs. Average pooling divides by the
    number of real (unpadded) entries in each window.
    """
    w = (window, window)
    if kind == "max":
        return nnx.max_pool(x, w, strides=w, padding="SAME")
    if kind == "avg":
        # window sums divided by the number of real entries per window (a static array, so
        # the output keeps the input dtype; Flax's count_include_pad=False divides by a
        # default-dtype array and returns float64 under jax_enable_x64)
        area = window * window
        sums = nnx.avg_pool(x, w, strides=w, padding="SAME") * area
        counts = np.outer(_same_counts(x.shape[1], window), _same_counts(x.shape[2], window))
        return sums / jnp.asarray(counts[None, :, :, None], x.dtype)
    raise ValueError(f"pool must be 'max' or 'avg', got {kind!r}")


def _same_counts(n: int, window: int) -> np.ndarray:
    """Real (unpadded) entries in each SAME-padded window of size = stride = ``window``."""
    out = -(-n // window)
    pad_before = max((out - 1) * window + window - n, 0) // 2
    starts = np.arange(out) * window - pad_before
    return np.minimum(starts + window, n) - np.maximum(starts, 0)


def as_shape(input_shape: Sequence[int], name: str = "input_shape") -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {shape}")
    return shape


def as_image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """``input_shape`` as ``(H, W, C)``; ``(H, W)`` is read as one channel."""
    shape = as_shape(input_shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise ValueError(f"{model} needs an image input_shape (H, W, C) or (H, W), got {shape}")
    return shape


def check_num_classes(num_classes) -> int:
    if not isinstance(num_classes, int | np.integer) or int(num_classes) < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return int(num_classes)


def int_tuple(value, name: str) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (JSON lists are accepted)."""
    if isinstance(value, int | np.integer):
        value = (value,)
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
    return out
