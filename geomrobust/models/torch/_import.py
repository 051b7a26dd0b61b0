"""Pretrained PyTorch weights in Flax NNX models, without pickle and without PyTorch.

:func:`from_torch` reads a PyTorch state dict -- a ``.safetensors`` file (read with
``safetensors.numpy``: no code runs, no PyTorch needed), a ``.pt``/``.pth`` checkpoint (only
where PyTorch is installed, with ``torch.load(weights_only=True)``) or an in-memory mapping --
checks every key name and shape against the architecture, and returns the equivalent NNX model
of :mod:`geomrobust.models.torch` (evaluation mode) whose logits on NHWC images equal
the PyTorch model's logits on the same images in NCHW.

Supported architectures (the sources of most published robust and standard checkpoints):

* ``"wide_resnet"`` -- RobustBench's WideResNet (Zagoruyko & Komodakis, BMVC 2016); config
  ``depth``, ``widen_factor`` (and ``sub_block1``, ``bias_last``);
* ``"preact_resnet18"`` -- RobustBench's PreActResNet-18 (He et al., ECCV 2016); config
  ``bn_before_fc``, ``out_shortcut``;
* ``"resnet18"``, ``"resnet50"`` -- torchvision's ResNets (He et al., CVPR 2016); config
  ``groups``, ``width_per_group``;
* ``"dm_wide_resnet"`` -- DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021, as
  RobustBench's ``DMWideResNet``); config ``depth``, ``width``, ``activation`` (``"relu"`` or
  ``"swish"``), ``padding``; CIFAR-10's ``mean``/``std`` unless given (they are not in its
  state dict);
* ``"dm_preact_resnet"`` -- DeepMind's PreActResNet (RobustBench's ``DMPreActResNet``); config
  ``depth`` (18 or 34), ``activation``, ``padding``; ``mean``/``std`` as the former.

All of them also take ``mean``/``std`` (input normalisation inside the model, e.g. torchvision's
ImageNet statistics), ``input_shape``, ``precision`` and ``widths`` (the latter only for tests:
the published models have the default widths).

Weight layouts: convolution weights OIHW -> HWIO, linear weights ``(out, in)`` -> ``(in, out)``;
BatchNorm ``weight``/``bias``/``running_mean``/``running_var`` -> ``scale``/``bias``/``mean``/
``var``. Every model pools to one position before its classifier, so PyTorch's NCHW flattening
order and NHWC agree there (the models flatten in NCHW order anyway).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ...io import CorruptFileError
from ._families import ARCHITECTURES, build
from ._layers import _dtype_name

__all__ = ["from_torch", "read_state_dict", "torch_state_dict_keys"]

_SAFETENSORS = (".safetensors",)
_PICKLES = (".pt", ".pth", ".bin")
_WRAPPERS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "model.")
_IGNORED = ("num_batches_tracked",)
_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_LIST = 10  # keys listed per category in a mismatch error


class _Entry(NamedTuple):
    path: tuple  # NNX state path
    shape: tuple[int, ...]  # PyTorch shape
    leaf: str  # NNX leaf name


def _convert_command(path: Path) -> str:
    src = str(path)
    dst = str(path.with_suffix(".safetensors"))
    return (
        'python -c "import torch; from safetensors.torch import save_file; '
        f"sd = torch.load({src!r}, map_location='cpu', weights_only=True); "
        "sd = sd.get('state_dict', sd); "
        f'save_file({{k: v.contiguous() for k, v in sd.items()}}, {dst!r})"'
    )


# ----------------------------------------------------------------------------- reading


def _as_numpy(name: str, value: Any, origin: str) -> np.ndarray:
    """``value`` (NumPy, JAX, a torch tensor, anything with ``.numpy()``/``__array__``) as
    a NumPy array."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        v = value
        if hasattr(v, "detach"):  # torch.Tensor
            v = v.detach().cpu()
        try:
            arr = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        except (TypeError, RuntimeError, ValueError):
            if hasattr(v, "float"):  # e.g. a bfloat16 tensor, which NumPy cannot hold
                arr = v.float().numpy()
            else:
                raise TypeError(
                    f"{origin}: entry {name!r} ({type(value).__name__}) cannot be converted "
                    "to a NumPy array"
                ) from None
        arr = np.asarray(arr)
    if arr.dtype.kind not in "fiub" and str(arr.dtype) != "bfloat16":
        raise TypeError(
            f"{origin}: entry {name!r} is not a numeric array (dtype {arr.dtype}, "
            f"{type(value).__name__}); a state dict maps names to tensors"
        )
    return arr


