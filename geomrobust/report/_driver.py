"""``run_report``: models, stages with resume, figures, ``results.json`` and ``index.html``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust import __version__
from geomrobust.analyses import predict
from geomrobust.data import load_dataset
from geomrobust.engine._processes import allgather_blocks
from geomrobust.io import (
    CorruptFileError,
    file_sha256,
    load_json,
    load_npz,
    save_json,
    save_npz,
    settings_hash,
    to_json_text,
)
from geomrobust.models import SMOOTH_ACTIVATIONS, as_classifier
from geomrobust.train import checkpoint_hash, load_checkpoint, load_metadata

from ._figures import draw_stage
from ._html import write_html
from ._models import cached_model, model_cache_key
from ._stages import REQUIRES, STAGES, Context, ReportModel

__all__ = ["SIZES", "model_settings", "run_report"]

#: Problem sizes of the default report and of ``quick=True`` (chosen so that the default runs
#: in a few minutes on 2 CPU cores including training, the quick one in about a minute).
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "resize": 16,
        "n": 100,
        "eps": 0.1,
        "pgd_steps_eval": 10,
        "std_epochs": 30,
        "pgd_epochs": 10,
        "pgd_train_steps": 3,
        "batch_size": 64,
        "dct_block": 4,
        "dct_stride": 2,
        "random_dims": [4, 16, 64],
        "random_draws": 1,
        "curv_n": 24,
        "curv_num": 10,
        "curv_samples": 64,
        "shared_dim": 10,
        "fooling_samples": 16,
        "hess_n": 24,
        "hess_num": 10,
        "slice_res": 61,
        "slice_extent": 3.0,
        "nads_networks": 256,
        "nads_num": 16,
        "heat_eps": 2.0,
        "heat_stride": 1,
        "noise_sigmas": [0.05, 0.1, 0.2, 0.3, 0.5, 0.8],
        "noise_samples": 32,
        "saliency_n": 4,
        "smoothgrad_samples": 16,
        "synth_eps": 4.0,
        "synth_steps": 40,
        "minimal_n": 32,
        "minimal_searches": ["deepfool", "fmn"],
        "minimal_fmn_steps": 50,
        "minimal_cw_steps": 50,
        "minimal_cw_binary_steps": 3,
    },
    "quick": {
        "resize": None,
        "n": 32,
        "eps": 0.1,
        "pgd_steps_eval": 5,
        "std_epochs": 15,
        "pgd_epochs": 5,
        "pgd_train_steps": 2,
        "batch_size": 32,
        "dct_block": 2,
        "dct_stride": 1,
        "random_dims": [4, 16],
        "random_draws": 1,
        "curv_n": 8,
        "curv_num": 6,
        "curv_samples": 16,
        "shared_dim": 4,
        "fooling_samples": 8,
        "hess_n": 8,
        "hess_num": 6,
        "slice_res": 31,
        "slice_extent": 3.0,
        "nads_networks": 64,
        "nads_num": 8,
        "heat_eps": 1.0,
        "heat_stride": 1,
        "noise_sigmas": [0.05, 0.1, 0.2, 0.4],
        "noise_samples": 16,
        "saliency_n": 3,
        "smoothgrad_samples": 8,
        "synth_eps": 2.0,
        "synth_steps": 20,
        "minimal_n": 8,
        "minimal_searches": ["deepfool", "fmn"],
        "minimal_fmn_steps": 20,
        "minimal_cw_steps": 20,
        "minimal_cw_binary_steps": 2,
    },
}


def model_settings(method: str, sizes: dict, *, dataset: str, data_dir, resize, key: int):
    """Training settings of the report's LeNet (softplus, average pooling: a C² network, so
    curvatures are defined): ``method`` is ``"standard"`` or ``"pgd"`` (Linf PGD-AT,
    fine-tuned from the standard model: ``init_from`` holds the standard model's cache key)."""

    pgd = method == "pgd"
    return {
        "dataset": dataset,
        "data_dir": None if data_dir is None else os.fspath(data_dir),
        "resize": resize,
        "model": "lenet",
        "model_config": {"activation": "softplus", "pool": "avg"},
        "method": method,
        "method_settings": {
            "eps": sizes["eps"],
            "norm": "inf",
            "steps": sizes["pgd_train_steps"],
            "bounds": [0.0, 1.0],
        }
        if pgd
        else {},
        "optimizer": "adam",
        "lr": 3e-3,
        "weight_decay": 0.0,
        "epochs": sizes["pgd_epochs"] if pgd else sizes["std_epochs"],
        "key": key,
        "batch_size": sizes["batch_size"],
        "init_from": model_cache_key(
            model_settings(
                "standard", sizes, dataset=dataset, data_dir=data_dir, resize=resize, key=key
            )
        )
        if pgd
        else None,
    }


def _writer() -> bool:
    """Whether this process writes the report: with several JAX processes
    (``jax.distributed``) every process computes (the stages' chunks are shared out and
    gathered by the engine), process 0 alone writes the files."""
    return jax.process_index() == 0


def _agreed(loaded: bool) -> bool:
    """A finished stage is reused only when every process found it (each reads ``out`` as
    it sees it): otherwise every process recomputes it, so they all run the same chunked
    calls (their collectives pair up)."""
    if jax.process_count() == 1:
        return loaded
    (flags,) = allgather_blocks([np.asarray([loaded], bool)], 1)
    return bool(np.all(flags))


def _log(msg: str) -> None:
    if _writer():  # one log for a multi-process run
        print(msg, file=sys.stderr, flush=True)


#: Seconds between two progress lines of a running stage when stderr is not a terminal.
PROGRESS_INTERVAL = 20.0


class StageProgress:
    """Progress inside a stage when stderr is not a terminal (a log file, CI, a notebook):
    the analyses' ``progress(n)`` callback (:func:`geomrobust.engine.track`) counts the
    examples they finish, and a line ``    <stage>: 40 s, 96 examples done`` is printed every
    ``interval`` seconds while the stage runs, so a long stage is never silent. (On a
    terminal the analyses draw tqdm bars instead.)"""

    def __init__(
        self, title: str, interval: float = PROGRESS_INTERVAL, log=None,
        idle: str = "compiling / first chunk",
    ):  # fmt: skip
        self.title, self.interval, self.log, self.idle = title, interval, log or _log, idle
        self.done, self.t0 = 0, time.perf_counter()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += int(n)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                done = self.done
            dt = time.perf_counter() - self.t0
            what = f"{done} examples done" if done else self.idle
            self.log(f"    {self.title}: {dt:.0f} s, {what}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


def canonical(obj):
    """``obj`` as it reads back from JSON (:func:`geomrobust.io.to_json_text`: NumPy values
    converted, non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``), so a
    freshly computed stage and one reused from disk are the same record."""
    return json.loads(to_json_text(obj))


def _load_stage(folder: Path, name: str, digest: str):
    """The finished stage ``name`` from ``folder`` if its settings hash is ``digest`` and its
    files are intact (the ``.npz`` has the sha256 recorded in the ``.json``, the summary is a
    dict); None otherwise, so that a damaged or edited stage is recomputed, never reused."""
    json_file, npz_file = folder / f"{name}.json", folder / f"{name}.npz"
    if not json_file.exists():
        return None
    try:
        record = load_json(json_file)
        if record.get("hash") != digest:
            return None
        summary, seconds = record.get("summary"), record.get("seconds")
        if not isinstance(summary, dict) or not isinstance(seconds, int | float | None):
            raise CorruptFileError(f"{json_file} holds no stage summary")
        if record.get("summary_sha256") != settings_hash(summary):
            raise CorruptFileError(f"{json_file}: the summary differs from the one written")
        if record.get("arrays_sha256") != file_sha256(npz_file):
            raise CorruptFileError(f"{npz_file} differs from the file the stage wrote")
        arrays = load_npz(npz_file)
        return arrays, summary, seconds
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = " ".join(str(e).split())
        _log(f"    the stage files in {folder} are damaged ({reason}); recomputing")
        return None


def _save_stage(folder: Path, name: str, digest: str, arrays, summary, seconds) -> None:
    npz = save_npz(folder / f"{name}.npz", arrays)  # the arrays first: the JSON marks it done
    record = {"hash": digest, "seconds": seconds, "summary": summary}
    hashes = {"arrays_sha256": file_sha256(npz), "summary_sha256": settings_hash(summary)}
    save_json(folder / f"{name}.json", {**record, **hashes})


def _load_models(checkpoints, sizes, *, dataset, data_dir, resize, key, cache_dir, progress):

    entries, timings = [], {}
    if checkpoints:
        names = []
        for i, c in enumerate(checkpoints):
            base = Path(c).name or f"model{i}"
            names.append(base if base not in names else f"{base}-{i}")
        entries = [(nm, nm, Path(c)) for nm, c in zip(names, checkpoints, strict=True)]
    else:
        init = None
        for method, label in (("standard", "standard"), ("pgd", "PGD-AT")):
            s = model_settings(
                method, sizes, dataset=dataset, data_dir=data_dir, resize=resize, key=key
            )
            t0 = time.perf_counter()
            _log(f"[models] {label} LeNet: looking in the cache ...")
            on_terminal = progress or (progress is None and sys.stderr.isatty())
            with contextlib.ExitStack() as stack:
                if not on_terminal:  # no tqdm bar: a line every 20 s while it trains
                    busy = StageProgress(f"[models] {label} LeNet", idle="training or loading")
                    stack.enter_context(busy)
                path, trained = cached_model(
                    method, s, cache_dir=cache_dir, init=init, progress=progress, log=_log
                )
            init = path
            dt = time.perf_counter() - t0
            timings[method] = {"seconds": dt, "trained": trained}
            _log(
                f"[models] {label} LeNet: {'trained' if trained else 'reused'} {path} ({dt:.1f} s)"
            )
            entries.append((method, label, path))
    models = []
    for name, label, path in entries:
        ckpt = load_checkpoint(path)
        meta = dict(ckpt.metadata)
        cfg = meta.get("model_config", {})
        smooth = cfg.get("activation") in SMOOTH_ACTIVATIONS and cfg.get("pool", "avg") != "max"
        meta.update(
            checkpoint_path=os.fspath(Path(path).absolute()),
            checkpoint_sha256=checkpoint_hash(path),
        )
        models.append(ReportModel(name, label, as_classifier(ckpt.model), meta, smooth))
    return models, timings


def run_report(
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    checkpoints: Sequence[str | os.PathLike] | None = None,
    n: int | None = None,
    quick: bool = False,
    key: int = 0,
    resize: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    stages: Sequence[str] | None = None,
    progress: bool | None = None,
) -> dict:
    """Run the whole geometric analysis and write ``out/index.html``, ``results.json``, PNGs.

    Parameters
    ----------
    out : output directory (created); ``out/stages/`` keeps each finished stage so that an
        interrupted report resumes (a stage is skipped when its settings hash is unchanged).
    dataset, data_dir, resize : held-out data (test split); default ``digits``, resized as
        :data:`SIZES` says, or the first checkpoint's dataset / resize.
    checkpoints : checkpoint directories written by ``geomrobust train`` to analyse; None
        trains (or reuses from ``cache_dir``) a standard and a PGD-AT LeNet.
    n : number of held-out examples (the first ``n`` of the split).
    quick : smaller sizes (``SIZES["quick"]``).
    key : integer seed; stage ``i`` uses ``fold_in(key(key), i)``.
    stages : subset of :data:`geomrobust.report.STAGES` to run (default: all).
    progress : tqdm bars on stderr (None: only on a terminal); stage lines always print.

    Returns
    -------
    The ``results.json`` record (dict).
    """

    t_start = time.perf_counter()
    sizes = dict(SIZES["quick" if quick else "full"])
    if n is not None:
        sizes["n"] = int(n)
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"stages must be among {list(STAGES)}, got unknown {unknown}")
    if checkpoints:
        first = load_metadata(checkpoints[0])  # type-checked (untrusted input)
        dataset = dataset or first.get("dataset") or "digits"
        if resize is None:
            resize = first.get("resize")
    else:
        dataset = dataset or "digits"
        if resize is None:
            resize = sizes["resize"]
    if isinstance(resize, list):
        resize = tuple(resize)
    out = Path(out).expanduser()
    if _writer():
        (out / "stages").mkdir(parents=True, exist_ok=True)
    bars = True if progress or (progress is None and sys.stderr.isatty()) else None

    models, train_timings = _load_models(
        checkpoints,
        sizes,
        dataset=dataset,
        data_dir=data_dir,
        resize=resize,
        key=key,
        cache_dir=cache_dir,
        progress=progress,
    )
    data = load_dataset(dataset, "test", data_dir=data_dir, resize=resize)
    num = min(sizes["n"], data.images.shape[0])
    x = jnp.asarray(data.images[:num])
    y = jnp.asarray(data.labels[:num])
    for m in models:
        expected = tuple(m.metadata.get("input_shape") or x.shape[1:])
        if expected != tuple(x.shape[1:]):
            raise ValueError(
                f"model {m.name} expects inputs {expected}, the data have "
                f"{tuple(x.shape[1:])}; pass resize to match"
            )
    source = {"dataset": dataset, "data_dir": data_dir, "resize": resize, "quick": quick}
    return _run_stages(models, x, y, out, sizes, key, stages, bars, source, train_timings,
                       t_start)  # fmt: skip


def _weights_digest(classifier) -> str:
    """SHA-256 of a classifier's structure and weights (the stage cache key of a model that
    comes without a checkpoint)."""

    clf = as_classifier(classifier)
    leaves, treedef = jax.tree.flatten(clf)
    h = hashlib.sha256(repr(treedef).encode())
    for a in leaves:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run(
    classifiers,
    x,
    y=None,
    *,
    out: str | os.PathLike,
    labels: dict | None = None,
    quick: bool = False,
    sizes: dict | None = None,
    key: int = 0,
    stages: Sequence[str] | None = None,
    progress: bool | None = None,
) -> dict:
    """The report on ANY classifiers and arrays: the same stages, figures and HTML as
    ``geomrobust report``, for models that come from elsewhere (imported PyTorch weights,
    Equinox, Flax, functions).

    Parameters
    ----------
    classifiers : ``{name: classifier}`` (anything :func:`geomrobust.as_classifier` accepts;
        wrap pretrained networks in :class:`geomrobust.models.Normalized` so that they take
        images in ``[0, 1]``), compared side by side, in order.
    x : ``(N, H, W, C)`` images in ``[0, 1]`` (every search stays in this box); y : ``(N,)``
        labels (None: the first classifier's predictions, so "clean accuracy" is then
        agreement with it).
    out : output folder (``index.html``, ``results.json``, PNGs, ``stages/`` for resuming:
        a stage is reused when the weights, data and sizes are unchanged).
    labels : optional ``{name: legend text}``.
    quick, sizes, key, stages, progress : as :func:`run_report` (``sizes`` overrides entries
        of :data:`SIZES`; ``n`` defaults to all of ``x``).

    Returns
    -------
    The ``results.json`` record (dict).

    Piecewise-linear models (ReLU) are detected at the boundary points and their curvature is
    measured at a scale (docs/curvature.md).
    """

    t_start = time.perf_counter()
    if not classifiers:
        raise ValueError("classifiers must hold at least one {name: classifier}")
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, H, W, C), got shape {tuple(x.shape)}")
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"x must be images in [0, 1] (the box of every search), got values in "
            f"[{lo:.4g}, {hi:.4g}]; put the normalization in the classifier "
            "(geomrobust.models.Normalized)"
        )
    first = next(iter(classifiers.values()))

    y = jnp.asarray(predict(first, x) if y is None else y)
    all_sizes = dict(SIZES["quick" if quick else "full"])
    all_sizes["n"] = int(x.shape[0])
    all_sizes.update(sizes or {})
    models = []
    for name, clf in classifiers.items():
        meta = {"checkpoint_sha256": _weights_digest(clf), "input_shape": list(x.shape[1:]),
                "method": "given"}  # fmt: skip
        models.append(ReportModel(name, (labels or {}).get(name, name), clf, meta, None))
    num = min(all_sizes["n"], x.shape[0])
    bars = True if progress or (progress is None and sys.stderr.isatty()) else None
    source = {"dataset": "arrays", "data_dir": None, "resize": None, "quick": quick}
    out = Path(out).expanduser()
    if _writer():
        (out / "stages").mkdir(parents=True, exist_ok=True)
    return _run_stages(models, x[:num], y[:num], out, all_sizes, key, stages, bars, source, {},
                       t_start)  # fmt: skip


