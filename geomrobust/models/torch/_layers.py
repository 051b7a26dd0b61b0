"""Layers shared by the PyTorch-layout architectures of :mod:`geomrobust.models.torch`.

Every family (one file each: ``wide_resnet``, ``preact_resnet``, ``torchvision_resnet``,
``dm_wide_resnet``, ``dm_preact_resnet``) only declares its layout -- the attribute names that
are its state-dict keys, its block, activation, widths and strides -- and is built and run by
the pieces here:

* :class:`Conv2d`, :class:`Linear`, :class:`BatchNorm2d` -- ``torch.nn``'s layers on NHWC
  arrays (BatchNorm in evaluation mode only);
* :class:`PreActBlock` -- the pre-activation residual block (He, Zhang, Ren & Sun, "Identity
  Mappings in Deep Residual Networks", ECCV 2016) that RobustBench's WideResNet and
  PreActResNet and DeepMind's WideResNet and PreActResNet all use, with each family's
  attribute names (so that a parameter's NNX path is its state-dict key), shortcut kind and
  padding convention as arguments;
* :class:`PostActBlock` -- torchvision's ``BasicBlock`` and ``Bottleneck`` (He, Zhang, Ren &
  Sun, "Deep Residual Learning for Image Recognition", CVPR 2016): a chain of convolutions
  with BatchNorm and ReLU, and a projection ``downsample``;
* :class:`ResidualNetwork` -- the one stem / stages / head builder and forward pass, driven by
  a family's :class:`Layout` and its :class:`Stage` plan (the first block of a stage strided);
* input preparation (:class:`ImageOptions`, :class:`ImageInput`, :func:`prepare_input`:
  layout checks, optional flattening, zero padding and per-channel normalisation) and the
  fixed-window pooling before the classifier.

Reading a state dict into these modules is :mod:`._import`, the same for every family: the
key of a parameter is its NNX path.

Conventions
-----------
* Input: images ``(N, H, W, C)`` (NHWC, the package convention) in pixel space; PyTorch's
  models take ``(N, C, H, W)``. Optional ``mean``/``std`` normalise the input inside the model.
  ``input_shape=(H, W, C)`` lets the model accept flattened ``(N, H*W*C)`` inputs too.
* Convolutions keep PyTorch's padding arithmetic: explicit zero padding (never ``"SAME"``,
  which pads a stride-2 convolution of an even size on one side only -- except where the
  PyTorch model pads that way itself, as DeepMind's models do with ``F.pad``), floor output
  sizes. Kernels are HWIO, dense kernels ``(in, out)``.
* BatchNorm is evaluation-only: it normalises with the running statistics (PyTorch's
  ``eps=1e-5``), so every example is processed independently and the model is a fixed
  function of its input. ``scale`` and ``bias`` are ``nnx.Param``; ``mean`` and ``var`` are
  ``nnx.BatchStat``.
* Every module records a hashable configuration in ``self.config``: a tuple of
  ``(name, value)`` pairs whose values are tuples or scalars, never a dict or a list, so the
  NNX graphdef can serve as a jit cache key.
* Parameters are initialised as in the PyTorch definitions (He-normal convolutions with
  fan-out, unit BatchNorm); these modules are meant to receive pretrained weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._layers import freeze_config, get_activation

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "Group",
    "ImageOptions",
    "Layout",
    "Linear",
    "PostActBlock",
    "PreActBlock",
    "ResidualNetwork",
    "Stage",
]

Config = tuple[tuple[str, Any], ...]

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_DTYPES = ("float32", "float64", "float16", "bfloat16")
_PRECISIONS = (None, "default", "high", "highest")


# ----------------------------------------------------------------------------- configuration


def _plain(value: Any) -> Any:
    """NumPy scalars as Python scalars, lists as tuples (for :func:`freeze_config`)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _config(**items: Any) -> Config:
    """A hashable configuration record: ``((name, value), ...)`` with frozen values."""
    out = freeze_config({k: _plain(v) for k, v in items.items()})
    hash(out)  # fail here, not at jit time, if a value is unhashable
    return out


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _int_tuple(value: Any, name: str, length: int) -> tuple[int, ...]:
    try:
        out = tuple(_positive_int(v, name) for v in value)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of {length} positive ints, got {value!r}"
        ) from None
    if len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}")
    return out