def _unwrap(obj: Any, origin: str) -> Mapping:
    """The state dict inside a checkpoint: ``obj['state_dict']`` (or ``model_state_dict``,
    ``model``) when present, else ``obj`` itself."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"{origin} holds a {type(obj).__name__}, not a state dict (a mapping)")
    while True:
        inner = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            return obj
        obj = inner


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return dict(load_file(str(path)))
    except SafetensorError as e:
        raise CorruptFileError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {e}; "
            "re-create it from the original checkpoint"
        ) from None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{path}: safetensors.numpy cannot read it ({type(e).__name__}: {e}); re-save it "
            "with float32 tensors where PyTorch is installed"
        ) from None


def _read_pickle(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path} is a PyTorch pickle checkpoint and PyTorch is not installed; geomrobust "
            "reads weights without PyTorch from .safetensors files: convert it once where "
            f"PyTorch is installed with: {_convert_command(path)}"
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) cannot read it ({type(e).__name__}: {e}); "
            "geomrobust never unpickles arbitrary objects: save the bare state dict "
            "(torch.save(model.state_dict(), path)) or convert it with: "
            f"{_convert_command(path)}"
        ) from None


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, np.ndarray]:
    """The state dict of ``source`` as ``{name: NumPy array}``, exactly as stored.

    ``source`` is a ``.safetensors`` file, a ``.pt``/``.pth``/``.bin`` checkpoint (needs
    PyTorch; a top-level ``state_dict``, ``model_state_dict`` or ``model`` entry is unwrapped)
    or a mapping of names to arrays (NumPy, JAX, torch tensors, ...). Key prefixes and
    ``num_batches_tracked`` are left alone here (see :func:`from_torch`).

    Raises
    ------
    FileNotFoundError : the file does not exist.
    CorruptFileError : a truncated or corrupted ``.safetensors`` file (a ``ValueError``).
    ImportError : a ``.pt``/``.pth`` file without PyTorch installed (the message gives the
        one-line conversion to safetensors).
    ValueError, TypeError : an unknown file type, or entries that are not arrays.
    """
    if isinstance(source, Mapping):
        origin = "the given state dict"
        sd = _unwrap(source, origin)
    elif isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        origin = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (or is not a file)")
        suffix = path.suffix.lower()
        if suffix in _SAFETENSORS:
            sd = _read_safetensors(path)
        elif suffix in _PICKLES:
            sd = _unwrap(_read_pickle(path), origin)
        else:
            raise ValueError(
                f"{path}: unknown checkpoint type {suffix!r}; give a .safetensors file, a "
                ".pt/.pth PyTorch checkpoint (needs PyTorch) or a dict of arrays"
            )
    else:
        raise TypeError(
            "source must be a .safetensors/.pt/.pth path or a mapping of names to arrays, got "
            f"{type(source).__name__}"
        )
    out = {}
    for name, value in sd.items():
        if not isinstance(name, str):
            raise TypeError(f"{origin}: state-dict keys must be strings, got {name!r}")
        out[name] = _as_numpy(name, value, origin)
    return out


def _clean(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Drop ``num_batches_tracked`` and strip wrapper prefixes shared by every key."""
    sd = {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in _IGNORED}
    stripped = []
    while sd:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            break
        sd = {k[len(prefix) :]: v for k, v in sd.items()}
        stripped.append(prefix)
    return sd, stripped


# ----------------------------------------------------------------------------- layout


def _describe(architecture: str, num_classes: int, config: Mapping) -> str:
    args = [f"num_classes={num_classes}", *(f"{k}={v!r}" for k, v in config.items())]
    return f"{architecture}({', '.join(args)})"


def _abstract(architecture: str, num_classes: int, dtype_name: str, config: Mapping):
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}"
        )
    return nnx.eval_shape(
        lambda: build(architecture, num_classes, rngs=nnx.Rngs(0), param_dtype=dtype_name, **config)
    )


