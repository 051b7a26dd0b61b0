"""Any PyTorch ``nn.Module`` as a :class:`~geomrobust.Classifier`, through torchax.

:func:`from_torch_module` runs the module's own ``forward`` with torchax (the PyTorch/XLA
project's lowering of PyTorch's ATen operators to JAX: ``torchax.extract_jax``), so every
architecture PyTorch can run works without a hand-written JAX port: the classifier is a JAX
function of the module's weights and of the inputs, and ``jit``, ``grad``, ``vmap``,
Hessian-vector products and every measurement of the package apply to it.

What the wrapper adds to ``extract_jax``:

* **layout**: NHWC images in (the package's convention), NCHW to the module;
* **evaluation mode** only: a module (or a submodule) in training mode is refused;
* **weights as leaves**: the floating parameters and buffers (BatchNorm statistics) are the
  leaves of the classifier; integer and boolean buffers (``num_batches_tracked``, index
  tables) are not, so ``jax.grad`` with respect to the classifier and a cast of its leaves
  to ``float64`` see only floating arrays;
* **compile once per architecture**: the static part (``apply``) compares equal for two
  modules of the same architecture (a structural description of the module tree: classes,
  hyperparameters, parameter names, shapes and dtypes, the values of integer buffers and
  constant tensors), so a second model of the same architecture reuses every compiled
  program, where a fresh ``extract_jax`` closure would compile everything again;
* **channels-last convolutions**: 2-D convolutions run as NHWC / HWIO convolutions between
  two transposes, instead of torchax's NCHW ones, which XLA's CPU backend runs with a naive
  loop nest inside a loop body (the Lanczos iterations of the exact curvature: 5x slower
  there for DMWideResNet-10-2; see :func:`_environment`);
* a **warning for custom autograd Functions**: JAX differentiates the *forward* computation
  of a ``torch.autograd.Function``; its hand-written ``backward`` is never called. Defences
  that mask gradients through such a backward (BPDA-style straight-through estimators,
  shattered gradients) are therefore measured with their true forward derivative.

Install with ``pip install 'geomrobust[torch]'``: it pins the pair ``torch==2.12.1`` and
``torchax==0.0.13`` (every torchax release to date fails to import with torch 2.13 and 2.14,
which removed named overloads of ``aten.prod`` and ``aten.qr`` that torchax registers).
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._classifier import Classifier, _Identity, as_classifier
from .._normalized import Normalized

__all__ = ["CustomAutogradWarning", "from_torch_module"]

_PAIR = "torch==2.12.1 and torchax==0.0.13"
_INSTALL = f"pip install 'geomrobust[torch]' (it pins {_PAIR})"


class CustomAutogradWarning(UserWarning):
    """The module calls a custom ``torch.autograd.Function``: JAX differentiates its forward
    computation, its hand-written backward is ignored."""


def _import():
    """``(torch, torchax)``, or an ImportError that says how to install a working pair."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"from_torch_module needs PyTorch and torchax: {_INSTALL}") from e
    try:
        import torchax
    except ImportError as e:
        raise ImportError(f"from_torch_module needs torchax: {_INSTALL}") from e
    except AttributeError as e:  # torchax registers ATen overloads this torch no longer has
        raise ImportError(
            f"torchax does not import with torch {torch.__version__} ({e}); install the pair "
            f"the package is tested with: {_INSTALL}"
        ) from e
    return torch, torchax


# ------------------------------------------------------------------ architecture description


def _digest(array: np.ndarray) -> tuple:
    array = np.ascontiguousarray(array)
    return ("array", array.shape, str(array.dtype), hashlib.sha256(array.tobytes()).hexdigest())


def _tensor_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype.is_floating_point and t.dtype.itemsize == 2:  # bfloat16 has no NumPy dtype
        t = t.float()
    return t.numpy()


