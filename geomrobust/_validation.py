"""Input checks shared by every public entry point.

Checks run once, eagerly, outside ``jit`` (on concrete arrays). Each error names the argument,
what was expected, and what was given, and says how to fix it where that is not obvious.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "all_concrete",
    "check_batch",
    "check_bounds",
    "check_classifier",
    "check_finite",
    "check_int",
    "check_key",
    "check_labels",
    "check_orthonormal",
    "check_positive",
    "is_concrete",
]


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    try:
        import jax

        return not isinstance(x, jax.core.Tracer)
    except Exception:  # pragma: no cover
        return True


def all_concrete(*trees) -> bool:
    """True when no leaf of ``trees`` (arrays, a classifier's weights, settings) is a tracer:
    the caller is not inside ``jit``/``vmap``/``grad``, so a host-driven driver may run."""
    import jax

    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(trees))


def check_batch(x, name: str = "x", *, input_shape=None, min_ndim: int = 2):
    """``x`` must be a floating array ``(N, *input_shape)`` with ``N >= 1``."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
    if len(shape) < min_ndim:
        raise ValueError(
            f"{name} must be a batch of shape (N, *input_shape) with at least {min_ndim} "
            f"dimensions, got shape {tuple(shape)}; add a leading batch axis with x[None]"
        )
    if shape[0] < 1:
        raise ValueError(f"{name} must hold at least one example, got shape {tuple(shape)}")
    if input_shape is not None and tuple(shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{name} has per-example shape {tuple(shape[1:])}, but the classifier expects "
            f"{tuple(input_shape)}"
        )
    if is_concrete(x):
        check_finite(x, name)
    return x


def check_finite(x, name: str = "x"):
    """Raise if ``x`` holds NaN or Inf (concrete arrays only)."""
    if not is_concrete(x):
        return x
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} non-finite value(s) (NaN or Inf); clean or mask the input"
        )
    return x


def check_labels(y, num_classes: int, n: int, name: str = "y"):
    """Labels must be integers of shape ``(n,)`` in ``[0, num_classes)``."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes (K >= 2), got K={num_classes}")
    shape = getattr(y, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an integer array of shape ({n},), got {type(y)}")
    if not np.issubdtype(np.dtype(y.dtype), np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if tuple(shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match x, got {tuple(shape)}")
    if is_concrete(y):
        arr = np.asarray(y)
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
    return y


def check_positive(value, name: str, *, allow_inf: bool = False, allow_zero: bool = False):
    """A scalar setting that must be positive (and finite unless ``allow_inf``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if np.isnan(v) or (np.isinf(v) and not allow_inf) or v < 0 or (v == 0 and not allow_zero):
        expected = "a non-negative" if allow_zero else "a positive"
        raise ValueError(
            f"{name} must be {expected} {'' if allow_inf else 'finite '}number, got {value!r}"
        )
    return v


def check_orthonormal(basis, name: str = "subspace", *, atol: float | None = None):
    """``basis`` must be ``(D, s)`` with orthonormal columns; checked on ``s`` random probes.

    Cheap: ``||Bᵀ B z - z||`` for a few random ``z`` costs ``O(D s)``, not ``O(D s²)``.
    """
    shape = getattr(basis, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name} must be a (D, s) matrix of orthonormal columns, got {shape}")
    if shape[1] > shape[0] or shape[1] < 1:
        raise ValueError(f"{name} must have 1 <= s <= D columns, got shape {tuple(shape)}")
    if not is_concrete(basis):
        return basis
    b = np.asarray(basis, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name} contains non-finite values")
    if atol is None:
        atol = 1e-3 if np.dtype(basis.dtype) != np.float64 else 1e-8
    z = np.random.default_rng(0).standard_normal((shape[1], 4))
    err = np.abs(b.T @ (b @ z) - z).max() / max(np.abs(z).max(), 1.0)
    if err > atol:
        raise ValueError(
            f"{name} must have orthonormal columns (Bᵀ B = I); deviation {err:.2e} exceeds "
            f"{atol:.0e}. Orthonormalize it, e.g. with jnp.linalg.qr(B)[0]"
        )
    return basis


def check_classifier(logits_fn, x, name: str = "logits_fn") -> int:
    """``logits_fn`` must map ``x`` ``(N, *s)`` to floating logits ``(N, K)`` with ``K >= 2``.

    Checked by ``jax.eval_shape`` (no FLOPs). Returns ``K``.
    """
    import jax

    if not callable(logits_fn):
        raise TypeError(f"{name} must be a callable x -> logits, got {type(logits_fn).__name__}")
    try:
        out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    except Exception as e:  # the classifier cannot even trace on x
        raise ValueError(
            f"{name} cannot be applied to x of shape {tuple(x.shape)} and dtype {x.dtype}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    shape = getattr(out, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must return one array of logits (N, K), got {type(out)}")
    if len(shape) != 2 or shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must map x of shape {tuple(x.shape)} to logits of shape (N, K) with "
            f"N={x.shape[0]}, got {tuple(shape)}"
        )
    if not np.issubdtype(np.dtype(out.dtype), np.floating):
        raise TypeError(f"{name} must return floating logits, got dtype {out.dtype}")
    if shape[1] < 2:
        raise ValueError(
            f"a classifier needs at least 2 classes (K >= 2), {name} gives K={shape[1]}"
        )
    return int(shape[1])


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """An integer setting ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bounds(bounds, name: str = "bounds"):
    """``None`` or a pair ``(lo, hi)`` of finite scalars/arrays with ``lo <= hi``."""
    if bounds is None:
        return None
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError(f"{name} must be None or a pair (lo, hi), got {bounds!r}")
    lo, hi = (np.asarray(b) for b in bounds) if all(map(is_concrete, bounds)) else (None, None)
    if lo is None:
        return bounds
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"{name} must be finite, got {bounds!r}")
    if np.any(lo > hi):
        raise ValueError(f"{name} must satisfy lo <= hi, got {bounds!r}")
    return bounds


def check_key(key, name: str = "key"):
    """``key`` must be a JAX PRNG key (``jax.random.key(seed)``; legacy uint32 ``(2,)`` too)."""
    import jax

    if not is_concrete(key):
        return key
    shape = getattr(key, "shape", None)
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    legacy = (
        not typed and dtype is not None and str(dtype) == "uint32" and tuple(shape or ()) == (2,)
    )
    if not (typed and shape == ()) and not legacy:
        raise TypeError(
            f"{name} must be a JAX PRNG key such as jax.random.key(0), got "
            f"{type(key).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}"
        )
    return key