def _layout(model: nnx.Module) -> dict[str, _Entry]:
    """PyTorch key -> (NNX path, PyTorch shape, leaf name) for every variable of ``model``."""
    flat = nnx.traversals.flatten_mapping(nnx.to_pure_dict(nnx.state(model)))
    out = {}
    for path, leaf in flat.items():
        *modules, name = path
        shape = tuple(leaf.shape)
        if name == "kernel" and len(shape) == 4:  # HWIO -> OIHW
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif name == "kernel":  # (in, out) -> (out, in)
            shape = shape[::-1]
        key = ".".join([*(str(m) for m in modules), _LEAF_TO_TORCH[name]])
        out[key] = _Entry(tuple(path), shape, name)
    return dict(sorted(out.items(), key=lambda item: _natural(item[0])))


def _natural(key: str) -> tuple:
    """Sort key that puts ``layer.10`` after ``layer.9``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split("."))


def _to_nnx(value: np.ndarray, entry: _Entry) -> np.ndarray:
    if entry.leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if entry.leaf == "kernel":
        return np.transpose(value)
    return value


def torch_state_dict_keys(
    architecture: str, *, num_classes: int = 10, **config: Any
) -> dict[str, tuple[int, ...]]:
    """The PyTorch state-dict keys and shapes of ``architecture`` with ``config``.

    The keys are those of the PyTorch model's ``state_dict()`` except ``num_batches_tracked``
    (which the import ignores), with PyTorch shapes (OIHW convolutions, ``(out, in)`` linear
    weights). Nothing is allocated: the model is built abstractly.

    >>> torch_state_dict_keys("wide_resnet", depth=28, widen_factor=10)["fc.weight"]
    (10, 640)
    """
    dtype_name = _dtype_name(config.pop("param_dtype", "float32"))
    model = _abstract(architecture, num_classes, dtype_name, config)
    return {k: e.shape for k, e in _layout(model).items()}


# ----------------------------------------------------------------------------- diagnostics


def _listing(items: list[str], what: str) -> str:
    head = ", ".join(items[:_LIST])
    more = f" (and {len(items) - _LIST} more)" if len(items) > _LIST else ""
    return f"{len(items)} {what}{'s' if len(items) != 1 else ''}: {head}{more}"


def _count(sd: Mapping, prefix: str) -> int:
    idx = {k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)}
    return len({i for i in idx if i.isdigit()})


def _guess(architecture: str, sd: Mapping[str, np.ndarray]) -> str:
    """What configuration the state dict looks like (empty when unsure)."""
    try:
        if architecture == "wide_resnet" and "block1.layer.0.conv1.weight" in sd:
            n = _count(sd, "block1.layer.")
            k = sd["block1.layer.0.conv1.weight"].shape[0] // 16
            parts = [f"depth={6 * n + 4}", f"widen_factor={k}"]
            if any(key.startswith("sub_block1.") for key in sd):
                parts.append("sub_block1=True")
            if "fc.weight" in sd and "fc.bias" not in sd:
                parts.append("bias_last=False")
            if "fc.weight" in sd:
                parts.append(f"num_classes={sd['fc.weight'].shape[0]}")
            return ", ".join(parts)
        if architecture == "preact_resnet18" and "linear.weight" in sd:
            parts = [f"num_classes={sd['linear.weight'].shape[0]}"]
            parts.append(f"bn_before_fc={'bn.weight' in sd}")
            return ", ".join(parts)
        if architecture == "dm_wide_resnet" and "layer.0.block.0.conv_0.weight" in sd:
            n = _count(sd, "layer.0.block.")
            k = sd["layer.0.block.0.conv_0.weight"].shape[0] // 16
            parts = [f"depth={6 * n + 4}", f"width={k}"]
            if "logits.weight" in sd:
                parts.append(f"num_classes={sd['logits.weight'].shape[0]}")
            return ", ".join(parts)
        if architecture == "dm_preact_resnet" and "logits.weight" in sd:
            blocks = tuple(_count(sd, f"layer_{i}.") for i in range(4))
            depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}.get(blocks)
            parts = [f"depth={depth}" if depth else f"blocks {blocks}"]
            parts.append(f"num_classes={sd['logits.weight'].shape[0]}")
            return ", ".join(parts)
        if architecture in ("resnet18", "resnet50") and "fc.weight" in sd:
            layers = tuple(_count(sd, f"layer{i}.") for i in range(1, 5))
            bottleneck = "layer1.0.conv3.weight" in sd
            names = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, True): "resnet50"}
            arch = names.get((*layers, bottleneck))
            kind = "bottleneck" if bottleneck else "basic"
            parts = [f"architecture={arch!r}" if arch else f"{kind} blocks {layers}"]
            parts.append(f"num_classes={sd['fc.weight'].shape[0]}")
            return ", ".join(parts)
    except (IndexError, KeyError, AttributeError):
        pass
    return ""


# a key that only one layout has -> (architecture, how it is named)
_SIGNATURES = (
    ("init_conv.weight", "dm_wide_resnet", "DeepMind's WideResNet (RobustBench's DMWideResNet)"),
    ("layer_0.0.batchnorm_0.weight", "dm_preact_resnet",
     "DeepMind's PreActResNet (RobustBench's DMPreActResNet)"),
    ("block1.layer.0.conv1.weight", "wide_resnet", "RobustBench's WideResNet"),
    ("linear.weight", "preact_resnet18", "RobustBench's PreActResNet"),
    ("layer1.0.conv3.weight", "resnet50", "torchvision's bottleneck ResNet"),
    ("layer1.0.conv1.weight", "resnet18", "torchvision's ResNet"),
)  # fmt: skip


def layout_of(sd: Mapping) -> tuple[str, str] | None:
    """``(architecture, description)`` of the layout whose characteristic key ``sd`` holds
    (None when none does)."""
    for key, arch, what in _SIGNATURES:
        if key in sd:
            return arch, what
    return None


def _layout_hint(architecture: str, sd: Mapping) -> str:
    """The layout the keys belong to, when it is another architecture's."""
    found = layout_of(sd)
    if found is None or found[0] == architecture:
        return ""
    if {found[0], architecture} <= {"resnet18", "resnet50"}:
        return ""  # _guess names the torchvision depth
    return f"the keys are those of {found[1]}: use architecture {found[0]!r} (--arch {found[0]})"