class _Architecture:
    """A structural description of a module tree, hashable and compared by value.

    Two modules get equal descriptions when they compute the same function of their floating
    parameters and buffers: the same classes (hence the same ``forward`` code), the same
    attributes (hyperparameters compared by value, containers element-wise, functions and
    other hashable objects with their own ``==``, anything unhashable by identity), the same
    parameter and buffer names, shapes and dtypes, and the same values of every tensor that is
    baked into the program: integer and boolean buffers and plain tensor attributes. The one
    exception is ``num_batches_tracked`` of BatchNorm layers, which evaluation mode never reads.
    """

    __slots__ = ("__weakref__", "_hash", "value")

    def __init__(self, module, torch):
        self.value = _Describer(torch).module(module)
        self._hash = hash(self.value)

    def __eq__(self, other):
        return type(other) is _Architecture and (
            self.value is other.value or (self._hash == other._hash and self.value == other.value)
        )

    def __hash__(self):
        return self._hash


class _Describer:
    def __init__(self, torch):
        self.torch = torch
        self.seen: dict[int, int] = {}
        self.alive: list = []  # ids stay unique while the description is built

    def _ref(self, obj):
        i = id(obj)
        if i in self.seen:
            return ("ref", self.seen[i])
        self.seen[i] = len(self.seen)
        self.alive.append(obj)
        return None

    def module(self, m):
        ref = self._ref(m)
        if ref is not None:
            return ref
        batchnorm = isinstance(m, self.torch.nn.modules.batchnorm._NormBase)
        items = []
        for name, value in sorted(m.__dict__.items()):
            if name == "_parameters":
                d = tuple((k, self.leaf(v)) for k, v in value.items())
            elif name == "_buffers":
                d = tuple(
                    (k, ("unread in eval mode",))
                    if batchnorm and k == "num_batches_tracked"
                    else (k, self.buffer(v))
                    for k, v in value.items()
                )
            elif name == "_modules":
                d = tuple((k, None if v is None else self.module(v)) for k, v in value.items())
            elif "hooks" in name and isinstance(value, dict):
                d = ("hooks", tuple(self.value(v) for v in value.values()))  # ids: a counter
            else:
                d = self.value(value)
            items.append((name, d))
        return ("module", type(m), tuple(items))

    def leaf(self, t):
        """A traced leaf (a floating parameter or buffer): its shape and dtype."""
        if t is None:
            return None
        ref = self._ref(t)  # tied weights
        return ref if ref is not None else ("leaf", tuple(t.shape), str(t.dtype))

    def buffer(self, t):
        if t is None or t.dtype.is_floating_point or t.dtype.is_complex:
            return self.leaf(t)
        ref = self._ref(t)
        return ref if ref is not None else _digest(_tensor_numpy(t))  # baked in: by value

    def value(self, v):
        torch = self.torch
        if v is None or isinstance(v, bool | int | float | complex | str | bytes):
            return (type(v), v)
        if isinstance(v, torch.dtype | torch.device):
            return (type(v), str(v))
        if isinstance(v, torch.nn.Module):
            return self.module(v)
        ref = self._ref(v)
        if ref is not None:
            return ref
        if isinstance(v, torch.Tensor):  # a plain tensor attribute: a constant of the program
            return _digest(_tensor_numpy(v))
        if isinstance(v, np.ndarray):
            return _digest(v)
        if isinstance(v, list | tuple):
            return (type(v), tuple(self.value(e) for e in v))
        if isinstance(v, dict):
            return (type(v), tuple((self.value(k), self.value(e)) for k, e in v.items()))
        if isinstance(v, set | frozenset):
            return (type(v), frozenset(self.value(e) for e in v))
        try:
            hash(v)
        except TypeError:
            return ("object", _Identity(v))
        return ("hashable", type(v), v)


# ------------------------------------------------------------------------------ the apply


