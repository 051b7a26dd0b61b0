"""Renamed keyword arguments keep working for one release (docs/api.md).

``@renamed(max_iter="steps")`` lets a function accept ``max_iter=`` for ``steps=`` with a
``DeprecationWarning`` that names the new keyword; passing both is an error.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

__all__ = ["deprecated_alias", "renamed"]


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
