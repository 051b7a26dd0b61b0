"""What every analysis shares: inputs, keys, settings records, the chunked run, statistics.

* :func:`inputs` turns an ``ArrayDataset``, an ``(x, y)`` pair or bare images into arrays;
* :func:`resolve_key` gives the run's PRNG key (``settings.key`` or an explicit key);
* :func:`settings_record` is the JSON form of a settings dataclass (what a chunk store
  records and hashes, :func:`geomrobust.io.settings_hash`);
* :func:`chunked` runs an analysis' own per-chunk program or pipeline over the examples
  with :func:`geomrobust.engine.map_chunks` (progress through
  :func:`geomrobust.engine.track`, resume through the optional
  :class:`geomrobust.io.ChunkStore`); an analysis that measures with one driver hands it
  the whole dataset and the store instead (``deepfool_dataset(..., store=)``), so either way
  the engine's chunk loop is entered once per measurement (docs/api.md, section 4);
* :func:`predict` is the predicted label of every example (one jitted program per
  architecture);
* :func:`summarize` is the one statistics record of the summaries: counts of valid and
  excluded examples, median, quartiles, mean;
* :func:`compute_doc` writes the options every ``compute`` shares (store, progress,
  devices, key) into its docstring.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust.engine import CHUNK_SIZE, map_chunks, track
from geomrobust.models import as_classifier

__all__ = [
    "chunked",
    "compute_doc",
    "inputs",
    "predict",
    "resolve_bounds",
    "resolve_key",
    "settings_record",
    "summarize",
]


class AnalysisResult(NamedTuple):
    """What every analysis' ``compute`` returns: ``arrays``, a flat dict of NumPy arrays (the
    per-example results), and ``summary``, a JSON-ready dict (statistics and counts of
    unconverged and excluded examples)."""

    arrays: dict
    summary: dict


SHARED_PARAMETERS = """\
store : optional :class:`geomrobust.io.ChunkStore` cut with ``settings.chunk_size``: chunks
    already there are read back, the others computed and written (an interrupted run resumes).
progress : None, True (a bar) or a callable ``progress(n_examples)``.
devices : None, ``"all"``, an int or a list of devices (chunks dealt round-robin; results
    identical to one device, :func:`geomrobust.engine.map_chunks`).
key : a PRNG key replacing ``jax.random.key(settings.key)`` (not with a store).
"""
"""The parameters of every analysis' ``compute`` that drive the run (numpydoc)."""

_SHARED = "    {shared parameters}\n"


def compute_doc(fn: Callable) -> Callable:
    """``fn`` (an analysis' ``compute``) with :data:`SHARED_PARAMETERS` written into its
    docstring in place of the line ``{shared parameters}``."""
    if _SHARED not in (fn.__doc__ or ""):
        raise ValueError(f"{fn.__qualname__}'s docstring has no line {_SHARED.strip()}")
    fn.__doc__ = fn.__doc__.replace(_SHARED, textwrap.indent(SHARED_PARAMETERS, "    "))
    return fn


def inputs(data, *, host: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """``(x, y)`` of ``data``: an ``ArrayDataset`` (``images``, ``labels``), a pair ``(x, y)``
    (``y`` may be None: predicted labels) or the images alone (``y`` None).

    ``host=True``: a NumPy ``x`` stays a NumPy array (in JAX's dtype for it), for analyses
    whose drivers put one chunk at a time on the device; ``jnp.asarray`` would hold a
    second copy of the whole dataset for the run."""
    if hasattr(data, "images"):
        x, y = data.images, getattr(data, "labels", None)
    elif isinstance(data, tuple | list):
        if len(data) != 2:
            raise ValueError(f"data must be (x, y), got a sequence of {len(data)} items")
        x, y = data
    else:
        x, y = data, None
    if host and isinstance(x, np.ndarray):
        dtype = jax.dtypes.canonicalize_dtype(x.dtype)  # float64 -> float32 without x64
        x = x if x.dtype == dtype else x.astype(dtype)
    else:
        x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch (N, *input_shape) with N >= 1, got {x.shape}")
    if y is not None:
        y = jnp.asarray(y, jnp.int32)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    return x, y


def resolve_bounds(bounds, x) -> tuple[float, float] | None:
    """The box of a search: ``"auto"`` is ``(0, 1)`` when every input lies in ``[0, 1]``
    (images: a perturbed image must stay an image) and no box otherwise; ``None`` or
    ``"none"``: no box; a pair ``(lo, hi)``: that box (the inputs must lie inside)."""
    if bounds is None or bounds == "none":
        return None
    lo_x, hi_x = float(np.min(x)), float(np.max(x))
    if bounds == "auto":
        return (0.0, 1.0) if lo_x >= 0.0 and hi_x <= 1.0 else None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"the box must satisfy lo < hi, got {bounds!r}")
    if lo_x < lo or hi_x > hi:
        raise ValueError(
            f"the inputs lie in [{lo_x:.4g}, {hi_x:.4g}], outside the box ({lo:g}, {hi:g}); "
            "pass the box the data live in, or none"
        )
    return (lo, hi)