class _TorchModuleApply:
    """``apply(weights, x)``: the module's forward through torchax, NHWC in (for images).

    Compared by architecture (:class:`_Architecture`), so every module of the same
    architecture shares compiled programs; the weights are the traced argument.
    """

    __slots__ = ("__weakref__", "_hash", "arch", "baked", "channels_last", "fn", "name")

    def __init__(self, fn, arch, baked, channels_last, name):
        self.fn = fn  # torchax's jax_func(states, args)
        self.arch = arch
        self.baked = baked  # integer / boolean buffers, constants of the program
        self.channels_last = channels_last
        self.name = name
        self._hash = hash(("torch module", arch, channels_last))

    def __call__(self, weights, x):
        x = jnp.asarray(x)
        if self.channels_last and x.ndim != 4:
            raise ValueError(
                f"{self.name} takes NHWC images (N, H, W, C), got x of shape {x.shape}"
            )
        # through one jitted function keyed by the architecture: a call outside jit runs a
        # compiled program instead of dispatching the module's ATen operators one by one, and
        # tracing the same shapes again (eval_shape, a driver's checks) reuses the jaxpr
        # instead of running the PyTorch forward through torchax again
        return _run(self, weights, x)

    def forward(self, weights, x):
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        for w in jax.tree.leaves(weights):
            dtype = jnp.promote_types(dtype, w.dtype)
        weights = jax.tree.map(lambda w: w.astype(dtype), weights)
        x = x.astype(dtype)
        if self.channels_last:
            x = jnp.moveaxis(x, -1, 1)
        out = self.fn({**weights, **self.baked}, (x,))
        if not (isinstance(out, jax.Array) and out.ndim == 2 and out.shape[0] == x.shape[0]):
            got = out.shape if isinstance(out, jax.Array) else type(out).__name__
            raise ValueError(
                f"{self.name} must return logits (N, K) for a batch of N inputs; it returned "
                f"{got}. Wrap it in a module whose forward returns the logits tensor"
            )
        return out

    def __eq__(self, other):
        return (
            type(other) is _TorchModuleApply
            and self.channels_last == other.channels_last
            and self.arch == other.arch
        )

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"torch module {self.name}"


@functools.partial(jax.jit, static_argnums=0)
def _run(apply, weights, x):
    return apply.forward(weights, x)


# ---------------------------------------------------------------- channels-last convolutions


def _pair(v) -> tuple[int, ...]:
    v = tuple(int(e) for e in v)
    return v * 2 if len(v) == 1 else v


