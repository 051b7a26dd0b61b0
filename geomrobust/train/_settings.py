"""Train a model from a settings record: the one training path of ``geomrobust train`` and of
the report's cached models.

A settings record is a JSON-ready dict (so it can be hashed into a cache key, see
:func:`geomrobust.report.model_cache_key`, and stored in the checkpoint's metadata); keys
missing from it take the defaults of ``geomrobust train`` (:data:`DEFAULTS`). Robust
training methods follow :func:`geomrobust.train.make_loss` (PGD adversarial training: Madry,
Makelov, Schmidt, Tsipras, Vladu, ICLR 2018; the others as listed in README.md, "Methods
and papers").
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from geomrobust._validation import check_int, check_positive
from geomrobust.data import load_dataset
from geomrobust.models import create_model, pure_apply
from geomrobust.search import robust_accuracy

from ._checkpoint import load_checkpoint
from ._loop import evaluate, fit
from ._monitor import robustness_monitor
from ._optim import make_optimizer
from ._robust import METHODS, make_loss

__all__ = ["DEFAULTS", "DEFAULT_LR", "check_settings", "train_from_settings"]

#: The input box of the adversarial training losses (every dataset's images lie in [0, 1]),
#: unless ``method_settings`` names another ``bounds``.
TRAIN_BOUNDS = (0.0, 1.0)

#: Peak learning rate per optimizer when ``lr`` is None.
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3}

#: Every key of a settings record and its default (those of ``geomrobust train``).
DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data_dir": None,
    "resize": None,
    "model": "lenet",
    "model_config": {},
    "method": "standard",
    "method_settings": {},
    "optimizer": "sgd",
    "lr": None,
    "schedule": "cosine",
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "epochs": 30,
    "batch_size": 64,
    "key": 0,
    "eval_eps": [],
    "eval_norm": "inf",
    "eval_bounds": [0.0, 1.0],
    "monitor": 0,
    "monitor_eps": None,
}


def _loss_kwargs(method_settings: Mapping) -> dict:
    """JSON settings -> loss-builder arguments (``"inf"`` -> ``inf``, lists -> tuples)."""
    out = {}
    for k, v in method_settings.items():
        if v == "inf":
            v = float("inf")
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def check_settings(s: Mapping[str, Any]) -> dict:
    """Type- and range-check a full settings record (every key of :data:`DEFAULTS`).

    ``lr`` (when given) must be a finite number > 0, ``weight_decay`` and ``momentum``
    finite numbers >= 0 (``nan`` is refused, never read as 0), ``epochs`` and ``batch_size``
    integers >= 1, ``monitor`` an integer >= 0, ``key`` an integer, ``eval_eps`` finite
    numbers > 0. Raises ``TypeError`` / ``ValueError`` naming the setting.
    """
    s = dict(s)
    for name in ("lr", "weight_decay", "momentum"):
        if isinstance(s[name], bool):
            raise TypeError(f"{name} must be a number, got {s[name]!r}")
    if s["lr"] is not None:
        s["lr"] = check_positive(s["lr"], "lr")
    s["weight_decay"] = check_positive(s["weight_decay"], "weight_decay", allow_zero=True)
    s["momentum"] = check_positive(s["momentum"], "momentum", allow_zero=True)
    s["epochs"] = check_int(s["epochs"], "epochs")
    s["batch_size"] = check_int(s["batch_size"], "batch_size")
    s["monitor"] = check_int(s["monitor"], "monitor", minimum=0)
    if isinstance(s["key"], bool) or not isinstance(s["key"], int | np.integer):
        raise TypeError(f"key must be an integer seed, got {s['key']!r}")
    s["key"] = int(s["key"])
    eps = s["eval_eps"] or []
    if not isinstance(eps, list | tuple):
        raise TypeError(f"eval_eps must be a list of numbers, got {eps!r}")
    s["eval_eps"] = [check_positive(e, "eval_eps") for e in eps]
    if s["monitor_eps"] is not None:
        s["monitor_eps"] = check_positive(s["monitor_eps"], "monitor_eps")
    for name in ("model_config", "method_settings"):
        if not isinstance(s[name], Mapping):
            raise TypeError(f"{name} must be a dict, got {s[name]!r}")
    for k, v in s["method_settings"].items():
        if k != "norm" and isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"method_settings[{k!r}] must be finite, got {v!r}")
    return s


def train_from_settings(
    settings: Mapping[str, Any],
    *,
    init: str | os.PathLike | None = None,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool | None = None,
):
    """Train the model that ``settings`` describes; returns ``(model, metadata)``.

    Parameters
    ----------
    settings : dataset (``dataset``, ``data_dir``, ``resize``), architecture (``model``,
        ``model_config``: keyword arguments of :func:`geomrobust.create_model`), objective
        (``method``, ``method_settings``: keyword arguments of
        :func:`geomrobust.train.make_loss`), optimizer (``optimizer``, ``lr``, ``schedule``,
        ``weight_decay``, ``momentum``), ``epochs``, ``batch_size``, ``key``, and the
        robustness evaluation: ``eval_eps`` (FGSM and PGD accuracy on the test split after
        training, in the ``eval_norm`` ball, inputs clipped to ``eval_bounds``) and
        ``monitor`` (held-out examples of the per-epoch robustness and
        catastrophic-overfitting monitor at ``monitor_eps``, default the first ``eval_eps``;
        0 disables). Missing keys take :data:`DEFAULTS`.
    init : a checkpoint of the same architecture to start from (fine-tuning); None starts
        from a fresh initialization (``key`` split into initialization and training keys).
    progress : a tqdm bar over the steps (None: only on a terminal).
    callback : ``callback(epoch, record)`` after every epoch (the record holds the
        monitor's entries, e.g. ``catastrophic_overfitting``).

    Returns
    -------
    (model, metadata)
        The trained NNX model and the metadata :func:`geomrobust.train.save_checkpoint`
        stores next to it (test accuracy and loss, the method and its settings, robust
        accuracies, the epochs flagged for catastrophic overfitting, the training settings
        and history, the wall time).

    Raises
    ------
    ValueError, TypeError, FileNotFoundError
        Unknown or out-of-range settings (:func:`check_settings`), a batch larger than the
        training split, missing data.
    TrainingDivergedError
        The training loss became non-finite (:func:`geomrobust.train.fit`); no model is
        returned, so no checkpoint is written.
    """
    unknown = sorted(set(settings) - set(DEFAULTS) - {"init_from"})
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(DEFAULTS)}")
    s = check_settings({**DEFAULTS, **settings})
    lr = s["lr"] if s["lr"] is not None else DEFAULT_LR.get(s["optimizer"], DEFAULT_LR["sgd"])
    eval_eps = [float(e) for e in s["eval_eps"] or []]
    norm = float("inf") if s["eval_norm"] in ("inf", float("inf")) else float(s["eval_norm"])
    bounds = None if s["eval_bounds"] is None else tuple(s["eval_bounds"])
    t0 = time.perf_counter()
    train = load_dataset(s["dataset"], "train", data_dir=s["data_dir"], resize=s["resize"])
    test = load_dataset(s["dataset"], "test", data_dir=s["data_dir"], resize=s["resize"])
    n = int(train.images.shape[0])
    if s["batch_size"] > n:
        raise ValueError(f"--batch-size {s['batch_size']} exceeds the {n} training examples")
    init_key, train_key = jax.random.split(jax.random.key(s["key"]))
    model = create_model(
        s["model"], train.images.shape[1:], train.num_classes, key=init_key, **s["model_config"]
    )
    if init is not None:
        model = load_checkpoint(init).model
    apply, params = pure_apply(model)
    optimizer = make_optimizer(
        s["optimizer"],
        lr,
        epochs=s["epochs"],
        steps_per_epoch=n // s["batch_size"],
        schedule=s["schedule"],
        weight_decay=s["weight_decay"],
        momentum=s["momentum"],
    )
    loss_kwargs = _loss_kwargs(s["method_settings"])
    if "bounds" in inspect.signature(METHODS[s["method"]]).parameters:
        # the images of every dataset lie in [0, 1]; the builders' own default is no box
        loss_kwargs.setdefault("bounds", TRAIN_BOUNDS)
    loss_fn = make_loss(s["method"], **loss_kwargs)
    hook = None
    if eval_eps and s["monitor"] > 0:
        m = min(int(s["monitor"]), int(test.images.shape[0]))
        hook = robustness_monitor(
            apply,
            test.images[:m],
            test.labels[:m],
            eps=s["monitor_eps"] or eval_eps[0],
            eval_eps=eval_eps,
            key=jax.random.fold_in(train_key, 10**6),
            norm=norm,
            bounds=bounds,
        )
    flagged: list[int] = []

    def on_epoch(epoch, record):
        if record.get("catastrophic_overfitting"):
            flagged.append(epoch)
        if callback is not None:
            callback(epoch, record)

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
        eval_data=(test.images, test.labels),
        progress=progress,
        eval_hook=hook,
        callback=on_epoch,
    )
    final = evaluate(apply, result.state.params, test.images, test.labels)
    robust = _robust_accuracies(
        apply,
        result.state.params,
        test,
        eval_eps,
        key=jax.random.fold_in(train_key, 2 * 10**6),
        norm=norm,
        bounds=bounds,
    )
    nnx.update(model, result.state.params)
    keys = ("optimizer", "schedule", "batch_size", "weight_decay", "momentum", "epochs", "key")
    metadata = {
        "dataset": s["dataset"],
        "resize": list(s["resize"]) if isinstance(s["resize"], tuple) else s["resize"],
        "epochs": s["epochs"],
        "accuracy": final.accuracy,
        "test_loss": final.loss,
        "test_examples": int(test.images.shape[0]),
        "train_accuracy": result.history["train_accuracy"][-1],
        "method": s["method"],
        "method_settings": dict(s["method_settings"]),
        "robust_accuracy": {"epsilons": eval_eps, "norm": s["eval_norm"], **robust},
        "catastrophic_overfitting_epochs": flagged,
        "train_settings": {"lr": lr, **{k: s[k] for k in keys}},
        "history": result.history,
        "train_time_s": time.perf_counter() - t0,
        "initialized_from": None if init is None else os.fspath(init),
    }
    return model, metadata


def _robust_accuracies(apply, params, test, epsilons, *, key, norm, bounds) -> dict:
    """FGSM and PGD accuracy of the trained parameters on the test split at ``epsilons``."""
    if not epsilons:
        return {}
    out = {}
    for attack in ("fgsm", "pgd"):
        ra = robust_accuracy(
            lambda z: apply(params, z),
            test.images,
            test.labels,
            epsilons,
            key=key,
            attack=attack,
            norm=norm,
            bounds=bounds,
        )
        out[attack] = [float(a) for a in ra.accuracy]
    return out
