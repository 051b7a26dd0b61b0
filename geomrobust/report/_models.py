"""Models of the report: train a standard and a PGD-adversarially-trained LeNet, or reuse them.

A trained model is cached as an ordinary ``geomrobust`` checkpoint directory (the format read
by ``geomrobust curvature --checkpoint``) under ``cache_dir/<name>-<hash>``, where the hash
covers every training setting and the package version. A second report with the same settings
loads the checkpoint instead of training again.

The adversarially trained model uses PGD adversarial training (Madry, Makelov, Schmidt,
Tsipras, Vladu, "Towards deep learning models resistant to adversarial attacks", ICLR 2018):
minimize ``E max_{||δ||_∞ ≤ ε} ℓ(x + δ, y)`` with the inner maximum approximated by PGD with a
random start (:func:`geomrobust.train.pgd_at_loss`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["cached_model", "default_cache_dir", "model_cache_key", "train_model"]


def default_cache_dir() -> Path:
    """``$GEOMROBUST_CACHE_DIR/models`` if set, else ``~/.cache/geomrobust/models``."""
    root = os.environ.get("GEOMROBUST_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "geomrobust"
    return base / "models"


def model_cache_key(settings: dict[str, Any]) -> str:
    """First 16 hex digits of the sha256 of ``settings`` (sorted JSON) and the package version."""
    from geomrobust import __version__

    text = json.dumps({"settings": settings, "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_model(
    settings: dict[str, Any],
    out: str | os.PathLike,
    *,
    init: str | os.PathLike | None = None,
    progress: bool | None = None,
):
    """Train the model described by ``settings`` and save a checkpoint at ``out``.

    ``settings`` keys: ``dataset``, ``data_dir``, ``resize``, ``model``, ``model_config``,
    ``method`` (``"standard"`` or ``"pgd"``), ``method_settings`` (keyword arguments of
    :func:`geomrobust.train.make_loss`), ``optimizer``, ``lr``, ``epochs``, ``batch_size``,
    ``weight_decay``, ``key``. The metadata follows ``geomrobust train`` (dataset, resize,
    accuracy, method, ...), so every analysis command can read the checkpoint.
    ``init`` : a checkpoint of the same architecture to start from (fine-tuning, e.g. PGD-AT
    from the standard model, which converges in a few epochs where PGD-AT from scratch sits on
    a long chance-level plateau on small data); None starts from a fresh initialization.
    Returns the checkpoint path.
    """
    import jax
    from flax import nnx

    from geomrobust.data import load_dataset
    from geomrobust.models import create_model, pure_apply
    from geomrobust.train import (
        evaluate,
        fit,
        load_checkpoint,
        make_loss,
        make_optimizer,
        save_checkpoint,
    )

    t0 = time.perf_counter()
    s = settings
    train = load_dataset(s["dataset"], "train", data_dir=s.get("data_dir"), resize=s["resize"])
    test = load_dataset(s["dataset"], "test", data_dir=s.get("data_dir"), resize=s["resize"])
    init_key, train_key = jax.random.split(jax.random.key(s["key"]))
    model = create_model(
        s["model"], train.images.shape[1:], train.num_classes, key=init_key, **s["model_config"]
    )
    if init is not None:
        model = load_checkpoint(init).model
    apply, params = pure_apply(model)
    steps = max(1, train.images.shape[0] // s["batch_size"])
    optimizer = make_optimizer(
        s["optimizer"],
        s["lr"],
        epochs=s["epochs"],
        steps_per_epoch=steps,
        schedule="cosine",
        weight_decay=s["weight_decay"],
    )
    loss_fn = make_loss(s["method"], **_loss_kwargs(s["method_settings"]))
    result = fit(
        apply,
        params,
        optimizer,
        train.images,
        train.labels,
        key=train_key,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        loss_fn=loss_fn,
        progress=progress,
    )
    final = evaluate(apply, result.state.params, test.images, test.labels)
    nnx.update(model, result.state.params)
    metadata = {
        "dataset": s["dataset"],
        "resize": s["resize"],
        "epochs": s["epochs"],
        "accuracy": final.accuracy,
        "test_loss": final.loss,
        "test_examples": int(test.images.shape[0]),
        "train_accuracy": result.history["train_accuracy"][-1],
        "method": s["method"],
        "method_settings": s["method_settings"],
        "train_settings": {
            k: s[k] for k in ("optimizer", "lr", "batch_size", "weight_decay", "epochs", "key")
        },
        "train_time_s": time.perf_counter() - t0,
        "trained_by": "geomrobust report",
        "initialized_from": None if init is None else os.fspath(init),
    }
    return save_checkpoint(out, model, metadata, overwrite=True)


def _loss_kwargs(method_settings: dict) -> dict:
    """JSON settings -> loss-builder arguments (``"inf"`` -> ``inf``, lists -> tuples)."""
    out = {}
    for k, v in method_settings.items():
        if v == "inf":
            v = float("inf")
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def cached_model(
    name: str,
    settings: dict[str, Any],
    *,
    cache_dir: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    progress: bool | None = None,
    log=None,
) -> tuple[Path, bool]:
    """The checkpoint for ``settings``: loaded from the cache, or trained and cached.

    ``init`` is passed to :func:`train_model`; put what identifies it (e.g. its cache key)
    into ``settings`` so the cache key changes with it.
    Returns ``(path, trained)`` with ``trained`` False when the cached checkpoint was reused.
    A damaged cache entry (unreadable checkpoint) is retrained and replaced.
    """
    from geomrobust.train import load_checkpoint

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / f"{name}-{model_cache_key(settings)}"
    if (path / "metadata.json").is_file():
        try:
            load_checkpoint(path)
            return path, False
        except (OSError, ValueError) as e:
            if log is not None:
                log(f"cached model {path} is unreadable ({e}); training it again")
    root.mkdir(parents=True, exist_ok=True)
    # training prints nothing on stdout; keep any library chatter on stderr
    with contextlib.redirect_stdout(sys.stderr):
        train_model(settings, path, init=init, progress=progress)
    return path, True