def _conv2d_nhwc(input, weight, bias, stride, padding, dilation, groups):
    """A PyTorch 2-D convolution (NCHW input, OIHW kernel, NCHW output) computed as the
    canonical channels-last convolution (NHWC input, HWIO kernel), with explicit transposes."""
    out = jax.lax.conv_general_dilated(
        jnp.transpose(input, (0, 2, 3, 1)),
        jnp.transpose(weight, (2, 3, 1, 0)),
        _pair(stride),
        [(p, p) for p in _pair(padding)],
        rhs_dilation=_pair(dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=int(groups),
    )
    if bias is not None:
        out = out + bias
    return jnp.transpose(out, (0, 3, 1, 2))


def _nhwc_eligible(input, weight, padding, transposed=False) -> bool:
    return not transposed and input.ndim == 4 and weight.ndim == 4 and not isinstance(padding, str)


@functools.cache
def _environment():
    """A private torchax environment whose 2-D convolutions are channels-last.

    torchax lowers ``aten.convolution`` / ``aten.conv2d`` to an NCHW ``conv_general_dilated``.
    XLA's CPU backend rewrites such a convolution into its fast canonical form (NHWC, HWIO)
    only at the top level of a program, not inside a loop body: in a ``while_loop`` (the
    Lanczos iterations of ``principal_curvatures(method="lanczos")``, every kernel driven on
    the device) an NCHW convolution runs XLA's naive loop emitter, tens of times slower
    (openxla / jax-ml/jax#12868). Emitting the channels-last form here (two transposes, which
    XLA fuses) keeps every forward convolution, and its JVP, on the fast path everywhere.
    Other convolutions (transposed, 1-D, 3-D, string padding) keep torchax's lowering. The
    user's default torchax environment is left untouched.
    """
    import torch
    import torchax.tensor
    from torchax.ops import jaten, ops_registry

    def convolution(input, weight, bias, stride, padding, dilation, transposed,
                    output_padding, groups):  # fmt: skip
        if _nhwc_eligible(input, weight, padding, transposed):
            return _conv2d_nhwc(input, weight, bias, stride, padding, dilation, groups)
        return jaten._aten_convolution(input, weight, bias, stride, padding, dilation,
                                       transposed, output_padding, groups)  # fmt: skip

    def conv2d(input, weight, bias=None, stride=(1,), padding=(0,), dilation=(1,), groups=1):
        if _nhwc_eligible(input, weight, padding):
            return _conv2d_nhwc(input, weight, bias, stride, padding, dilation, groups)
        return jaten._aten_conv2d(input, weight, bias, stride, padding, dilation, groups)

    env = torchax.tensor.Environment()
    ops = getattr(env, "_ops", None)  # torchax 0.0.13's registry; another layout: its lowering
    for op, fn in ((torch.ops.aten.convolution, convolution), (torch.ops.aten.conv2d, conv2d)):
        if not isinstance(ops, dict) or op not in ops:
            continue
        ops[op] = ops_registry.Operator(
            op, fn, is_jax_function=True, is_user_defined=False, needs_env=False,
            is_view_op=False,
        )  # fmt: skip
    return env


# ------------------------------------------------------------------------------ the checks


def _check_eval(module) -> None:
    training = [name or "(the module itself)" for name, m in module.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (
            f" and {len(training) - 5} more" if len(training) > 5 else ""
        )
        raise ValueError(
            f"{type(module).__name__} is in training mode ({shown}): call module.eval() "
            "first. The classifier computes evaluation-mode logits (BatchNorm running "
            "statistics, no dropout), so that a margin or a curvature is a property of one "
            "fixed function"
        )


def _custom_functions(module, input_shape, torch) -> list[str]:
    """Names of the custom ``autograd.Function`` classes one PyTorch forward calls."""
    p = next((t for t in module.parameters() if t.dtype.is_floating_point), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    device = p.device if p is not None else torch.device("cpu")
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand((1, *input_shape), generator=g, dtype=dtype).to(device).requires_grad_(True)
    with torch.enable_grad():
        out = module(x)
    names, seen = [], set()
    todo = [t.grad_fn for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)  # the Function class of a custom node
        if cls is not None:
            name = f"{cls.__module__}.{cls.__qualname__}"
            if name not in names:
                names.append(name)
        todo.extend(n for n, _ in node.next_functions)
    return names


def _shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) or not all(
        isinstance(d, int | np.integer) and d > 0 for d in input_shape
    ):
        raise ValueError(
            f"input_shape must be the shape of one example, a tuple of positive ints such as "
            f"(32, 32, 3) for NHWC images, got {input_shape!r}"
        )
    return tuple(int(d) for d in input_shape)


# ------------------------------------------------------------------------------ the entry point


def from_torch_module(module, input_shape, *, mean=None, std=None) -> Classifier:
    """A PyTorch ``nn.Module`` (in evaluation mode) as a classifier of NHWC inputs.

    Parameters
    ----------
    module : ``torch.nn.Module`` in evaluation mode (``module.eval()``), whose ``forward``
        maps a batch to logits ``(N, K)``. Any architecture PyTorch runs: torchvision, timm,
        RobustBench models, your own. Its forward runs through torchax, which lowers each
        ATen operator to JAX; an operator torchax does not implement raises at the first
        call.
    input_shape : the shape of one example in the package's layout: ``(H, W, C)`` for
        images (the classifier takes NHWC batches and hands NCHW to the module), any other
        rank as is. The module is run once on a random input of this shape in PyTorch (to
        find custom autograd Functions) and once abstractly in JAX (to check that it returns
        logits).
    mean, std : optional input normalisation inside the classifier, per channel for images
        (e.g. CIFAR-10's ``(0.4914, 0.4822, 0.4465)`` and ``(0.2471, 0.2435, 0.2616)``), as
        :class:`~geomrobust.models.Normalized`: the classifier is then a function of the
        images in ``[0, 1]``, and every distance is in pixel units. Give both or neither.

    Returns
    -------
    Classifier
        ``apply(weights, x)``: the weights are a dict of the module's floating parameters and
        buffers (names of ``state_dict``, tied weights once), copied from the module (later
        changes to the module are not seen; convert again). Integer and boolean buffers are
        constants of the program. ``apply`` compares equal for every module of the same
        architecture, so a second model compiles nothing. Computation is in the wider of the
        input's and the weights' dtype (``float64`` needs ``jax_enable_x64``).

    Warns
    -----
    CustomAutogradWarning
        when the forward calls a custom ``torch.autograd.Function``: JAX differentiates its
        forward computation and ignores its hand-written ``backward``. Gradient-masking
        defences rely on such backwards; the measured gradients, margins and curvatures are
        those of the function the module computes.

    Notes
    -----
    Needs ``pip install 'geomrobust[torch]'`` (``torch==2.12.1``, ``torchax==0.0.13``). For
    the architectures :func:`~geomrobust.models.from_torch` knows (WideResNet, PreActResNet,
    torchvision ResNets), its native Flax models need neither PyTorch nor torchax; this route
    covers everything else; ``python -m benchmarks.bench_real_models --torchax`` compares
    the two routes on the same weights. Every call runs one jitted program per architecture
    and input shape: the PyTorch forward runs through torchax once per shape, not per call.

    Examples
    --------
    >>> import torch, torchvision  # doctest: +SKIP
    >>> net = torchvision.models.resnet18(num_classes=10).eval()  # doctest: +SKIP
    >>> clf = from_torch_module(net, (32, 32, 3), mean=(0.49, 0.48, 0.45),
    ...                         std=(0.25, 0.24, 0.26))  # doctest: +SKIP
    >>> gr.deepfool(clf, x, bounds=(0.0, 1.0))  # doctest: +SKIP
    """
    torch, torchax = _import()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    shape = _shape(input_shape)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the input normalisation), or neither")
    _check_eval(module)
    name = type(module).__name__
    channels_last = len(shape) == 3
    torch_shape = (shape[2], shape[0], shape[1]) if channels_last else shape

    try:
        functions = _custom_functions(module, torch_shape, torch)
    except Exception as e:
        raise ValueError(
            f"{name} does not run in PyTorch on inputs of shape (N, {shape}) (NCHW "
            f"{torch_shape} to the module): {type(e).__name__}: {e}"
        ) from e
    if functions:
        warnings.warn(
            f"{name} calls the custom torch.autograd.Function(s) {', '.join(functions)}: JAX "
            "differentiates their forward computation and ignores their hand-written "
            "backward. Gradient-masking defences (straight-through or BPDA-style backwards, "
            "shattered gradients) rely on such backwards; every gradient, margin and "
            "curvature measured here is that of the function the module computes",
            CustomAutogradWarning,
            stacklevel=2,
        )

    states, fn = torchax.extract_jax(module, env=_environment())
    weights, baked = {}, {}
    for key, value in states.items():
        inexact = jnp.issubdtype(value.dtype, jnp.inexact)
        (weights if inexact else baked)[key] = value
    apply = _TorchModuleApply(fn, _Architecture(module, torch), baked, channels_last, name)
    clf = Classifier(apply, weights)

    dtype = jax.tree.leaves(weights)[0].dtype if weights else jnp.float32
    try:
        out = jax.eval_shape(clf, jax.ShapeDtypeStruct((2, *shape), dtype))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(
            f"{name} does not run through torchax on inputs of shape (N, {shape}) "
            f"(NCHW {torch_shape} to the module): {type(e).__name__}: {e}"
        ) from e
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{name} returned {out.dtype} logits; a classifier returns floats")
    if mean is None:
        return clf
    return as_classifier(Normalized(clf, mean, std))
