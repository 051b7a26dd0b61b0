"""Renamed keyword arguments keep working for one release (docs/api.md).

``@renamed(max_iter="steps")`` lets a function accept ``max_iter=`` for ``steps=`` with a
``DeprecationWarning`` that names the new keyword; passing both is an error.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import jax

__all__ = ["deprecated_alias", "positional_key", "renamed"]


def renamed(**old_to_new: str) -> Callable[[Callable], Callable]:
    """Decorator: accept the old keyword names of ``old_to_new`` for one release."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}() got both {old}= (deprecated) and {new}=; "
                            f"pass {new}= only"
                        )
                    warnings.warn(
                        f"{fn.__name__}(): the keyword {old}= is deprecated and will be "
                        f"removed in the next release; use {new}= (docs/api.md)",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        inner.__renamed__ = dict(old_to_new)  # read by tests/test_api_contract.py
        return inner

    return wrap


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
