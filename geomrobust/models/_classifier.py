"""The classifier pytree: weights are arguments of compiled programs, never constants.

A classifier maps a batch ``x`` ``(N, *input_shape)`` to logits ``(N, K)``. Every compiled
program of the package takes it as a **pytree argument**: :class:`Classifier` holds the
weights as its leaves (``params``, traced) and ``apply(params, x)`` as its static part (part of
the tree structure, so a jit cache key). Consequences:

* one compilation serves every model of the same architecture, and a fresh adapter of the
  same model (its ``apply`` compares equal);
* the weights used are always those held at call time (nothing is baked into a program);
* programs can be vmapped over models or differentiated with respect to the weights.

:func:`as_classifier` builds one from what users have: a Flax NNX module (holding the
module's own variables, so it always computes with the current weights), a Linen module or Haiku
``Transformed`` with its params, an ``apply(params, x)`` function with its params, an
Equinox module or any other pytree callable (its array leaves become the weights), a
``functools.partial`` (its array arguments become the weights), or a plain function.

A plain function ``x -> logits`` has no visible weights: it is **static**, with JAX's usual
semantics for static arguments (compared by identity; arrays it closes over are constants of
the compiled program; a callable object that changes its attributes in place is not seen
to change). Pass a :class:`Classifier`, a pytree or an NNX module when the weights matter.
:func:`as_classifier` warns (:class:`StaticWeightsWarning`, once per function) when a plain
function or callable object visibly holds arrays (closure cells, the module globals its code
reads, its attributes): rebinding them later would silently give results for the old weights.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

__all__ = [
    "Classifier",
    "StaticFunction",
    "StaticWeightsWarning",
    "as_classifier",
    "is_array_leaf",
]


class StaticWeightsWarning(UserWarning):
    """A plain function (or callable object) passed as a classifier reads arrays it holds
    (closure, globals, attributes): they are constants of the compiled programs, so rebinding
    them later silently gives results for the old weights. Pass ``gr.Classifier(apply,
    params)`` instead."""


def is_array_leaf(v) -> bool:
    """A leaf that a jitted program can take as a traced argument."""
    return isinstance(v, jax.Array | np.ndarray | np.generic) or (
        hasattr(v, "shape") and hasattr(v, "dtype") and not callable(v)
    )


@jax.tree_util.register_pytree_node_class
class Classifier:
    """A classifier as a pytree: ``Classifier(apply, params)(x) = apply(params, x)``.

    Parameters
    ----------
    apply : ``apply(params, x) -> logits``, ``(N, *s) -> (N, K)``; rows must not interact.
        It is the static part of the pytree (compared with ``==`` and hashed as a jit cache
        key), so it must be hashable; use a module-level function or one of the package's
        adapters (:func:`as_classifier`), not a fresh lambda per call.
    params : a pytree of arrays (the weights and any other state, e.g. BatchNorm
        statistics): the leaves, traced by every compiled program.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> def affine(p, x):
    ...     return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]
    >>> clf = Classifier(affine, {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)})
    >>> clf(jnp.ones((3, 4))).shape
    (3, 2)
    """

    __slots__ = ("__weakref__", "apply", "params")

    def __init__(self, apply: Callable, params: Any = ()):
        if not callable(apply):
            raise TypeError(f"apply must be callable as apply(params, x), got {type(apply)}")
        try:
            hash(apply)
        except TypeError:
            raise TypeError(
                f"apply must be hashable (it is the static part of the classifier and a jit "
                f"cache key); got an unhashable {type(apply).__name__}. Use a function, or "
                f"geomrobust.as_classifier(...) for modules"
            ) from None
        self.apply = apply
        self.params = params

    def __call__(self, x):
        return self.apply(self.params, x)

    def tree_flatten(self):
        return (self.params,), self.apply

    @classmethod
    def tree_unflatten(cls, apply, children):
        obj = object.__new__(cls)
        obj.apply = apply
        obj.params = children[0]
        return obj

    def __repr__(self) -> str:
        leaves = jax.tree.leaves(self.params)
        size = sum(int(np.size(a)) for a in leaves)
        return f"Classifier({self.apply!r}, {len(leaves)} arrays, {size:,} numbers)"


# ------------------------------------------------------------------------------ adapters


class _Closed:
    """``apply(params, x) = fn(x)`` for a plain function (static, compared by identity or
    ``==``; ``params`` is empty)."""

    __slots__ = ("__weakref__", "fn", "key")

    def __init__(self, fn):
        self.fn = fn
        try:
            hash(fn)
            self.key = fn
        except TypeError:  # an unhashable callable object: by identity
            self.key = _Identity(fn)

    def __call__(self, params, x):
        return self.fn(x)

    def __eq__(self, other):
        return type(other) is _Closed and self.key == other.key

    def __hash__(self):
        return hash(("closed", self.key))

    def __repr__(self):
        return f"static {getattr(self.fn, '__qualname__', type(self.fn).__name__)}"


class _Identity:
    """Compared by identity (holding the object, so its ``id`` is never reused)."""

    __slots__ = ("__weakref__", "obj")

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Identity and self.obj is other.obj

    def __hash__(self):
        return id(self.obj)


class _Key:
    """A hashable stand-in for a static value: the value itself when hashable, else its
    ``repr`` (a structural description), else its identity."""

    __slots__ = ("__weakref__", "_hash", "value")

    def __init__(self, value):
        try:
            h = hash(value)
            self.value = ("hash", value)
        except TypeError:
            self.value = ("repr", type(value), repr(value))
            h = hash(self.value)
        self._hash = h  # computed once: jit hashes the classifier's structure at every call

    def __eq__(self, other):
        if type(other) is not _Key or self.value[0] != other.value[0]:
            return False
        if self.value[0] == "hash":
            try:
                return bool(self.value[1] == other.value[1])
            except Exception:  # e.g. an array-valued __eq__
                return self.value[1] is other.value[1]
        return self.value == other.value

    def __hash__(self):
        return self._hash


def _fingerprint(fn, depth: int = 0):
    """A structural description of a Python function: its code, globals and the values it
    closes over (functions recursively, hashable values by value, anything else (arrays,
    which may be weights; mutable containers) by identity)."""

    if not isinstance(fn, types.FunctionType) or depth > 8:
        return _Key(fn)
    cells = []
    for c in fn.__closure__ or ():
        try:
            v = c.cell_contents
        except ValueError:  # an empty cell
            cells.append(("empty",))
            continue
        if isinstance(v, types.FunctionType):
            cells.append(("fn", _fingerprint(v, depth + 1)))
        else:
            try:  # hashable values (numbers, strings, tuples, functions) by value
                hash(v)
                cells.append(("value", _Key(v)))
            except TypeError:  # mutable containers, arrays (maybe weights): by identity
                cells.append(("object", _Identity(v)))
    return (
        fn.__code__,
        id(fn.__globals__),
        _Key(fn.__defaults__),
        _Key(fn.__kwdefaults__),
        tuple(cells),
    )


class StaticFunction:
    """A function as a static jit argument, compared by what it computes rather than by
    identity: two closures made by the same code over equal hashable values (``lambda k:
    create_model("lenet", shape, 2, key=k)`` built twice) are equal, so a program keyed on
    them compiles once. Arrays and mutable objects a closure holds are compared by identity
    (arrays may be weights; a list or dict may change). Used for architecture builders
    (``nads``' ``init_fn``, the Fourier accuracy map's ``init_params`` / ``apply_fn``);
    classifiers are pytrees instead."""

    __slots__ = ("__weakref__", "_hash", "fn", "key")

    def __init__(self, fn):
        if isinstance(fn, StaticFunction):
            fn = fn.fn
        if not callable(fn):
            raise TypeError(f"expected a function, got {type(fn).__name__}")
        self.fn = fn
        self.key = _fingerprint(fn)
        self._hash = hash(self.key)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __eq__(self, other):
        return type(other) is StaticFunction and self.key == other.key

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"StaticFunction({getattr(self.fn, '__qualname__', self.fn)!r})"


class _NNXApply:
    """``apply(state, x) = nnx.merge(graphdef, state)(x)`` for a Flax NNX module."""

    __slots__ = ("__weakref__", "graphdef", "key")

    def __init__(self, graphdef):
        self.graphdef = graphdef
        self.key = _Key(graphdef)

    def __call__(self, state, x):
        return nnx.merge(self.graphdef, state)(x)

    def __eq__(self, other):
        return type(other) is _NNXApply and self.key == other.key

    def __hash__(self):
        return hash(("nnx", self.key))

    def __repr__(self):
        return f"nnx {self.graphdef.nodes[0].type}" if hasattr(self.graphdef, "nodes") else "nnx"


class _TwoArg:
    """``apply(params, x)`` given by the user (Linen module, Haiku, a function)."""

    __slots__ = ("__weakref__", "fn", "key", "rng", "static")

    def __init__(self, fn, *, rng: bool = False, static=None):
        self.fn = fn
        self.rng = rng  # Haiku's apply(params, rng, x): rng None
        self.static = static  # (treedef, mask, static leaves) of non-array params, or None
        self.key = (_Key(fn), rng, _Key(static))

    def __call__(self, params, x):
        if self.static is not None:
            params = _combine(params, self.static)
        return self.fn(params, None, x) if self.rng else self.fn(params, x)

    def __eq__(self, other):
        return type(other) is _TwoArg and self.key == other.key

    def __hash__(self):
        return hash(("apply", self.key))

    def __repr__(self):
        return f"apply {getattr(self.fn, '__qualname__', type(self.fn).__name__)}"


class _Linen:
    """``apply(params, x) = module.apply(params, x)`` for a Linen module (compared by value:
    Linen modules are dataclasses of their hyperparameters)."""

    __slots__ = ("__weakref__", "key", "module")

    def __init__(self, module):
        self.module = module
        self.key = _Key(module)

    def __call__(self, params, x):
        return self.module.apply(params, x)

    def __eq__(self, other):
        return type(other) is _Linen and self.key == other.key

    def __hash__(self):
        return hash(("linen", self.key))

    def __repr__(self):
        return f"linen {type(self.module).__name__}"


class _Pytree:
    """``apply(arrays, x) = rebuild(arrays, static)(x)`` for a callable pytree (an Equinox
    module, a registered dataclass, ``jax.tree_util.Partial``): array leaves are the
    weights, the tree structure and the other leaves (activation functions, ...) static."""

    __slots__ = ("__weakref__", "key", "static")

    def __init__(self, static):
        self.static = static
        self.key = _Key(static)

    def __call__(self, arrays, x):
        return _combine(arrays, self.static)(x)

    def __eq__(self, other):
        return type(other) is _Pytree and self.key == other.key

    def __hash__(self):
        return hash(("pytree", self.key))

    def __repr__(self):
        return f"pytree {self.static[0]}"


class _Partial:
    """``apply(arrays, x) = func(*args, x, **keywords)`` for ``functools.partial``."""

    __slots__ = ("__weakref__", "func", "key", "static")

    def __init__(self, func, static):
        self.func = func
        self.static = static
        self.key = (_Key(func), _Key(static))

    def __call__(self, arrays, x):
        args, kwargs = _combine(arrays, self.static)
        return self.func(*args, x, **kwargs)

    def __eq__(self, other):
        return type(other) is _Partial and self.key == other.key

    def __hash__(self):
        return hash(("partial", self.key))

    def __repr__(self):
        return f"partial {getattr(self.func, '__qualname__', type(self.func).__name__)}"


def _partition(tree):
    """Split a pytree into its array leaves (a list) and a hashable static description
    ``(treedef, mask, other leaves)``."""
    leaves, treedef = jax.tree.flatten(tree)
    mask = tuple(is_array_leaf(v) for v in leaves)
    arrays = [v for v, m in zip(leaves, mask, strict=True) if m]
    others = tuple(v for v, m in zip(leaves, mask, strict=True) if not m)
    return arrays, (treedef, mask, others)


def _combine(arrays, static):
    treedef, mask, others = static
    it_a, it_o = iter(arrays), iter(others)
    return jax.tree.unflatten(treedef, [next(it_a) if m else next(it_o) for m in mask])


def _nnx_classifier(module) -> Classifier:
    """``module`` as a classifier in evaluation mode, holding the module's own variables
    (a live view of its weights), without touching the module."""

    graphdef, state = nnx.split(module)
    copy = nnx.merge(graphdef, state)  # new modules around the same variables
    copy.eval()  # deterministic dropout, running statistics (the module is unchanged)
    graphdef, state = nnx.split(copy)
    return Classifier(_NNXApply(graphdef), state)


def _is_linen(obj) -> bool:
    return isinstance(obj, nn.Module)


def _is_haiku_transformed(obj) -> bool:
    return type(obj).__module__.startswith("haiku") and hasattr(obj, "apply")


def _takes_rng(apply) -> bool:
    try:
        return "rng" in inspect.signature(apply).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def as_classifier(obj, params=None) -> Classifier:
    """A :class:`Classifier` from a model in any of the supported forms.

    Parameters
    ----------
    obj :
        * a :class:`Classifier`: returned as is (``params`` must be None);
        * a Flax NNX module (``params`` None): split into its graph definition (static, in
          evaluation mode; the module itself is not modified) and its whole state
          (parameters, BatchNorm statistics, ...; traced). The state holds the module's own
          variables, so the classifier always computes with the module's current weights:
          in-place updates (``model.w[...] = ...``, ``nnx.update``, an ``nnx.Optimizer``
          step) show at the next call, jitted or not (replacing a variable object, or a
          change of structure, needs a new ``as_classifier``). For a frozen copy use
          :func:`geomrobust.models.pure_apply`. Modules of the same architecture (equal
          graph definitions; the package's models record a hashable configuration) share
          compiled programs;
        * a Linen module with its ``params`` (the variables dict): ``module.apply(params, x)``;
        * a Haiku ``hk.transform(...)`` result with its ``params``: ``apply(params, None, x)``
          (no RNG: deterministic), or ``hk.without_apply_rng(...)``: ``apply(params, x)``;
        * a function ``apply(params, x)`` with its ``params``;
        * the pair ``(apply, params)`` as one tuple, of any of the three forms above
          (``params`` None): the same as ``as_classifier(apply, params)``;
        * an Equinox module, or any callable pytree (a ``jax.tree_util``-registered dataclass,
          ``jax.tree_util.Partial``, ``eqx.filter_vmap(model)``), ``params`` None: its array
          leaves are the weights; other leaves and the tree structure are static. It must map
          a batch to logits (wrap a per-example Equinox model with ``eqx.filter_vmap``);
        * a ``functools.partial(apply, params, ...)``: the array arguments are the weights;
        * a plain function ``x -> logits`` (``params`` None): static (see the module
          docstring).
    params : the weights, for the forms above that take them.

    Returns
    -------
    Classifier
    """
    if isinstance(obj, Classifier):
        if params is not None:
            raise TypeError("params must be None for a Classifier (it holds its parameters)")
        return obj
    try:
        if isinstance(obj, nnx.Module):
            if params is not None:
                raise TypeError("params must be None for an NNX module (it holds its weights)")
            return _nnx_classifier(obj)
    except ImportError:  # pragma: no cover
        pass
    if params is not None:
        arrays, static = _partition(params)
        static = None if all(static[1]) else static
        tree = arrays if static is not None else params
        if _is_linen(obj):
            if static is not None:
                return Classifier(_TwoArg(obj.apply, static=static), arrays)
            return Classifier(_Linen(obj), params)
        if _is_haiku_transformed(obj):
            return Classifier(_TwoArg(obj.apply, rng=_takes_rng(obj.apply), static=static), tree)
        if not callable(obj):
            raise TypeError(
                f"with params, obj must be an apply(params, x) function, a Linen module or a "
                f"Haiku transform, got {type(obj).__name__}"
            )
        return Classifier(_TwoArg(obj, static=static), tree)
    if isinstance(obj, functools.partial):
        arrays, static = _partition((obj.args, obj.keywords))
        return Classifier(_Partial(obj.func, static), arrays)
    if _is_linen(obj):
        raise TypeError(
            "a Linen module needs its variables: as_classifier(module, params) with params "
            "from module.init(...)"
        )
    if _is_haiku_transformed(obj):
        raise TypeError(
            "a Haiku transform needs its params: as_classifier(transformed, params) with "
            "params from transformed.init(...)"
        )
    if (
        type(obj) is tuple
        and len(obj) == 2
        and obj[1] is not None
        and (callable(obj[0]) or _is_linen(obj[0]) or _is_haiku_transformed(obj[0]))
    ):  # the pair (apply, params) in one argument
        return as_classifier(obj[0], obj[1])
    leaves = jax.tree.leaves(obj)
    if not (len(leaves) == 1 and leaves[0] is obj):  # a registered pytree
        if not callable(obj):
            raise TypeError(f"obj must be callable as obj(x) -> logits, got {type(obj).__name__}")
        arrays, static = _partition(obj)
        return Classifier(_Pytree(static), arrays)
    if not callable(obj):
        raise TypeError(
            "obj must be a classifier: a function x -> logits, a geomrobust.Classifier, a Flax "
            "NNX module, an Equinox module, or an apply function / Linen module / Haiku "
            f"transform with its params; got {type(obj).__name__}"
        )
    _warn_static_weights(obj)
    return Classifier(_Closed(obj), ())


_WARNED: weakref.WeakSet = weakref.WeakSet()
_WARNED_IDS: set[int] = set()  # objects that take no weak reference


def _holds_arrays(value) -> bool:
    try:
        leaves = jax.tree.leaves(value)
    except Exception:  # an exotic object: nothing visible
        return False
    return any(isinstance(v, jax.Array | np.ndarray) and np.ndim(v) >= 1 for v in leaves)


def _held_arrays(obj) -> list[str]:
    """Names of the arrays a plain function / callable object visibly holds: closure cells,
    module globals its code reads (``__code__.co_names``), its attributes."""
    found = []
    fn = obj.__func__ if inspect.ismethod(obj) else obj
    holder = obj.__self__ if inspect.ismethod(obj) else None
    if isinstance(fn, types.FunctionType):
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if _holds_arrays(contents):
                found.append(f"closure variable {name!r}")
        g = fn.__globals__
        for name in fn.__code__.co_names:
            if name in g and isinstance(g[name], jax.Array | np.ndarray) and np.ndim(g[name]):
                found.append(f"global {name!r}")
    elif not isinstance(fn, types.BuiltinFunctionType):
        holder = obj
    if holder is not None:
        for name, value in getattr(holder, "__dict__", {}).items():
            if _holds_arrays(value):
                found.append(f"attribute {name!r}")
    return found


def _stacklevel() -> int:
    """The stack level of the first caller outside this package (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("geomrobust"):
        frame, level = frame.f_back, level + 1
    return level


def _warn_static_weights(obj) -> None:
    """Warn once per function when a static classifier holds arrays (not for this package's
    own functions and adapters)."""
    fn = obj.__func__ if inspect.ismethod(obj) else obj
    owner = getattr(fn, "__module__", None) or type(fn).__module__ or ""
    if owner.startswith("geomrobust") or type(obj).__module__.startswith("geomrobust"):
        return
    key = obj.__self__ if inspect.ismethod(obj) else obj  # a bound method is made per access
    try:
        if key in _WARNED:
            return
    except TypeError:
        if id(key) in _WARNED_IDS:
            return
    found = _held_arrays(obj)
    if not found:
        return
    try:
        _WARNED.add(key)
    except TypeError:
        _WARNED_IDS.add(id(key))
    name = getattr(obj, "__qualname__", type(obj).__name__)
    warnings.warn(
        f"the classifier {name} is static (a plain function or callable object) and reads "
        f"arrays it holds "
        f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}): they are constants of "
        "the compiled programs (JAX's static semantics), so rebinding them later silently "
        "gives results for the old weights. Pass the weights as arguments: "
        "gr.Classifier(apply, params) with apply(params, x) -> logits",
        StaticWeightsWarning,
        stacklevel=_stacklevel(),
    )