def resolve_key(settings, key=None, store=None) -> jax.Array:
    """``key`` if given, else ``jax.random.key(settings.key)``.

    A run with a chunk store must take its key from the settings: the store records the
    settings, not a key object, so a resumed run would otherwise mix results of two keys.
    """
    if key is None:
        return jax.random.key(int(settings.key))
    if store is not None:
        raise ValueError("a run with a chunk store takes its PRNG key from settings.key")
    return key


def settings_record(settings) -> dict:
    """A settings dataclass as a JSON-ready dict (tuples become lists)."""
    return json_ready(dataclasses.asdict(settings))


def json_ready(o):
    if isinstance(o, dict):
        return {str(k): json_ready(v) for k, v in o.items()}
    if isinstance(o, tuple | list):
        return [json_ready(v) for v in o]
    return o


def chunked(
    fn: Callable,
    batched: Sequence,
    shared: Sequence = (),
    *,
    chunk_size: int,
    desc: str,
    progress=None,
    devices=None,
    store=None,
    upgrade=None,
):
    """``fn(*shared, *rows, chunk=Chunk)`` over fixed-size chunks of ``batched``.

    For an analysis' own per-chunk work (a jitted program, or a pipeline of several
    measurements such as the curvature's boundary points then curvatures):
    :func:`geomrobust.engine.map_chunks` cuts ``chunk_size`` rows per chunk (the last one
    padded by repeating its last row, so every program sees one shape and compiles once),
    places the rows and ``shared`` on the chunk's device, and with a ``store`` reads back
    finished chunks and writes new ones (``fn`` then returns a flat dict of arrays). A
    driver that ``fn`` calls on its chunk (with ``chunk_size=chunk.size``, no ``devices``)
    runs as the chunk's own work, without entering the chunk loop again. ``progress`` as
    accepted by :func:`geomrobust.engine.track`, counting examples. ``upgrade``: applied to
    every chunk read back from ``store`` (:meth:`geomrobust.io.ChunkStore.upgraded`: a chunk
    of an earlier release gets the arrays it lacks, so it joins the chunks computed now).
    """
    if store is not None and upgrade is not None:
        store = store.upgraded(upgrade)
    n = int(np.shape(batched[0])[0])
    with track(progress, n, desc) as report:
        return map_chunks(
            fn,
            batched,
            shared,
            chunk_size=chunk_size,
            devices=devices,
            progress=report,
            store=store,
            with_chunk=True,
        )


@jax.jit
def _argmax_program(clf, x):
    return jnp.argmax(clf(x), axis=-1).astype(jnp.int32)


def predict(classifier, x, *, chunk_size: int = CHUNK_SIZE, devices=None) -> np.ndarray:
    """The predicted label ``argmax f(x)`` of every example, ``(N,)`` int32."""
    out = map_chunks(
        _argmax_program,
        (x,),
        (as_classifier(classifier),),
        chunk_size=chunk_size,
        devices=devices,
    )
    return np.asarray(out)


def summarize(values, valid=None) -> dict:
    """Median, quartiles and mean over the valid finite entries, with the counts.

    ``n_valid`` entries are summarized and ``n_excluded`` are not (not converged, not
    valid, or not finite), so every example is accounted for.
    """
    v = np.asarray(values, np.float64).ravel()
    ok = np.isfinite(v)
    if valid is not None:
        ok &= np.asarray(valid, bool).ravel()
    out = {"n_valid": int(ok.sum()), "n_excluded": int((~ok).sum())}
    if ok.any():
        q25, med, q75 = np.percentile(v[ok], [25, 50, 75])
        out.update(median=float(med), q25=float(q25), q75=float(q75), mean=float(v[ok].mean()))
    return out
