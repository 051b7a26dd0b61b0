"""Flax NNX versions of the PyTorch ResNets whose pretrained weights are published.

The modules reproduce, layer for layer, the PyTorch definitions that published checkpoints are
saved from, so that :func:`geomrobust.models._torch_import.from_torch` can load those state
dicts by name and give the same logits:

* :class:`WideResNet` -- Wide Residual Networks (Zagoruyko & Komodakis, "Wide Residual
  Networks", BMVC 2016) as RobustBench defines them
  (``robustbench/model_zoo/architectures/wide_resnet.py``, itself from TRADES): WRN-28-10,
  WRN-34-10, WRN-70-16, ... on 32x32 images;
* :class:`PreActResNet` / :func:`PreActResNet18` -- pre-activation ResNets (He, Zhang, Ren &
  Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016) as RobustBench defines them
  (``robustbench/model_zoo/architectures/resnet.py``);
* :class:`TorchvisionResNet` / :func:`resnet18` / :func:`resnet50` -- ResNets (He, Zhang, Ren &
  Sun, "Deep Residual Learning for Image Recognition", CVPR 2016) as torchvision defines them
  (``torchvision/models/resnet.py``, "ResNet v1.5": the stride of a bottleneck sits on its 3x3
  convolution).

Conventions
-----------
* Input: images ``(N, H, W, C)`` (NHWC, the package convention) in pixel space; PyTorch's
  models take ``(N, C, H, W)``. Optional ``mean``/``std`` normalise the input inside the model
  (RobustBench models take ``[0, 1]`` pixels; torchvision's ImageNet weights expect
  ``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``). ``input_shape=(H, W, C)``
  lets the model accept flattened ``(N, H*W*C)`` inputs too.
* Attribute names follow the PyTorch module names (``block1.layer.0.convShortcut``,
  ``layer2.0.downsample.1``), so a parameter's NNX path is its state-dict key with the leaf
  renamed (``weight`` -> ``kernel`` or ``scale``, ``running_mean`` -> ``mean``,
  ``running_var`` -> ``var``).
* Convolutions keep PyTorch's padding arithmetic: explicit symmetric zero padding (never
  ``"SAME"``, which pads a stride-2 convolution of an even size on one side only), floor
  output sizes. Kernels are HWIO, dense kernels ``(in, out)``.
* BatchNorm is evaluation-only: it normalises with the running statistics (PyTorch's
  ``eps=1e-5``), so every example is processed independently and the model is a fixed
  function of its input (nothing switches it to batch statistics). ``scale`` and ``bias`` are
  ``nnx.Param``; ``mean`` and ``var`` are ``nnx.BatchStat``.
* Every module records a hashable configuration in ``self.config``: a tuple of
  ``(name, value)`` pairs whose values are tuples or scalars, never a dict or a list, so the
  NNX graphdef can serve as a jit cache key.
* Parameters are initialised as in the PyTorch definitions (He-normal convolutions with
  fan-out, unit BatchNorm); these modules are meant to receive pretrained weights.

This file imports only the standard library, NumPy, JAX and Flax NNX, so that a benchmark can
load it by file path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "ARCHITECTURES",
    "BatchNorm2d",
    "Conv2d",
    "Linear",
    "PreActResNet",
    "PreActResNet18",
    "TorchvisionResNet",
    "WideResNet",
    "build",
    "resnet18",
    "resnet50",
]

Config = tuple[tuple[str, Any], ...]

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_DTYPES = ("float32", "float64", "float16", "bfloat16")
_PRECISIONS = (None, "default", "high", "highest")


# ----------------------------------------------------------------------------- configuration


def _freeze(value: Any) -> Any:
    """``value`` with lists/tuples turned into tuples and mappings into sorted pair tuples."""
    if isinstance(value, dict):
        return tuple((str(k), _freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _config(**items: Any) -> Config:
    """A hashable configuration record: ``((name, value), ...)`` with frozen values."""
    out = tuple((k, _freeze(v)) for k, v in items.items())
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
    return m, s


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
    """``torch.nn.Conv2d`` on NHWC input: square kernel, symmetric zero padding, floor sizes.

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
        padding: int = 0,
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
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        dt = jnp.dtype(param_dtype)
        std = math.sqrt(2.0 / (out_channels * kernel_size * kernel_size))
        shape = (kernel_size, kernel_size, in_channels // groups, out_channels)
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape, dt))
        self.bias = nnx.Param(jnp.zeros((out_channels,), dt)) if bias else None
        self.stride = int(stride)
        self.padding = int(padding)
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
        y = jax.lax.conv_general_dilated(
            x.astype(dt),
            kernel.astype(dt),
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
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


def _prepare_input(
    x: jax.Array,
    input_shape: tuple[int, ...] | None,
    channels: int,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    model: str,
) -> jax.Array:
    x = jnp.asarray(x)
    if input_shape is not None:
        x = x.reshape(x.shape[0], *input_shape)
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
    if mean is not None:
        x = (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
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


# ----------------------------------------------------------------------------- Wide ResNet


class WideBasicBlock(nnx.Module):
    """RobustBench's WRN ``BasicBlock``: pre-activation, two 3x3 convolutions.

    With ``in_planes == out_planes`` (``equalInOut``) the block is
    ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``. Otherwise the pre-activation
    ``a = relu(bn1(x))`` feeds both branches ("activate before residual"):
    ``convShortcut(a) + conv2(relu(bn2(conv1(a))))`` with a 1x1 strided ``convShortcut``.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        *,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        equal = in_planes == out_planes
        if equal and stride != 1:
            raise ValueError("a WRN block with equal in/out planes must have stride 1")
        conv = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.bn1 = BatchNorm2d(in_planes, param_dtype=param_dtype)
        self.conv1 = Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, **conv)
        self.bn2 = BatchNorm2d(out_planes, param_dtype=param_dtype)
        self.conv2 = Conv2d(out_planes, out_planes, 3, stride=1, padding=1, **conv)
        self.equalInOut = equal
        self.convShortcut = (
            None if equal else Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, **conv)
        )
        self.config = _config(
            name="wide_basic_block",
            in_planes=in_planes,
            out_planes=out_planes,
            stride=stride,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        a = jax.nn.relu(self.bn1(x))
        h = self.conv1(a)
        h = self.conv2(jax.nn.relu(self.bn2(h)))
        shortcut = x if self.convShortcut is None else self.convShortcut(a)
        return shortcut + h


class NetworkBlock(nnx.Module):
    """RobustBench's ``NetworkBlock``: ``layer`` = ``n`` WRN blocks, the first one strided."""

    def __init__(
        self,
        n: int,
        in_planes: int,
        out_planes: int,
        stride: int,
        *,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.layer = nnx.List(
            [
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, s, **kw)
                for i, s in enumerate([stride] + [1] * (n - 1))
            ]
        )
        self.config = _config(
            name="network_block",
            n=n,
            in_planes=in_planes,
            out_planes=out_planes,
            stride=stride,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.layer:
            x = block(x)
        return x


class WideResNet(nnx.Module):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, BMVC 2016), RobustBench layout.

    ``conv1`` (3x3, 16 channels), ``block1..block3`` of ``n = (depth - 4) / 6`` pre-activation
    blocks with ``16k, 32k, 64k`` channels (``k = widen_factor``; strides 1, 2, 2), then
    ``relu(bn1(.))``, an 8x8 average pooling (global on 32x32 images) and ``fc``. This is the
    TRADES / RobustBench definition that most robust CIFAR checkpoints use (WRN-28-10: 36.5M
    parameters, WRN-34-10: 46.2M, WRN-70-16: 266.8M).

    Parameters
    ----------
    depth : ``6n + 4`` (10, 16, 28, 34, 70, ...).
    widen_factor : channel multiplier ``k``.
    num_classes : number of logits.
    sub_block1 : create RobustBench's unused ``sub_block1`` (some checkpoints, e.g. Carmon et al.
        2019, hold its weights); it does not take part in the forward pass.
    bias_last : ``fc`` has a bias (RobustBench's ``bias_last``).
    in_channels : image channels (3).
    mean, std : optional per-channel input normalisation applied first.
    input_shape : optional ``(H, W, C)`` to accept flattened inputs.
    param_dtype : ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``.
    precision : matmul/convolution precision (None: JAX's default; ``"highest"`` for full
        float32 accuracy on accelerators).
    rngs : ``nnx.Rngs`` for the initialisation.

    Dropout (``dropRate``) is not modelled: evaluation mode ignores it.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        *,
        sub_block1: bool = False,
        bias_last: bool = True,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        depth = _positive_int(depth, "depth")
        widen_factor = _positive_int(widen_factor, "widen_factor")
        num_classes = _positive_int(num_classes, "num_classes")
        in_channels = _positive_int(in_channels, "in_channels")
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        param_dtype = _dtype_name(param_dtype)
        precision = _precision(precision)
        self.mean, self.std = _normalisation(mean, std, in_channels)
        self.input_shape = _input_shape(input_shape, in_channels)
        self.in_channels = in_channels
        n = (depth - 4) // 6
        ch = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(in_channels, ch[0], 3, stride=1, padding=1, **kw)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, **kw)
        self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1, **kw) if sub_block1 else None
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, **kw)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, **kw)
        self.bn1 = BatchNorm2d(ch[3], param_dtype=param_dtype)
        self.fc = Linear(ch[3], num_classes, bias=bias_last, zero_bias=True, **kw)
        self.config = _config(
            name="wide_resnet",
            depth=depth,
            widen_factor=widen_factor,
            num_classes=num_classes,
            sub_block1=bool(sub_block1),
            bias_last=bool(bias_last),
            in_channels=in_channels,
            mean=self.mean,
            std=self.std,
            input_shape=self.input_shape,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _prepare_input(x, self.input_shape, self.in_channels, self.mean, self.std, "WideResNet")
        hw = x.shape[1:3]
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = jax.nn.relu(self.bn1(x))
        return self.fc(_pooled_vector(x, 8, "WideResNet", hw))


# ----------------------------------------------------------------------------- PreAct ResNet


class PreActBlock(nnx.Module):
    """RobustBench's ``PreActBlock`` (He et al., ECCV 2016, "Identity Mappings").

    ``a = relu(bn1(x))``; output ``conv2(relu(bn2(conv1(a)))) + shortcut``, where the shortcut
    is ``x``, or a 1x1 strided convolution ``shortcut.0`` (when the shape changes) of ``x``
    (RobustBench's default) or of ``a`` (``out_shortcut=True``, as ``PreActBlockV2``).
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        *,
        out_shortcut: bool,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.bn1 = BatchNorm2d(in_planes, param_dtype=param_dtype)
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, **kw)
        self.bn2 = BatchNorm2d(planes, param_dtype=param_dtype)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, **kw)
        if stride != 1 or in_planes != planes:
            self.shortcut = nnx.List([Conv2d(in_planes, planes, 1, stride=stride, **kw)])
        else:
            self.shortcut = None
        self.out_shortcut = bool(out_shortcut)
        self.config = _config(
            name="preact_block",
            in_planes=in_planes,
            planes=planes,
            stride=stride,
            out_shortcut=bool(out_shortcut),
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        a = jax.nn.relu(self.bn1(x))
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut[0](a if self.out_shortcut else x)
        h = self.conv1(a)
        h = self.conv2(jax.nn.relu(self.bn2(h)))
        return h + shortcut


class PreActResNet(nnx.Module):
    """Pre-activation ResNet (He et al., ECCV 2016), RobustBench's ``PreActResNet`` layout.

    ``conv1`` (3x3), ``layer1..layer4`` of :class:`PreActBlock` (strides 1, 2, 2, 2), an
    optional ``relu(bn(.))`` (``bn_before_fc``), a 4x4 average pooling (global on 32x32
    images) and ``linear``. ``num_blocks=(2, 2, 2, 2)`` with the default widths is
    PreActResNet-18 (11.2M parameters with 10 classes).

    Parameters
    ----------
    num_blocks : blocks per stage.
    num_classes : number of logits.
    bn_before_fc : the final ``bn`` + ReLU before pooling. RobustBench's default is False;
        checkpoints such as Rice et al. 2020 and Kireev et al. 2021 need True (their state dict
        has ``bn.*`` keys).
    out_shortcut : projection shortcuts take the pre-activation (RobustBench's
        ``out_shortcut``, the ``PreActBlockV2`` behaviour) instead of the block input.
    widths : channels of the four stages (RobustBench: 64, 128, 256, 512; the stem has
        ``widths[0]``). Smaller widths exist for tests; only the default matches RobustBench's
        checkpoints.
    in_channels, mean, std, input_shape, param_dtype, precision, rngs : as
        :class:`WideResNet`.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        bn_before_fc: bool = False,
        out_shortcut: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        num_blocks = _int_tuple(num_blocks, "num_blocks", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        in_channels = _positive_int(in_channels, "in_channels")
        param_dtype = _dtype_name(param_dtype)
        precision = _precision(precision)
        self.mean, self.std = _normalisation(mean, std, in_channels)
        self.input_shape = _input_shape(input_shape, in_channels)
        self.in_channels = in_channels
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(in_channels, widths[0], 3, stride=1, padding=1, **kw)
        c_in = widths[0]
        stages = []
        for i, (planes, n) in enumerate(zip(widths, num_blocks, strict=True)):
            blocks = []
            for j in range(n):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                blocks.append(PreActBlock(c_in, planes, stride, out_shortcut=out_shortcut, **kw))
                c_in = planes
            stages.append(nnx.List(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = BatchNorm2d(c_in, param_dtype=param_dtype) if bn_before_fc else None
        self.linear = Linear(c_in, num_classes, **kw)
        self.config = _config(
            name="preact_resnet",
            num_blocks=num_blocks,
            num_classes=num_classes,
            bn_before_fc=bool(bn_before_fc),
            out_shortcut=bool(out_shortcut),
            widths=widths,
            in_channels=in_channels,
            mean=self.mean,
            std=self.std,
            input_shape=self.input_shape,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _prepare_input(
            x, self.input_shape, self.in_channels, self.mean, self.std, "PreActResNet"
        )
        hw = x.shape[1:3]
        x = self.conv1(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        if self.bn is not None:
            x = jax.nn.relu(self.bn(x))
        return self.linear(_pooled_vector(x, 4, "PreActResNet", hw))


def PreActResNet18(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> PreActResNet:
    """RobustBench's ``PreActResNet18()``: :class:`PreActResNet` with ``(2, 2, 2, 2)`` blocks."""
    if "num_blocks" in config:
        raise TypeError("PreActResNet18 has num_blocks (2, 2, 2, 2); use PreActResNet for others")
    return PreActResNet((2, 2, 2, 2), num_classes, rngs=rngs, **config)


# ----------------------------------------------------------------------------- torchvision


class TorchvisionBasicBlock(nnx.Module):
    """torchvision's ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)``.

    ``identity`` is ``x`` or ``downsample`` (1x1 strided convolution ``downsample.0`` +
    BatchNorm ``downsample.1``) of ``x``. The stride sits on ``conv1``.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: bool,
        *,
        groups: int,
        base_width: int,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        if groups != 1 or base_width != 64:
            raise ValueError("torchvision's BasicBlock only supports groups=1 and base_width=64")
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, **kw)
        self.bn1 = BatchNorm2d(planes, param_dtype=param_dtype)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, **kw)
        self.bn2 = BatchNorm2d(planes, param_dtype=param_dtype)
        self.downsample = _downsample(inplanes, planes, stride, **kw) if downsample else None
        self.config = _config(
            name="torchvision_basic_block",
            inplanes=inplanes,
            planes=planes,
            stride=stride,
            downsample=downsample,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        identity = x if self.downsample is None else _apply_downsample(self.downsample, x)
        return jax.nn.relu(h + identity)


class TorchvisionBottleneck(nnx.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 ``conv2``).

    ``conv1`` 1x1 -> ``width``, ``conv2`` 3x3 (strided, ``groups``), ``conv3`` 1x1 ->
    ``4 * planes``, BatchNorm after each, ReLU, plus ``identity`` as in
    :class:`TorchvisionBasicBlock`; ``width = int(planes * base_width / 64) * groups``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: bool,
        *,
        groups: int,
        base_width: int,
        param_dtype: str,
        precision: str | None,
        rngs: nnx.Rngs,
    ):
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ValueError(f"bottleneck width int({planes} * {base_width} / 64) is 0")
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, width, 1, **kw)
        self.bn1 = BatchNorm2d(width, param_dtype=param_dtype)
        self.conv2 = Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, **kw)
        self.bn2 = BatchNorm2d(width, param_dtype=param_dtype)
        self.conv3 = Conv2d(width, out, 1, **kw)
        self.bn3 = BatchNorm2d(out, param_dtype=param_dtype)
        self.downsample = _downsample(inplanes, out, stride, **kw) if downsample else None
        self.config = _config(
            name="torchvision_bottleneck",
            inplanes=inplanes,
            planes=planes,
            stride=stride,
            downsample=downsample,
            groups=groups,
            base_width=base_width,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = jax.nn.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        identity = x if self.downsample is None else _apply_downsample(self.downsample, x)
        return jax.nn.relu(h + identity)


def _downsample(c_in: int, c_out: int, stride: int, *, param_dtype, precision, rngs) -> nnx.List:
    conv = Conv2d(
        c_in, c_out, 1, stride=stride, param_dtype=param_dtype, precision=precision, rngs=rngs
    )
    return nnx.List([conv, BatchNorm2d(c_out, param_dtype=param_dtype)])


def _apply_downsample(downsample: nnx.List, x: jax.Array) -> jax.Array:
    return downsample[1](downsample[0](x))


_TV_BLOCKS = {"basic": TorchvisionBasicBlock, "bottleneck": TorchvisionBottleneck}


class TorchvisionResNet(nnx.Module):
    """ResNet (He et al., CVPR 2016) exactly as torchvision's ``ResNet`` (ImageNet stem).

    ``conv1`` (7x7, stride 2, padding 3), ``bn1``, ReLU, 3x3 max pooling (stride 2, padding
    1), ``layer1..layer4`` (strides 1, 2, 2, 2; the first block of a stage gets
    ``downsample`` when its stride or channel count changes), global average pooling
    (``AdaptiveAvgPool2d((1, 1))``, any image size) and ``fc``.

    Parameters
    ----------
    block : ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101/152).
    layers : blocks per stage (``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50).
    num_classes : number of logits (torchvision: 1000).
    groups, width_per_group : torchvision's bottleneck grouping and width (ResNeXt-50 32x4d is
        ``groups=32, width_per_group=4``; Wide ResNet-50-2 is ``width_per_group=128``).
    widths : planes of the four stages (torchvision: 64, 128, 256, 512; the stem has
        ``widths[0]`` channels). Smaller widths exist for tests (torchvision's
        ``width_per_group`` does not shrink the block outputs); only the default matches
        torchvision's checkpoints.
    in_channels, mean, std, input_shape, param_dtype, precision, rngs : as
        :class:`WideResNet`.

    ``replace_stride_with_dilation`` (dilated convolutions) is not supported.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        param_dtype: str = "float32",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        if block not in _TV_BLOCKS:
            raise ValueError(f"block must be one of {sorted(_TV_BLOCKS)}, got {block!r}")
        layers = _int_tuple(layers, "layers", 4)
        widths = _int_tuple(widths, "widths", 4)
        num_classes = _positive_int(num_classes, "num_classes")
        groups = _positive_int(groups, "groups")
        width_per_group = _positive_int(width_per_group, "width_per_group")
        in_channels = _positive_int(in_channels, "in_channels")
        param_dtype = _dtype_name(param_dtype)
        precision = _precision(precision)
        self.mean, self.std = _normalisation(mean, std, in_channels)
        self.input_shape = _input_shape(input_shape, in_channels)
        self.in_channels = in_channels
        cls = _TV_BLOCKS[block]
        kw = dict(param_dtype=param_dtype, precision=precision, rngs=rngs)
        inplanes = widths[0]
        self.conv1 = Conv2d(in_channels, inplanes, 7, stride=2, padding=3, **kw)
        self.bn1 = BatchNorm2d(inplanes, param_dtype=param_dtype)
        stages = []
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = j == 0 and (s != 1 or inplanes != planes * cls.expansion)
                blocks.append(
                    cls(
                        inplanes,
                        planes,
                        s,
                        down,
                        groups=groups,
                        base_width=width_per_group,
                        **kw,
                    )
                )
                inplanes = planes * cls.expansion
            stages.append(nnx.List(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = Linear(inplanes, num_classes, **kw)
        self.config = _config(
            name="torchvision_resnet",
            block=block,
            layers=layers,
            num_classes=num_classes,
            groups=groups,
            width_per_group=width_per_group,
            widths=widths,
            in_channels=in_channels,
            mean=self.mean,
            std=self.std,
            input_shape=self.input_shape,
            param_dtype=param_dtype,
            precision=precision,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _prepare_input(x, self.input_shape, self.in_channels, self.mean, self.std, "ResNet")
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = _max_pool(x, 3, 2, 1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


def resnet18(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet18``: basic blocks ``(2, 2, 2, 2)`` (11.7M parameters at 1000
    classes)."""
    return TorchvisionResNet("basic", (2, 2, 2, 2), num_classes, rngs=rngs, **config)


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs, **config: Any) -> TorchvisionResNet:
    """torchvision's ``resnet50``: bottlenecks ``(3, 4, 6, 3)`` (25.6M parameters at 1000
    classes)."""
    return TorchvisionResNet("bottleneck", (3, 4, 6, 3), num_classes, rngs=rngs, **config)


def _wide_resnet(num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> WideResNet:
    return WideResNet(num_classes=num_classes, rngs=rngs, **config)


ARCHITECTURES = {
    "wide_resnet": _wide_resnet,
    "preact_resnet18": PreActResNet18,
    "resnet18": resnet18,
    "resnet50": resnet50,
}
"""Builders ``f(num_classes, *, rngs, **config)`` by architecture name."""


def build(architecture: str, num_classes: int = 10, *, rngs: nnx.Rngs, **config: Any) -> nnx.Module:
    """The architecture ``architecture`` (a key of :data:`ARCHITECTURES`), freshly initialised.

    ``config`` holds the architecture's options: ``depth`` and ``widen_factor`` for
    ``"wide_resnet"``; ``bn_before_fc``, ``widths``, ... for ``"preact_resnet18"``;
    ``groups``, ``width_per_group``, ``widths``, ... for ``"resnet18"``/``"resnet50"``.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}"
        )
    try:
        return ARCHITECTURES[architecture](num_classes, rngs=rngs, **config)
    except TypeError as e:
        raise TypeError(f"bad configuration for architecture {architecture!r}: {e}") from None