def _prefix_hint(sd: Mapping, expected: Mapping) -> str:
    """A wrapper prefix shared by every key that hides the expected names."""
    firsts = {k.split(".", 1)[0] for k in sd}
    if len(firsts) == 1 and all("." in k for k in sd):
        (p,) = firsts
        inner = {k.split(".", 1)[1] for k in sd}
        if inner & set(expected):
            return f"every key starts with {p + '.'!r}: strip that prefix"
    return ""


def _mismatch(
    architecture: str,
    num_classes: int,
    config: Mapping,
    origin: str,
    missing: list[str],
    unexpected: list[str],
    misshaped: list[str],
    sd: Mapping,
    expected: Mapping,
) -> ValueError:
    parts = []
    if missing:
        parts.append(_listing(missing, "missing key"))
    if unexpected:
        parts.append(_listing(unexpected, "unexpected key"))
    if misshaped:
        parts.append(_listing(misshaped, "mis-shaped key"))
    hints = []
    if layout := _layout_hint(architecture, sd):
        hints.append(layout)
    if prefix := _prefix_hint(sd, expected):
        hints.append(prefix)
    if guess := _guess(architecture, sd):
        hints.append(f"the state dict looks like {guess}")
    hint = f" Hint: {'; '.join(hints)}." if hints else ""
    what = origin if origin.startswith("the given") else f"the state dict in {origin}"
    return ValueError(
        f"{what} does not match {_describe(architecture, num_classes, config)}"
        f": {'; '.join(parts)}.{hint} Check the architecture and its configuration (depth, "
        "widen_factor, num_classes, bn_before_fc, ...) against the checkpoint, and that its "
        "keys carry no wrapper prefix other than 'module.'/'model.' (stripped automatically)"
        + ("" if misshaped else "; strict=False loads a partial match")
    )


# ----------------------------------------------------------------------------- import