def _run_stages(models, x, y, out, sizes, key, stages, bars, source, train_timings, t_start):
    """Every selected stage on ``models`` and ``(x, y)``, resuming finished stages, then
    ``results.json`` and ``index.html`` (shared by :func:`run_report` and :func:`run`)."""

    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"stages must be among {list(STAGES)}, got unknown {unknown}")
    num = int(x.shape[0])
    dataset, data_dir, resize, quick = (source[k] for k in ("dataset", "data_dir", "resize",
                                                             "quick"))  # fmt: skip
    common = {
        "version": __version__,
        "sizes": sizes,
        "dataset": dataset,
        "resize": resize,
        "n": num,
        "key": key,
        "models": [m.metadata["checkpoint_sha256"] for m in models],
    }
    wanted = set(STAGES if stages is None else stages)
    for name in reversed(STAGES):  # add the stages that the wanted ones read
        if name in wanted:
            wanted.update(REQUIRES.get(name, ()))
    selected = [s for s in STAGES if s in wanted]
    previous, timings, figures, sections = {}, {}, {}, {}
    root_key = jax.random.key(key)
    for i, name in enumerate(STAGES):
        if name not in selected:
            continue
        title, fn = STAGES[name]
        digest = settings_hash({"stage": name, **common})
        _log(f"[{selected.index(name) + 1}/{len(selected)}] {title} ...")
        loaded = _load_stage(out / "stages", name, digest)
        if not _agreed(loaded is not None):
            loaded = None
        if loaded is not None:
            arrays, summary, seconds = loaded
            timings[name] = {"seconds": seconds, "reused": True}
            _log(f"    reused the finished stage from {out / 'stages'}")
        else:
            t0 = time.perf_counter()
            with contextlib.ExitStack() as stack:
                # on a terminal tqdm bars (bars=True); elsewhere a line every 20 s
                prog = bars or stack.enter_context(StageProgress(name))
                ctx = Context(models, x, y, sizes, jax.random.fold_in(root_key, i), previous, prog)
                arrays, summary = fn(ctx)
            summary = canonical(summary)
            seconds = time.perf_counter() - t0
            if _writer():
                _save_stage(out / "stages", name, digest, arrays, summary, seconds)
            timings[name] = {"seconds": seconds, "reused": False}
            _log(f"    done in {seconds:.1f} s")
        previous[name] = (arrays, summary)
        sections[name] = summary
        figures[name] = draw_stage(name, arrays, summary, models, out) if _writer() else []
    total = time.perf_counter() - t_start
    record = {
        "geomrobust_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "dataset": dataset,
            "data_dir": data_dir,
            "resize": resize,
            "split": "test",
            "n": num,
            "quick": quick,
            "key": key,
            "stage_keys": {s: f"fold_in(key({key}), {i})" for i, s in enumerate(STAGES)},
            "sizes": sizes,
            "deepfool": {
                "overshoot": 0.02,
                "max_iter": 50,
                "labels": "predicted",
                "bounds": [0.0, 1.0],
            },
        },
        "models": {
            m.name: {
                "label": m.label,
                "smooth": m.smooth,
                **{
                    k: m.metadata.get(k)
                    for k in (
                        "checkpoint_path",
                        "checkpoint_sha256",
                        "model_config",
                        "method",
                        "method_settings",
                        "accuracy",
                        "dataset",
                        "resize",
                        "epochs",
                        "train_time_s",
                    )
                },
            }
            for m in models
        },
        "training": train_timings,
        "timings": {"stages": timings, "total_seconds": total},
        "sections": sections,
        "figures": {
            k: [{"file": f["file"], "caption": f["caption"]} for f in v] for k, v in figures.items()
        },
    }
    record = canonical(record)
    if _writer():
        save_json(out / "results.json", record)
        write_html(out, record, figures, models)
        _log(f"report written to {out / 'index.html'} in {total:.1f} s")
    return record