def _dtype_name(param_dtype: Any) -> str:
    try:
        name = np.dtype(param_dtype).name
    except TypeError:
        name = str(param_dtype)
    if name not in _DTYPES:
        raise ValueError(f"param_dtype must be one of {_DTYPES}, got {param_dtype!r}")
    return name


def _precision(precision: Any) -> str | None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    return precision


def _lax_precision(precision: str | None):
    return None if precision is None else jax.lax.Precision(precision)


def _normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Validated per-channel input normalisation (both None: none)."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (per-channel input normalisation) or neither")
    if mean is None:
        return None, None
    m = tuple(float(v) for v in np.ravel(np.asarray(mean, dtype=np.float64)))
    s = tuple(float(v) for v in np.ravel(np.asarray(std, dtype=np.float64)))
    if len(m) != channels or len(s) != channels:
        raise ValueError(
            f"mean and std need {channels} entries (one per input channel), got {m} and {s}"
        )
    if not all(math.isfinite(v) for v in m) or not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"mean must be finite and std finite and positive, got {m} and {s}")
    # the model computes (x - mean) / std in the input's dtype, float32 at the least: a std
    # that rounds to 0 or to a subnormal there, or whose reciprocal overflows, gives inf/NaN
    # logits at the first call, so refuse it here
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        s32 = np.asarray(s, np.float64).astype(np.float32)
        ok = np.isfinite(s32) & (s32 >= np.finfo(np.float32).tiny) & np.isfinite(1 / s32)
        bad_std = ~ok
        bad_mean = ~np.isfinite(np.asarray(m, np.float64).astype(np.float32))
    if bad_std.any() or bad_mean.any():
        raise ValueError(
            f"mean {m} and std {s} are not representable in float32 (std must lie in "
            f"[{np.finfo(np.float32).tiny:.3g}, {float(np.finfo(np.float32).max):.3g}] and "
            "|mean| below the latter): give the statistics of images in pixel units, e.g. "
            "CIFAR-10's std (0.2471, 0.2435, 0.2616)"
        )
    return m, s


def _padding(padding: Any) -> int | tuple[tuple[int, int], tuple[int, int]]:
    """A convolution's zero padding: an int (the same on every side, PyTorch's ``padding``) or
    ``((top, bottom), (left, right))`` (what ``F.pad`` before a ``padding=0`` convolution
    gives)."""
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        return int(padding)
    try:
        (t, b), (left, r) = padding
        pads = tuple(int(v) for v in (t, b, left, r))
    except (TypeError, ValueError):
        raise ValueError(
            f"padding must be an int or ((top, bottom), (left, right)), got {padding!r}"
        ) from None
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (pads[0], pads[1]), (pads[2], pads[3])


def _check_padding_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _input_shape(input_shape: Sequence[int] | None, channels: int) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    shape = _int_tuple(input_shape, "input_shape", 3)
    if shape[2] != channels:
        raise ValueError(
            f"input_shape must be (H, W, C) with C = in_channels = {channels}, got {shape}"
        )
    return shape


# ----------------------------------------------------------------------------- layers


def _common_dtype(*arrays: jax.Array) -> jnp.dtype:
    return jnp.result_type(*arrays)


def _numerics(param_dtype: str, precision: str | None) -> dict:
    """The ``param_dtype`` and ``precision`` entries of a layer's ``config``."""
    return dict(param_dtype=param_dtype, precision=precision)