def _take_normalisation(sd: dict[str, np.ndarray], config: dict, origin: str) -> None:
    """RobustBench models that normalise inside ``forward`` keep ``mu``/``sigma`` buffers:
    they become the model's ``mean``/``std`` (in place; no architecture has such keys)."""
    if not {"mu", "sigma"} <= set(sd):
        return
    if config.get("mean") is not None or config.get("std") is not None:
        raise ValueError(
            f"{origin} holds input-normalisation buffers mu/sigma; do not pass mean/std as well"
        )
    config["mean"] = tuple(float(v) for v in np.ravel(sd.pop("mu")))
    config["std"] = tuple(float(v) for v in np.ravel(sd.pop("sigma")))


def _check_values(sd: Mapping[str, np.ndarray], layout: Mapping[str, _Entry], origin: str):
    """Weights the model can compute with: floating, finite, BatchNorm variances >= 0."""
    ints = [
        f"{k} ({sd[k].dtype})"
        for k in layout
        if k in sd and sd[k].dtype.kind != "f" and str(sd[k].dtype) != "bfloat16"
    ]
    if ints:
        raise ValueError(
            f"{origin}: {_listing(ints, 'key')} with non-floating weights; quantized (int8, "
            "...) checkpoints are not supported: dequantize to float32 where they were made "
            "(e.g. torch.ao.quantization's dequantize, or load the float checkpoint)"
        )
    bad = [k for k in layout if k in sd and not np.all(np.isfinite(sd[k].astype(np.float64)))]
    if bad:
        raise ValueError(f"{origin}: {_listing(bad, 'key')} with non-finite (NaN/inf) values")
    negative = [
        f"{k} (min {float(sd[k].min()):.3g})"
        for k, e in layout.items()
        if e.leaf == "var" and k in sd and sd[k].size and float(sd[k].min()) < 0
    ]
    if negative:
        raise ValueError(
            f"{origin}: {_listing(negative, 'BatchNorm running_var')} with negative entries; "
            "a variance is >= 0 (every later logit would be NaN): the checkpoint is damaged "
            "or its keys are mislabelled"
        )


