"""Renamed keyword arguments keep working for one release (docs/api.md).

``@renamed(max_iter="steps")`` lets a function accept ``max_iter=`` for ``steps=`` with a
``DeprecationWarning`` that names the new keyword; passing both is an error. On a settings
dataclass it renames constructor keywords (fields) the same way.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping

import jax

__all__ = ["deprecated_alias", "positional_key", "renamed", "upgrade_record"]


def _rename_keywords(name: str, kwargs: dict, old_to_new: Mapping[str, str]) -> dict:
    """``kwargs`` with each old key of ``old_to_new`` replaced by its new one, warning once per
    old key (attributed to the caller of the caller of this helper's caller)."""
    for old, new in old_to_new.items():
        if old in kwargs:
            if new in kwargs:
                raise TypeError(
                    f"{name}() got both {old}= (deprecated) and {new}=; pass {new}= only"
                )
            warnings.warn(
                f"{name}(): the keyword {old}= is deprecated and will be removed in the next "
                f"release; use {new}= (docs/api.md)",
                DeprecationWarning,
                stacklevel=3,
            )
            kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed(**old_to_new: str) -> Callable[[Callable], Callable]:
    """Decorator: accept the old keyword names of ``old_to_new`` for one release.

    On a function, ``fn(old=v)`` is ``fn(new=v)`` with a ``DeprecationWarning``; on a
    (data)class, the same holds for its constructor (renamed settings fields), and
    :func:`upgrade_record` translates a saved record of its fields (a resumed run's
    settings). The mapping is kept as ``__renamed__`` (read by tests/test_api_contract.py).
    """

    def wrap(obj):
        if isinstance(obj, type):
            init = obj.__init__

            @functools.wraps(init)
            def cls_init(self, *args, **kwargs):
                init(self, *args, **_rename_keywords(obj.__name__, kwargs, old_to_new))

            obj.__init__ = cls_init
            obj.__renamed__ = dict(old_to_new)
            return obj

        @functools.wraps(obj)
        def inner(*args, **kwargs):
            return obj(*args, **_rename_keywords(obj.__name__, kwargs, old_to_new))

        inner.__renamed__ = dict(old_to_new)
        return inner

    return wrap


def upgrade_record(record: Mapping, old_to_new: Mapping[str, str]) -> dict:
    """A saved record (a dict of settings written by an older release) with its renamed keys
    under their new names; a key present under both names keeps the new one's value."""
    out = dict(record)
    for old, new in old_to_new.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def deprecated_alias(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (an attribute, a field, a function) is now ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new} (docs/api.md)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def positional_key(position: int = 0) -> Callable[[Callable], Callable]:
    """Decorator: a function whose ``key`` became keyword-only accepts the old positional
    form for one release (docs/api.md: ``key`` is keyword-only).

    The old signature had ``key`` at ``position`` among the positional parameters; a call with
    one positional argument more than the new signature takes, or with a typed PRNG key (or
    None) at ``position``, is the old form: that argument becomes ``key=`` with a
    ``DeprecationWarning``.
    """

    def wrap(fn: Callable) -> Callable:
        params = inspect.signature(fn).parameters.values()
        n_positional = sum(
            p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in params
        )

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            old = len(args) == n_positional + 1
            if not old and len(args) > position and "key" not in kwargs:
                first = args[position]  # a typed key (or None) where data belongs: old form
                dtype = getattr(first, "dtype", None)
                old = first is None or (
                    dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
                )
            if old:
                if "key" in kwargs:
                    raise TypeError(
                        f"{fn.__name__}() got a positional key and key=; pass key= only"
                    )
                warnings.warn(
                    f"{fn.__name__}(): a positional key is deprecated and will be an error in "
                    "the next release; pass key= (docs/api.md)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                args = list(args)
                kwargs["key"] = args.pop(position)
            return fn(*args, **kwargs)

        inner.__positional_key__ = position
        return inner

    return wrap