class _KernelLayer(nnx.Module):
    """A layer ``op(x, kernel) + bias`` computed in the wider of the input's and the
    parameters' dtype (:class:`Conv2d`, :class:`Linear`); ``bias`` is None for no bias."""

    def _op(self, x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        dt = _common_dtype(x, kernel)
        y = self._op(x.astype(dt), kernel.astype(dt), _lax_precision(self.precision))
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y


class Conv2d(_KernelLayer):
    """``torch.nn.Conv2d`` on NHWC input: square kernel, zero padding, floor sizes.

    ``padding`` is PyTorch's (an int, the same on all four sides) or ``((top, bottom), (left,
    right))`` for a model that pads with ``F.pad`` itself (DeepMind's ``(0, 1, 0, 1)`` before a
    stride-2 convolution).

    ``kernel`` is HWIO (PyTorch's ``weight`` is OIHW); ``bias`` is None when ``bias=False``.
    Initialisation: He-normal with fan-out, ``std = sqrt(2 / (out_channels * k * k))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | tuple = 0,
        groups: int = 1,
        bias: bool = False,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        padding = _padding(padding)
        dt = jnp.dtype(param_dtype)
        std = math.sqrt(2.0 / (out_channels * kernel_size * kernel_size))
        shape = (kernel_size, kernel_size, in_channels // groups, out_channels)
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape, dt))
        self.bias = nnx.Param(jnp.zeros((out_channels,), dt)) if bias else None
        self.stride = int(stride)
        self.padding = padding
        self.groups = int(groups)
        self.precision = precision
        self.config = _config(
            name="conv2d",
            channels=(in_channels, out_channels),
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=bias,
            **_numerics(param_dtype, precision),
        )

    def _op(self, x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
        p = self.padding
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)) if isinstance(p, int) else p,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=precision,
        )


class Linear(_KernelLayer):
    """``torch.nn.Linear``: ``x @ kernel + bias`` with ``kernel`` ``(in, out)`` (PyTorch's
    ``weight`` is ``(out, in)``). Initialisation: PyTorch's ``U(-1/sqrt(in), 1/sqrt(in))``
    (bias zero when ``zero_bias``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        zero_bias: bool = False,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        dt = jnp.dtype(param_dtype)
        bound = 1.0 / math.sqrt(in_features)
        kw, kb = jax.random.split(rngs.params())
        shape = (in_features, out_features)
        self.kernel = nnx.Param(jax.random.uniform(kw, shape, dt, -bound, bound))
        if not bias:
            self.bias = None
        elif zero_bias:
            self.bias = nnx.Param(jnp.zeros((out_features,), dt))
        else:
            self.bias = nnx.Param(jax.random.uniform(kb, (out_features,), dt, -bound, bound))
        self.precision = precision
        self.config = _config(
            name="linear", features=shape, bias=bias, **_numerics(param_dtype, precision)
        )

    def _op(self, x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
        return jnp.matmul(x, kernel, precision=precision)


class BatchNorm2d(nnx.Module):
    """``torch.nn.BatchNorm2d`` in evaluation mode, over the last (channel) axis.

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the running statistics
    ``mean``/``var`` (``nnx.BatchStat``) and the affine ``scale``/``bias`` (``nnx.Param``),
    evaluated as PyTorch does, ``x * a + (bias - mean * a)`` with ``a = scale / sqrt(var +
    eps)``. There is no training mode: the layer never uses batch statistics.
    """

    def __init__(self, num_features: int, *, eps: float = BN_EPS, param_dtype: str = "float32"):
        dt = jnp.dtype(param_dtype)
        self.scale = nnx.Param(jnp.ones((num_features,), dt))
        self.bias = nnx.Param(jnp.zeros((num_features,), dt))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), dt))
        self.var = nnx.BatchStat(jnp.ones((num_features,), dt))
        self.eps = float(eps)
        self.config = _config(
            name="batch_norm2d", num_features=num_features, eps=eps, param_dtype=param_dtype
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        scale, bias, mean, var = (v[...] for v in (self.scale, self.bias, self.mean, self.var))
        dt = _common_dtype(x, scale)
        a = scale.astype(dt) * jax.lax.rsqrt(var.astype(dt) + jnp.asarray(self.eps, dt))
        b = bias.astype(dt) - mean.astype(dt) * a
        return x.astype(dt) * a + b


def _max_pool(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
    """``torch.nn.MaxPool2d(window, stride, padding)`` on NHWC (pads with -inf, floor sizes).

    The initial value is a Python scalar, so JAX recognises the max monoid and the pooling is
    differentiable (an array created under a trace would make it a generic, non-differentiable
    reduction)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), pad
    )


def _avg_pool(x: jax.Array, window: int) -> jax.Array:
    """``F.avg_pool2d(x, window)`` on NHWC: stride ``window``, no padding, floor sizes."""
    sums = jax.lax.reduce_window(  # a Python-scalar initial value: differentiable (see above)
        x, 0.0, jax.lax.add, (1, window, window, 1), (1, window, window, 1), "VALID"
    )
    return sums / jnp.asarray(window * window, x.dtype)


def _flatten_nchw(x: jax.Array) -> jax.Array:
    """``x.view(N, -1)`` of the NCHW tensor PyTorch holds (channels vary slowest)."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class ImageOptions(TypedDict, total=False):
    """The keyword options of every family's input (``**image`` of each constructor).

    Attributes
    ----------
    in_channels : image channels (default 3).
    mean, std : per-channel input normalisation applied first, both or neither (default none;
        DeepMind's families default to CIFAR-10's statistics).
    input_shape : ``(H, W, C)`` to accept flattened inputs too (default None).
    param_dtype : ``"float32"`` (default), ``"float64"``, ``"float16"`` or ``"bfloat16"``.
    precision : matmul/convolution precision (None, the default: JAX's; ``"highest"`` for full
        float32 accuracy on accelerators).
    """

    in_channels: int
    mean: Sequence[float] | None
    std: Sequence[float] | None
    input_shape: Sequence[int] | None
    param_dtype: str
    precision: str | None


_IMAGE_DEFAULTS = dict(
    in_channels=3, mean=None, std=None, input_shape=None, param_dtype="float32", precision=None
)


class ImageInput(NamedTuple):
    """The validated input options every family shares (recorded in its ``config``)."""

    in_channels: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_shape: tuple[int, ...] | None
    param_dtype: str
    precision: str | None
    padding: int | None = None

    @classmethod
    def check(cls, model: str, options: dict, *, padding: int | None = None) -> ImageInput:
        """The :class:`ImageOptions` ``options`` of ``model`` validated, with the defaults
        filled in; ``padding`` pixels of zeros around the image (DeepMind's families; None
        for a family without that option)."""
        unknown = sorted(set(options) - set(_IMAGE_DEFAULTS))
        if unknown:
            raise TypeError(
                f"{model} got unexpected keyword argument(s) {', '.join(unknown)}; its input "
                f"options are {', '.join(_IMAGE_DEFAULTS)}"
            )
        o = {**_IMAGE_DEFAULTS, **options}
        in_channels = _positive_int(o["in_channels"], "in_channels")
        mean, std = _normalisation(o["mean"], o["std"], in_channels)
        return cls(
            in_channels,
            mean,
            std,
            _input_shape(o["input_shape"], in_channels),
            _dtype_name(o["param_dtype"]),
            _precision(o["precision"]),
            None if padding is None else _check_padding_int(padding, "padding"),
        )

    def layer_kwargs(self, rngs: nnx.Rngs) -> dict:
        """Keyword arguments of :class:`Conv2d` and :class:`Linear`."""
        return dict(param_dtype=self.param_dtype, precision=self.precision, rngs=rngs)

    def config(self) -> dict:
        """The options as ``config`` entries (``padding`` only where a family has it)."""
        out = self._asdict()
        if self.padding is None:
            out.pop("padding")
        return out

    def __call__(self, x: jax.Array, model: str) -> jax.Array:
        """``x`` checked, unflattened, zero-padded and normalised (see :func:`prepare_input`)."""
        return prepare_input(x, self, model)


def prepare_input(x: jax.Array, options: ImageInput, model: str) -> jax.Array:
    """NHWC images checked (a clear error for NCHW), reshaped from flat vectors when the model
    has an ``input_shape``, zero-padded by ``padding`` pixels on each side (DeepMind's models)
    and normalised with the per-channel ``mean``/``std``."""
    x = jnp.asarray(x)
    channels = options.in_channels
    if options.input_shape is not None:
        x = x.reshape(x.shape[0], *options.input_shape)
    if x.ndim != 4:
        raise ValueError(f"{model} expects NHWC images (N, H, W, C), got shape {x.shape}")
    if x.shape[-1] != channels:
        hint = (
            "; it looks like NCHW: transpose with x.transpose(0, 2, 3, 1)"
            if x.shape[1] == channels
            else ""
        )
        raise ValueError(
            f"{model} expects NHWC images with C={channels} channels, got shape {x.shape}{hint}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if options.padding:
        p = options.padding
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if options.mean is not None:
        x = (x - jnp.asarray(options.mean, x.dtype)) / jnp.asarray(options.std, x.dtype)
    return x


def _pooled_vector(x: jax.Array, window: int, model: str, hw: tuple[int, int]) -> jax.Array:
    """Fixed-window average pooling that must leave one position (as the PyTorch model needs)."""
    if x.shape[1] < window or x.shape[2] < window:
        raise ValueError(
            f"{model} pools its final {x.shape[1]}x{x.shape[2]} feature map with a fixed "
            f"{window}x{window} window, which needs a larger image than {hw[0]}x{hw[1]} "
            "(it is defined for 32x32 images)"
        )
    x = _avg_pool(x, window)
    if x.shape[1:3] != (1, 1):
        raise ValueError(
            f"{model} pools its final feature map with a fixed {window}x{window} window; an "
            f"{hw[0]}x{hw[1]} image leaves {x.shape[1]}x{x.shape[2]} positions, which the "
            "PyTorch model cannot classify (it is defined for 32x32 images)"
        )
    return _flatten_nchw(x)


def pooled_logits(x: jax.Array, window: int, model: str, hw, fc: Linear) -> jax.Array:
    """``fc`` of the ``window``x``window``-average-pooled final features (one position)."""
    return fc(_pooled_vector(x, window, model, hw))


# ----------------------------------------------------------------------------- blocks


def _projects(in_planes: int, out_planes: int, stride: int) -> bool:
    """A block needs a projection shortcut where it changes the stride or the width."""
    return stride != 1 or in_planes != out_planes


class PreActBlock(nnx.Module):
    """The pre-activation residual block (He et al., ECCV 2016) of four PyTorch families.

    ``a = act(bn_a(x))``, ``h = conv_b(act(bn_b(conv_a(a))))`` (3x3 convolutions, the stride on
    ``conv_a``), output ``h + shortcut``: ``x`` when the shape is kept, else a strided
    projection ``shortcut_conv`` of ``a`` (``shortcut_from="act"``) or of ``x``
    (``shortcut_from="input"``).

    Parameters
    ----------
    in_planes, out_planes, stride : channels and stride.
    names : the five attribute names ``(bn_a, conv_a, bn_b, conv_b, shortcut)`` of the PyTorch
        block (its state-dict keys): RobustBench's WRN ``("bn1", "conv1", "bn2", "conv2",
        "convShortcut")``, DeepMind's ``("batchnorm_0", "conv_0", "batchnorm_1", "conv_1",
        "shortcut")``, ...
    shortcut_from : ``"act"`` or ``"input"``.
    shortcut_kernel : 1 (RobustBench, DeepMind's WRN) or 3 (DeepMind's PreActResNet).
    shortcut_in_list : the projection sits in an ``nn.Sequential`` (key ``shortcut.0.weight``).
    padding : ``"torch"`` (symmetric, PyTorch's ``padding=k // 2``) or ``"dm"`` (DeepMind's
        ``F.pad`` before the strided convolutions: ``(1, 1, 1, 1)`` at stride 1, ``(0, 1, 0,
        1)`` at stride 2, TensorFlow's ``"SAME"`` on even sizes).
    activation : a name of :data:`geomrobust.models.ACTIVATIONS` (``"relu"``, ``"swish"``:
        PyTorch's ``SiLU``).
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        *,
        names: tuple[str, str, str, str, str],
        shortcut_from: str = "act",
        shortcut_kernel: int = 1,
        shortcut_in_list: bool = False,
        padding: str = "torch",
        activation: str = "relu",
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        if shortcut_from not in ("act", "input"):
            raise ValueError(f"shortcut_from must be 'act' or 'input', got {shortcut_from!r}")
        if padding not in ("torch", "dm"):
            raise ValueError(f"padding must be 'torch' or 'dm', got {padding!r}")
        get_activation(activation)
        names = tuple(str(n) for n in names)
        if len(names) != 5:
            raise ValueError(f"names must be five attribute names, got {names!r}")
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.names = names
        self.activation = activation
        self.shortcut_from = shortcut_from
        setattr(self, names[0], BatchNorm2d(in_planes, param_dtype=param_dtype))
        setattr(
            self,
            names[1],
            Conv2d(in_planes, out_planes, 3, stride=stride, padding=_pad(3, stride, padding), **kw),
        )
        setattr(self, names[2], BatchNorm2d(out_planes, param_dtype=param_dtype))
        setattr(self, names[3], Conv2d(out_planes, out_planes, 3, padding=1, **kw))
        if _projects(in_planes, out_planes, stride):
            k = shortcut_kernel
            proj = Conv2d(
                in_planes, out_planes, k, stride=stride, padding=_pad(k, stride, padding), **kw
            )
            setattr(self, names[4], nnx.List([proj]) if shortcut_in_list else proj)
        else:
            setattr(self, names[4], None)
        self.config = _config(
            name="preact_block",
            planes=(in_planes, out_planes, stride),
            names=names,
            shortcut=(shortcut_from, shortcut_kernel, bool(shortcut_in_list)),
            padding=padding,
            activation=activation,
            **_numerics(param_dtype, precision),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        bn_a, conv_a, bn_b, conv_b, shortcut = (getattr(self, n) for n in self.names)
        act = get_activation(self.activation)
        a = act(bn_a(x))
        h = conv_b(act(bn_b(conv_a(a))))
        if shortcut is None:
            return x + h
        proj = shortcut[0] if isinstance(shortcut, nnx.List) else shortcut
        return proj(a if self.shortcut_from == "act" else x) + h


def _pad(kernel: int, stride: int, convention: str):
    """The zero padding of a ``kernel``x``kernel`` convolution at ``stride``: PyTorch's
    ``kernel // 2`` on every side, or DeepMind's ``F.pad`` (``(1, 1, 1, 1)`` at stride 1,
    ``(0, 1, 0, 1)`` at stride 2; none for a 1x1 kernel)."""
    if convention == "torch":
        return kernel // 2
    if kernel == 1:
        return 0
    if stride == 1:
        return 1
    if stride == 2:
        return (0, 1), (0, 1)
    raise ValueError(f"DeepMind's blocks support strides 1 and 2, got {stride}")


class PostActBlock(nnx.Module):
    """torchvision's residual blocks (He et al., CVPR 2016): ``BasicBlock`` and ``Bottleneck``.

    Convolutions ``conv1, conv2, ...``, each followed by its BatchNorm ``bn1, bn2, ...`` and,
    except the last, a ReLU; the output is ``relu(h + identity)``, where ``identity`` is ``x``
    or, where the block changes the stride or the width, ``downsample`` of ``x`` (a strided
    1x1 convolution ``downsample.0`` and a BatchNorm ``downsample.1``).

    Parameters
    ----------
    channels : ``(in, c1, ..., ck)``: the block's input channels and each convolution's output
        channels.
    kernels : the ``k`` kernel sizes (zero padding ``kernel // 2``): ``(3, 3)`` for
        ``BasicBlock``, ``(1, 3, 1)`` for ``Bottleneck``.
    stride : the block's stride.
    stride_at : the (0-based) convolution that has the stride and the ``groups``: the first
        for ``BasicBlock``, the 3x3 one for ``Bottleneck`` (torchvision's "ResNet v1.5").
    groups : grouped convolution of that layer (ResNeXt).
    param_dtype, precision, rngs : as :class:`Conv2d`.
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernels: Sequence[int],
        stride: int,
        *,
        stride_at: int,
        groups: int = 1,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        channels, kernels = tuple(channels), tuple(kernels)
        if len(channels) != len(kernels) + 1 or not 0 <= stride_at < len(kernels):
            raise ValueError(
                f"a block of {len(kernels)} convolutions needs {len(kernels) + 1} channel "
                f"counts and 0 <= stride_at < {len(kernels)}, got channels {channels} and "
                f"stride_at {stride_at}"
            )
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.depth = len(kernels)
        for i, k in enumerate(kernels):
            s, g = (stride, groups) if i == stride_at else (1, 1)
            conv = Conv2d(channels[i], channels[i + 1], k, stride=s, padding=k // 2, groups=g, **kw)
            setattr(self, f"conv{i + 1}", conv)
            setattr(self, f"bn{i + 1}", BatchNorm2d(channels[i + 1], param_dtype=param_dtype))
        c_in, c_out = channels[0], channels[-1]
        if _projects(c_in, c_out, stride):
            conv = Conv2d(c_in, c_out, 1, stride=stride, **kw)
            self.downsample = nnx.List([conv, BatchNorm2d(c_out, param_dtype=param_dtype)])
        else:
            self.downsample = None
        self.config = _config(
            name="post_act_block",
            channels=channels,
            kernels=kernels,
            stride=(stride, stride_at, groups),
            **_numerics(param_dtype, precision),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i in range(1, self.depth + 1):
            h = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(h))
            if i < self.depth:
                h = jax.nn.relu(h)
        identity = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return jax.nn.relu(h + identity)


# ----------------------------------------------------------------------------- networks


class Group(nnx.Module):
    """A stage of blocks held as ``self.<field>`` (an ``nn.Sequential`` inside a module:
    RobustBench's ``NetworkBlock.layer``, DeepMind's ``_BlockGroup.block``)."""

    def __init__(self, blocks: list[nnx.Module], *, field: str):
        self.field = str(field)
        setattr(self, self.field, nnx.List(blocks))
        self.config = _config(name="group", field=self.field, n=len(blocks))

    def __call__(self, x: jax.Array) -> jax.Array:
        return run_stage(getattr(self, self.field), x)


def run_stage(blocks, x: jax.Array) -> jax.Array:
    """``x`` through the ``blocks`` in turn."""
    for block in blocks:
        x = block(x)
    return x


class Stage(NamedTuple):
    """One stage: ``blocks`` blocks, the first from ``c_in`` to ``c_out`` channels at
    ``stride``, the others keeping ``c_out`` at stride 1 (every family's ``_make_layer``);
    ``name`` is its attribute (None where the layout keeps all stages in one list)."""

    name: str | None
    blocks: int
    c_in: int
    c_out: int
    stride: int


class Layout(NamedTuple):
    """What a family's PyTorch definition names and fixes; its attribute names are the
    state-dict keys (:func:`~geomrobust.models.torch.from_torch` reads them off the model).

    Attributes
    ----------
    model : the name in error messages.
    stem : the first convolution.
    stages : one attribute per stage, or one name: a list of all the stages (DeepMind's WRN).
    classifier : the final ``Linear``.
    norm : the BatchNorm before the pooling (followed by the activation), or None.
    pool : the fixed window of the average pooling (it must leave one position), or None:
        global average pooling (torchvision's ``AdaptiveAvgPool2d((1, 1))``).
    group : the field of the module that holds a stage's blocks (RobustBench's
        ``NetworkBlock.layer``, DeepMind's ``_BlockGroup.block``), or None: a bare list.
    stem_conv : kernel size, stride and padding of the stem convolution.
    stem_norm : torchvision's ImageNet stem: the stem convolution is followed by this
        BatchNorm, a ReLU and a 3x3 max pooling of stride 2 (None: nothing).
    """

    model: str
    stem: str
    stages: tuple[str, ...] | str
    classifier: str
    norm: str | None = None
    pool: int | None = None
    group: str | None = None
    stem_conv: tuple[int, int, int] = (3, 1, 1)
    stem_norm: str | None = None


class ResidualNetwork(nnx.Module):
    """The network every family is: input preparation, a stem, stages of residual blocks, an
    optional BatchNorm and activation, average pooling and a linear classifier.

    A family sets ``layout`` (a :class:`Layout`), checks its constructor's arguments and calls
    :meth:`build` with its input options, its block and its stages (:meth:`plan`); the forward
    pass is this class's.
    """

    layout: Layout

    def check_input(self, options: dict, *, padding: int | None = None) -> ImageInput:
        """The family's :class:`ImageOptions` validated (see :meth:`ImageInput.check`)."""
        return ImageInput.check(self.layout.model, options, padding=padding)

    def plan(
        self,
        in_planes: int,
        widths: Sequence[int],
        num_blocks: Sequence[int],
        strides: Sequence[int],
    ) -> list[Stage]:
        """The stages of ``num_blocks`` blocks with ``widths`` output channels at ``strides``
        after a stem of ``in_planes`` channels, named as ``layout.stages``."""
        names = self.layout.stages
        if isinstance(names, str):
            names = (None,) * len(widths)
        out, c_in = [], in_planes
        for name, c_out, n, s in zip(names, widths, num_blocks, strides, strict=True):
            out.append(Stage(name, n, c_in, c_out, s))
            c_in = c_out
        return out

    def build(
        self,
        image: ImageInput,
        make_block: Callable[..., nnx.Module],
        plan: Sequence[Stage],
        num_classes: int,
        *,
        config: dict,
        rngs: nnx.Rngs,
        activation: str = "relu",
        norm: bool = True,
        **classifier: Any,
    ) -> None:
        """Create the layers, in the PyTorch definition's order (the initialisation draws
        its random numbers in that order), and record the configuration.

        Parameters
        ----------
        image : the validated input options (:meth:`check_input`).
        make_block : ``make_block(c_in, c_out, stride, param_dtype=..., precision=...,
            rngs=...)``, one residual block.
        plan : the stages, in order (from :meth:`plan`).
        num_classes : number of logits.
        config : the family's configuration (``name`` first); ``self.config`` is it followed
            by the input options.
        rngs : ``nnx.Rngs`` for the initialisation.
        activation : after the final BatchNorm.
        norm : create the final BatchNorm (``layout.norm``; False: that attribute is None).
        **classifier : options of the classifier's :class:`Linear` (``bias``, ``zero_bias``).
        """
        layout = self.layout
        kw = image.layer_kwargs(rngs)
        dt = image.param_dtype
        self.input = image
        self.activation = activation
        kernel, stride, padding = layout.stem_conv
        stem_width = plan[0].c_in
        stem = Conv2d(image.in_channels, stem_width, kernel, stride=stride, padding=padding, **kw)
        setattr(self, layout.stem, stem)
        if layout.stem_norm is not None:
            setattr(self, layout.stem_norm, BatchNorm2d(stem_width, param_dtype=dt))
        stages = []
        for s in plan:
            blocks = [
                make_block(s.c_in if i == 0 else s.c_out, s.c_out, s.stride if i == 0 else 1, **kw)
                for i in range(s.blocks)
            ]
            group = layout.group
            stages.append(nnx.List(blocks) if group is None else Group(blocks, field=group))
        if isinstance(layout.stages, str):
            setattr(self, layout.stages, nnx.List(stages))
        else:
            for s, module in zip(plan, stages, strict=True):
                setattr(self, s.name, module)
        width = plan[-1].c_out
        if layout.norm is not None:
            setattr(self, layout.norm, BatchNorm2d(width, param_dtype=dt) if norm else None)
        setattr(self, layout.classifier, Linear(width, num_classes, **classifier, **kw))
        self.config = _config(**config, **image.config())

    def stages(self) -> list:
        """The block lists of the stages the forward pass runs, in order."""
        layout = self.layout
        if isinstance(layout.stages, str):
            modules = list(getattr(self, layout.stages))
        else:
            modules = [getattr(self, name) for name in layout.stages]
        return [m if layout.group is None else getattr(m, layout.group) for m in modules]

    def __call__(self, x: jax.Array) -> jax.Array:
        layout = self.layout
        x = self.input(x, layout.model)
        hw = x.shape[1:3]
        x = getattr(self, layout.stem)(x)
        if layout.stem_norm is not None:
            x = _max_pool(jax.nn.relu(getattr(self, layout.stem_norm)(x)), 3, 2, 1)
        for blocks in self.stages():
            x = run_stage(blocks, x)
        norm = None if layout.norm is None else getattr(self, layout.norm)
        if norm is not None:
            x = get_activation(self.activation)(norm(x))
        classifier = getattr(self, layout.classifier)
        if layout.pool is None:
            return classifier(x.mean(axis=(1, 2)))
        return pooled_logits(x, layout.pool, layout.model, hw, classifier)