def _probe(model: nnx.Module, config: Mapping, num_classes: int, origin: str, what: str):
    """One forward pass on two images in ``[0, 1]`` of the model's ``input_shape``: an image
    size the network cannot take, or weights that give non-finite logits, fail here."""
    shape = config.get("input_shape")
    if shape is None:
        return
    probe = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    try:
        logits = np.asarray(model(jnp.asarray(probe)))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{what} cannot take input_shape {tuple(shape)}: {e}".replace("\n", " ")
        ) from None
    if logits.shape != (2, num_classes):
        raise ValueError(
            f"{what} gives logits of shape {logits.shape[1:]} on input_shape "
            f"{tuple(shape)}, not ({num_classes},)"
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError(
            f"{origin}: the imported {what} gives non-finite logits on images in [0, 1] of "
            f"shape {tuple(shape)}; check the weights and the mean/std"
        )


def from_torch(
    source: str | os.PathLike | Mapping,
    architecture: str,
    *,
    num_classes: int = 10,
    strict: bool = True,
    dtype: Any = jnp.float32,
    **config: Any,
) -> nnx.Module:
    """The NNX model ``architecture`` holding the PyTorch weights of ``source``.

    Parameters
    ----------
    source : a ``.safetensors`` file (no PyTorch needed), a ``.pt``/``.pth`` checkpoint (needs
        PyTorch; loaded with ``weights_only=True``) or a mapping ``name -> array`` (NumPy, JAX,
        torch tensors, anything with ``.numpy()`` or ``__array__``). A top-level
        ``state_dict`` entry, key prefixes ``module.`` (DataParallel) or ``model.`` shared by
        every key, and ``num_batches_tracked`` buffers are handled. RobustBench's ``mu``/
        ``sigma`` normalisation buffers become the model's ``mean``/``std``.
    architecture : ``"wide_resnet"`` (RobustBench; config ``depth``, ``widen_factor``),
        ``"preact_resnet18"`` (RobustBench), ``"resnet18"`` or ``"resnet50"`` (torchvision),
        ``"dm_wide_resnet"`` (DeepMind; config ``depth``, ``width``, ``activation``) or
        ``"dm_preact_resnet"`` (DeepMind; config ``depth``, ``activation``).
    num_classes : number of logits of the checkpoint (torchvision ImageNet weights: 1000).
    strict : every key of the architecture must be in the state dict and vice versa (as
        ``torch.nn.Module.load_state_dict``). With ``strict=False`` missing parameters keep
        their default initialisation (seed 0) and unexpected keys are ignored, with a
        ``UserWarning`` listing them; mis-shaped keys, and a state dict that holds not one
        of the architecture's keys, are always an error.
    dtype : parameter dtype (float32 by default; float64 needs ``jax_enable_x64``).
    **config : the architecture's options (see :mod:`geomrobust.models.torch`), e.g.
        ``depth=28, widen_factor=10``; ``mean``/``std`` to normalise inputs inside the model.

    Returns
    -------
    The ``nnx.Module`` in evaluation mode (BatchNorm with the running statistics), mapping NHWC
    images ``(N, H, W, C)`` to the logits the PyTorch model gives on the NCHW images.

    Raises
    ------
    ValueError : missing, unexpected or mis-shaped keys (all listed, or the first 10 and a
        count, with the architecture, its configuration, the layout the keys belong to and
        what to check), non-finite or non-floating (quantized) weights, a negative BatchNorm
        ``running_var``, an ``input_shape`` the network cannot take or non-finite logits on a
        probe batch of that shape, an unknown architecture; ``CorruptFileError`` (a
        ``ValueError``) for a truncated or corrupted ``.safetensors`` file.
    ImportError : a ``.pt``/``.pth`` file without PyTorch (the message gives the one-line
        conversion to safetensors).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}"
        )
    dtype_name = _dtype_name(dtype)
    if "param_dtype" in config:
        raise TypeError("give the parameter dtype as dtype=..., not param_dtype")
    origin = (
        str(Path(source).expanduser())
        if isinstance(source, str | os.PathLike)
        else ("the given state dict")
    )
    sd, _ = _clean(read_state_dict(source))
    config = dict(config)
    _take_normalisation(sd, config, origin)
    abstract = _abstract(architecture, num_classes, dtype_name, config)
    layout = _layout(abstract)

    missing = [k for k in layout if k not in sd]
    unexpected = [k for k in sd if k not in layout]
    misshaped = [
        f"{k} {tuple(sd[k].shape)} (expected {e.shape})"
        for k, e in layout.items()
        if k in sd and tuple(sd[k].shape) != e.shape
    ]
    if misshaped or (strict and (missing or unexpected)) or len(missing) == len(layout):
        err = _mismatch(
            architecture, num_classes, config, origin, missing, unexpected, misshaped, sd, layout
        )
        if not strict and not misshaped:  # nothing matches: there is nothing to load
            err = ValueError(
                f"strict=False, but not one of the {len(layout)} keys of "
                f"{_describe(architecture, num_classes, config)} is in the state dict, so "
                f"nothing would be loaded into a randomly initialised network. {err}"
            )
        raise err
    _check_values(sd, layout, origin)

    dt = jnp.dtype(dtype_name)
    pure: dict[tuple, Any] = {}
    if missing:
        init = build(architecture, num_classes, rngs=nnx.Rngs(0), param_dtype=dtype_name, **config)
        init_flat = nnx.traversals.flatten_mapping(nnx.to_pure_dict(nnx.state(init)))
        for k in missing:
            pure[layout[k].path] = init_flat[layout[k].path]
        warnings.warn(
            f"from_torch(strict=False): {_listing(missing, 'missing key')} keep their "
            "initialisation",
            UserWarning,
            stacklevel=2,
        )
    if unexpected:
        warnings.warn(
            f"from_torch(strict=False): {_listing(unexpected, 'unexpected key')} ignored",
            UserWarning,
            stacklevel=2,
        )
    for k, e in layout.items():
        if k in sd:
            pure[e.path] = jnp.asarray(_to_nnx(np.asarray(sd[k]), e), dtype=dt)
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, nnx.traversals.unflatten_mapping(pure))
    model = nnx.merge(graphdef, state)
    model.eval()
    _probe(model, config, num_classes, origin, _describe(architecture, num_classes, config))
    return model
