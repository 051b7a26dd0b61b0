"""Memoised program factories: one compilation per classifier and static settings.

An entry point that jits internally builds its program from the classifier (or model
functions) and hashable static settings; per-call data (inputs, keys, radii) are arguments of
the program, never captured. Memoising the factory means that calling the entry point again
with the same classifier object and settings reuses the compiled program (``jax.jit`` caches
compilations per function object, so a fresh closure per call would retrace and recompile).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps

__all__ = ["cached_program"]


def cached_program(factory: Callable) -> Callable:
    """``lru_cache`` a program factory (a few entries, typed keys), falling back to an
    uncached call when an argument is unhashable.

    Keys are compared by type and value (``1``, ``1.0`` and ``True`` differ: ``unroll=True``
    and ``unroll=1`` are different programs); put items of nested settings as
    ``(name, type(value), value)`` when they can collide. A classifier that cannot be hashed
    (e.g. a dataclass holding arrays) still works and simply compiles on every call.
    """
    cached = lru_cache(maxsize=8, typed=True)(factory)

    @wraps(factory)
    def get(*args):
        try:
            hash(args)
        except TypeError:
            return factory(*args)
        return cached(*args)

    get.cache_clear = cached.cache_clear
    get.cache_info = cached.cache_info
    return get
