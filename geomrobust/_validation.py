"""Input checks shared by every public entry point.

Checks run once, eagerly, outside ``jit`` (on concrete arrays). Each error names the argument,
what was expected, and what was given, and says how to fix it where that is not obvious.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "all_concrete",
    "check_batch",
    "check_bounds",
    "check_classifier",
    "check_finite",
    "check_in_bounds",
    "check_int",
    "check_key",
    "check_labels",
    "check_orthonormal",
    "check_positive",
    "compute_dtype",
    "is_concrete",
    "is_floating",
    "search_inputs",
    "to_classifier_device",
]


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    try:
        return not isinstance(x, jax.core.Tracer)
    except Exception:  # pragma: no cover
        return True


def all_concrete(*trees) -> bool:
    """True when no leaf of ``trees`` (arrays, a classifier's weights, settings) is a tracer:
    the caller is not inside ``jit``/``vmap``/``grad``, so a host-driven driver may run."""

    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(trees))


def is_floating(dtype) -> bool:
    """True for every floating dtype, bfloat16 included (NumPy does not count it)."""
    return bool(jnp.issubdtype(np.dtype(dtype), jnp.floating))


def check_batch(x, name: str = "x", *, input_shape=None, min_ndim: int = 2):
    """``x`` must be a floating array ``(N, *input_shape)`` with ``N >= 1``."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    dtype = np.dtype(x.dtype)
    if not is_floating(dtype):
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


def _all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()`` in blocks of rows: the boolean temporary stays near 64 kB
    for a whole dataset (one ``N x D`` byte array otherwise)."""
    if arr.ndim == 0:
        return bool(np.isfinite(arr))
    rows = max(1, 2**16 // max(1, int(np.prod(arr.shape[1:]))))
    return all(bool(np.isfinite(arr[s : s + rows]).all()) for s in range(0, arr.shape[0], rows))


def check_finite(x, name: str = "x"):
    """Raise if ``x`` holds NaN or Inf (concrete arrays only)."""
    if not is_concrete(x):
        return x
    arr = np.asarray(x)
    if is_floating(arr.dtype) and not _all_finite(arr):
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


def _classifier_output(logits_fn, x, name: str = "logits_fn"):
    """``jax.eval_shape`` of ``logits_fn`` on ``x`` (no FLOPs), with a clear error."""
    if not callable(logits_fn):
        raise TypeError(f"{name} must be a callable x -> logits, got {type(logits_fn).__name__}")
    try:
        return jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    except Exception as e:  # the classifier cannot even trace on x
        raise ValueError(
            f"{name} cannot be applied to x of shape {tuple(x.shape)} and dtype {x.dtype}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def _check_logits(out, x, name: str) -> int:
    shape = getattr(out, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must return one array of logits (N, K), got {type(out)}")
    if len(shape) != 2 or shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must map x of shape {tuple(x.shape)} to logits of shape (N, K) with "
            f"N={x.shape[0]}, got {tuple(shape)}"
        )
    if not is_floating(out.dtype):
        raise TypeError(f"{name} must return floating logits, got dtype {out.dtype}")
    if shape[1] < 2:
        raise ValueError(
            f"a classifier needs at least 2 classes (K >= 2), {name} gives K={shape[1]}"
        )
    return int(shape[1])


def check_classifier(logits_fn, x, name: str = "logits_fn") -> int:
    """``logits_fn`` must map ``x`` ``(N, *s)`` to floating logits ``(N, K)`` with ``K >= 2``.

    Checked by ``jax.eval_shape`` (no FLOPs). Returns ``K``.
    """
    return _check_logits(_classifier_output(logits_fn, x, name), x, name)


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


def compute_dtype(x_dtype, logits_dtype=None):
    """The dtype a search computes and returns in (one rule for every entry point).

    ``float16`` and ``bfloat16`` inputs are computed in ``float32`` (their 8-11 bits of
    mantissa cannot hold a DeepFool step or a bisection bracket); otherwise the wider of
    ``x``'s dtype and the classifier's logits dtype: a ``float32`` ``x`` with a ``float64``
    model runs in ``float64`` (and the reverse), as JAX's promotion would. ``float64`` needs
    ``jax_enable_x64`` (without it JAX canonicalizes to ``float32``).
    """
    dt = jnp.promote_types(np.dtype(x_dtype), jnp.float32)
    if logits_dtype is not None:
        dt = jnp.promote_types(dt, np.dtype(logits_dtype))
    return np.dtype(jax.dtypes.canonicalize_dtype(dt))


def _bounds_tolerance(lo, hi, dtype):
    """Tolerance of the in-box check: ``max(1e-6 (hi - lo), 8 eps max(|lo|, |hi|))``."""
    eps = float(jnp.finfo(np.dtype(dtype)).eps) if is_floating(dtype) else 1e-7
    return np.maximum(1e-6 * (hi - lo), 8 * eps * np.maximum(np.abs(lo), np.abs(hi)))


def check_in_bounds(x, bounds, name: str = "x"):
    """Every example of ``x`` ``(N, *s)`` must lie in the box ``bounds = (lo, hi)``.

    A coordinate counts as outside when it exceeds the box by more than
    ``tol = max(1e-6 (hi - lo), 8 eps max(|lo|, |hi|))`` (``eps`` of ``x``'s dtype: a
    float32 image in ``[0, 1]`` may stray by 1e-6); within the tolerance ``x`` is accepted as
    is. Outside, a ``ValueError`` names how many examples lie outside and the fix. Concrete
    arrays only (inside ``jit`` the caller checked before); ``bounds=None`` checks nothing.
    """
    if bounds is None or not (is_concrete(x) and all(map(is_concrete, bounds))):
        return x
    check_bounds(bounds)
    arr = np.asarray(x)
    lo = np.asarray(bounds[0], np.float64)
    hi = np.asarray(bounds[1], np.float64)
    try:
        lo_all, hi_all = np.broadcast_to(lo, arr.shape), np.broadcast_to(hi, arr.shape)
    except ValueError:
        raise ValueError(
            f"bounds must be scalars or arrays broadcastable to {name} of shape "
            f"{tuple(arr.shape)}, got shapes {np.shape(lo)} and {np.shape(hi)}"
        ) from None
    # in blocks of rows: the float64 temporaries (about five of the block's size) stay near
    # 2 MB for a whole dataset (blocks of 2**20 values made a 25 MB transient)
    out = np.zeros(arr.shape[0], bool)
    worst = 0.0
    rows = max(1, 2**16 // max(1, int(np.prod(arr.shape[1:]))))
    for s in range(0, arr.shape[0], rows):
        a = arr[s : s + rows].astype(np.float64)
        lo_b, hi_b = lo_all[s : s + rows], hi_all[s : s + rows]
        excess = np.maximum(lo_b - a, a - hi_b)
        over = excess > _bounds_tolerance(lo_b, hi_b, x.dtype)
        out[s : s + rows] = over.reshape(a.shape[0], -1).any(axis=1)
        worst = max(worst, float(excess.max()))
    n_out = int(out.sum())
    if n_out:
        box = (
            f"[{float(lo):g}, {float(hi):g}]"
            if lo.ndim == 0 and hi.ndim == 0
            else f"[lo, hi] (per-coordinate, lo in [{lo.min():g}, {lo.max():g}], "
            f"hi in [{hi.min():g}, {hi.max():g}])"
        )
        raise ValueError(
            f"{n_out} of {arr.shape[0]} examples of {name} lie outside bounds {box} by more "
            f"than the tolerance (largest excess {worst:.3g}; first "
            f"{np.flatnonzero(out)[:5].tolist()}): from there a margin would be the distance "
            f"to the box and a clipped attack would leave its eps-ball. Clip the inputs "
            f"first, e.g. {name} = jnp.clip({name}, lo, hi), or pass bounds=None"
        )
    return x


def _committed_device(tree):
    """The single device holding every committed JAX array of ``tree``, or None."""
    devs = set()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and is_concrete(leaf) and leaf.committed:
            devs |= set(leaf.devices())
    return next(iter(devs)) if len(devs) == 1 else None


def to_classifier_device(logits_fn, *arrays):
    """``arrays`` on the device of the classifier's committed weights where any of them is
    committed to another device (for programs called directly, outside the executor, which
    places the weights on ``x``'s device itself); otherwise returned as they are. ``None``
    entries stay ``None``. Returns a tuple."""

    def elsewhere(a, dev):
        return (
            isinstance(a, jax.Array)
            and is_concrete(a)
            and a.committed
            and set(a.devices()) != {dev}
        )

    dev = _committed_device(logits_fn)
    if dev is None or not any(elsewhere(a, dev) for a in arrays):
        return arrays
    return tuple(None if a is None else jax.device_put(a, dev) for a in arrays)


def search_inputs(logits_fn, x, name: str = "x", *, bounds=None):
    """The shared input checks and conversions of every boundary search and attack.

    1. ``x`` must be a finite floating batch ``(N, *s)`` (:func:`check_batch`) and the
       classifier must map it to logits ``(N, K)`` (:func:`check_classifier`);
    2. dtype: ``x`` is cast to :func:`compute_dtype` of its dtype and the logits' dtype
       (float16 / bfloat16 -> float32; float32 ``x`` with a float64 model -> float64);
    3. box: with ``bounds``, :func:`check_in_bounds` (a ``ValueError`` naming the count of
       examples outside the box beyond the tolerance).

    Devices are the executor's business (:func:`geomrobust.engine.map_chunks` runs on the
    device of a committed ``x``, or the default one, and places the classifier there);
    programs called directly use :func:`to_classifier_device`.

    Works on tracers (checks that need values are skipped). Returns ``(x, K, dtype)``; a
    NumPy ``x`` stays a NumPy array.
    """
    check_batch(x, name)
    out = _classifier_output(logits_fn, x, "logits_fn")
    k = _check_logits(out, x, "logits_fn")
    dtype = compute_dtype(x.dtype, out.dtype)
    check_in_bounds(x, bounds, name)
    if np.dtype(x.dtype) != dtype:
        x = x.astype(dtype)
    return x, k, dtype
