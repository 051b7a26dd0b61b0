"""Layers shared by the PyTorch-layout architectures of :mod:`geomrobust.models.torch`.

Every family (one file each: ``wide_resnet``, ``preact_resnet``, ``torchvision_resnet``,
``dm_wide_resnet``, ``dm_preact_resnet``) is assembled from the pieces here:

* :class:`Conv2d`, :class:`Linear`, :class:`BatchNorm2d` -- ``torch.nn``'s layers on NHWC
  arrays (BatchNorm in evaluation mode only);
* :class:`PreActBlock` -- the pre-activation residual block (He, Zhang, Ren & Sun, "Identity
  Mappings in Deep Residual Networks", ECCV 2016) that RobustBench's WideResNet and
  PreActResNet and DeepMind's WideResNet and PreActResNet all use, with each family's
  attribute names (so that a parameter's NNX path is its state-dict key), shortcut kind and
  padding convention as arguments;
* :class:`Group` and :func:`stage` -- a stage of blocks, the first one strided;
* input preparation (:func:`prepare_input`: layout checks, optional flattening, zero padding
  and per-channel normalisation) and the fixed-window pooling before the classifier.

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
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._layers import freeze_config, get_activation

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "Group",
    "Linear",
    "PreActBlock",
    "stage",
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


class Conv2d(nnx.Module):
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
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=bias,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        dt = _common_dtype(x, kernel)
        p = self.padding
        pads = ((p, p), (p, p)) if isinstance(p, int) else p
        y = jax.lax.conv_general_dilated(
            x.astype(dt),
            kernel.astype(dt),
            window_strides=(self.stride, self.stride),
            padding=pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=_lax_precision(self.precision),
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y


class Linear(nnx.Module):
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
            name="linear",
            in_features=in_features,
            out_features=out_features,
            bias=bias,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        dt = _common_dtype(x, kernel)
        y = jnp.matmul(x.astype(dt), kernel.astype(dt), precision=_lax_precision(self.precision))
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y


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


class ImageInput(NamedTuple):
    """The validated input options every family shares (recorded in its ``config``)."""

    in_channels: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_shape: tuple[int, ...] | None
    param_dtype: str
    precision: str | None
    padding: int = 0

    @classmethod
    def check(
        cls, in_channels, mean, std, input_shape, param_dtype, precision, padding=0
    ) -> ImageInput:
        in_channels = _positive_int(in_channels, "in_channels")
        mean, std = _normalisation(mean, std, in_channels)
        return cls(
            in_channels,
            mean,
            std,
            _input_shape(input_shape, in_channels),
            _dtype_name(param_dtype),
            _precision(precision),
            _check_padding_int(padding, "padding"),
        )

    def layer_kwargs(self, rngs: nnx.Rngs) -> dict:
        """Keyword arguments of :class:`Conv2d` and :class:`Linear`."""
        return dict(param_dtype=self.param_dtype, precision=self.precision, rngs=rngs)

    def config(self) -> dict:
        """The options as ``config`` entries (``padding`` only where a family has it)."""
        out = self._asdict()
        if not self.padding:
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
        if stride != 1 or in_planes != out_planes:
            k = shortcut_kernel
            proj = Conv2d(
                in_planes, out_planes, k, stride=stride, padding=_pad(k, stride, padding), **kw
            )
            setattr(self, names[4], nnx.List([proj]) if shortcut_in_list else proj)
        else:
            setattr(self, names[4], None)
        self.config = _config(
            name="preact_block",
            in_planes=in_planes,
            out_planes=out_planes,
            stride=stride,
            names=names,
            shortcut_from=shortcut_from,
            shortcut_kernel=shortcut_kernel,
            shortcut_in_list=bool(shortcut_in_list),
            padding=padding,
            activation=activation,
            param_dtype=param_dtype,
            precision=precision,
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


class Group(nnx.Module):
    """A stage of blocks held as ``self.<field>`` (an ``nn.Sequential`` inside a module:
    RobustBench's ``NetworkBlock.layer``, DeepMind's ``_BlockGroup.block``)."""

    def __init__(self, blocks: list[nnx.Module], *, field: str):
        self.field = str(field)
        setattr(self, self.field, nnx.List(blocks))
        self.config = _config(name="group", field=self.field, n=len(blocks))

    def __call__(self, x: jax.Array) -> jax.Array:
        return run_stage(getattr(self, self.field), x)


def stage(make_block, n: int, in_planes: int, out_planes: int, stride: int) -> nnx.List:
    """``n`` blocks ``make_block(c_in, c_out, stride, index)``: the first maps ``in_planes`` to
    ``out_planes`` at ``stride``, the others keep ``out_planes`` at stride 1 (every family's
    ``_make_layer``)."""
    return nnx.List(
        [
            make_block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, i)
            for i in range(n)
        ]
    )


def run_stage(blocks, x: jax.Array) -> jax.Array:
    for block in blocks:
        x = block(x)
    return x
