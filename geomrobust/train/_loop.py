"""The training loop: a train step built from a loss function, evaluation, and ``fit``.

The step is a pure function ``step(key, state, x, y) -> (state, aux)`` over a
:class:`TrainState` pytree; :func:`fit` jits it once and reuses the compiled program for every
batch of every epoch (all batches have the same shape).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from geomrobust.data import iterate_batches
from geomrobust.engine import map_chunks

from ._losses import LossFn, cross_entropy_loss, per_example_metrics

__all__ = [
    "EvalResult",
    "FitResult",
    "TrainState",
    "TrainingDivergedError",
    "evaluate",
    "fit",
    "init_train_state",
    "make_train_step",
]


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss (or the parameters) became non-finite: the run stops, no model is
    returned (and so no checkpoint written)."""


def _check_diverged(record: dict, params, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` when the epoch's loss or the parameters are not
    finite (one reduction over the parameters per epoch)."""
    bad = [k for k in ("train_loss", "eval_loss") if k in record and not math.isfinite(record[k])]
    finite = all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params)
                 if jnp.issubdtype(jnp.asarray(p).dtype, jnp.inexact))  # fmt: skip
    if bad or not finite:
        what = (
            f"the {bad[0].replace('_', ' ')} became {record[bad[0]]}"
            if bad
            else ("the parameters became non-finite")
        )
        raise TrainingDivergedError(
            f"training diverged: {what} in epoch {epoch}; no model was kept. Lower the "
            "learning rate (--lr) or check the data for non-finite values"
        )


class TrainState(NamedTuple):
    """Parameters, optimizer state and the number of steps taken (an int32 scalar)."""

    params: Any
    opt_state: optax.OptState
    step: jax.Array


class EvalResult(NamedTuple):
    """Mean cross-entropy ``loss`` and ``accuracy`` over a dataset (Python floats)."""

    loss: float
    accuracy: float


class FitResult(NamedTuple):
    """Final :class:`TrainState` and per-epoch ``history`` (a dict of lists)."""

    state: TrainState
    history: dict[str, list]


def init_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """``TrainState(params, optimizer.init(params), 0)``."""
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_train_step(
    apply: Callable,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn = cross_entropy_loss,
    *,
    jit: bool = True,
) -> Callable:
    """A training step ``step(key, state, x, y) -> (new_state, aux)``.

    ``g = ∇_θ loss_fn(apply, θ, x, y, key)``, ``θ <- θ + optimizer.update(g)``. ``aux`` is the
    dict of metrics returned by ``loss_fn``. Any loss builder with the signature of
    :func:`~geomrobust.train.cross_entropy_loss` plugs in (adversarial training objectives
    use ``key`` for their random starts).

    With ``jit=True`` (default) the returned step is ``jax.jit``-compiled once per input
    shape; ``jit=False`` returns the pure function, to be composed or jitted by the caller.
    """

    def step(key, state: TrainState, x, y):
        (_, aux), grads = jax.value_and_grad(lambda p: loss_fn(apply, p, x, y, key), has_aux=True)(
            state.params
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), aux

    return jax.jit(step) if jit else step


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _metrics(apply, params, x, y):
    return per_example_metrics(apply(params, x), y)


# jit once per (apply, shapes): ``apply`` is hashed by identity, so evaluating the same
# model every epoch reuses the compiled program.
_metrics_jit = jax.jit(_metrics, static_argnums=0)


def evaluate(apply: Callable, params, images, labels, *, batch_size: int = 512) -> EvalResult:
    """Mean cross-entropy and accuracy of ``apply(params, ·)`` on ``(images, labels)``.

    Runs in jitted chunks of ``min(batch_size, N)`` examples (the last one padded), so it
    compiles once and holds one chunk on the device at a time.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = images.shape[0]
    if n == 0 or labels.shape != (n,):
        raise ValueError(
            f"images and labels must be non-empty with labels of shape (N,), got "
            f"{images.shape} and {labels.shape}"
        )
    loss, correct = map_chunks(  # processes=False: training need not run on every process
        lambda x, y: _metrics_jit(apply, params, x, y),
        (images, labels),
        chunk_size=min(int(batch_size), n),
        processes=False,
    )
    return EvalResult(float(np.mean(loss)), float(np.mean(correct)))


def fit(
    apply: Callable,
    params,
    optimizer: optax.GradientTransformation,
    images,
    labels,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    loss_fn: LossFn = cross_entropy_loss,
    eval_data: tuple | None = None,
    eval_batch_size: int = 512,
    callback: Callable[[int, dict], None] | None = None,
    eval_hook: Callable[[int, Any, dict], dict] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train ``params`` for ``epochs`` epochs of shuffled minibatches.

    Deterministic given ``key``: epoch ``e`` shuffles with ``fold_in(key, e)`` and batch
    ``b`` of it gets the loss key ``fold_in(fold_in(key, e), b + 1)``. Every batch has
    ``batch_size`` rows (the remainder of each shuffled epoch is dropped), so the jitted step
    compiles once.

    Parameters
    ----------
    apply : ``apply(params, x) -> logits`` (e.g. from :func:`geomrobust.models.pure_apply`).
    params : initial parameters (any pytree).
    optimizer : an Optax transformation (e.g. :func:`make_optimizer`).
    images, labels : training data, ``(N, *input_shape)`` and ``(N,)`` integers.
    key : PRNG key (shuffling and the loss keys).
    epochs, batch_size : length of training and rows per step (``batch_size <= N``).
    loss_fn : the objective (default standard cross-entropy).
    eval_data : optional ``(images, labels)`` evaluated after every epoch.
    progress : show a tqdm bar (epochs × steps) on stderr; ``None``: only on a terminal.
    callback : ``callback(epoch, record)`` after each epoch (e.g. logging).
    eval_hook : ``eval_hook(epoch, params, history) -> dict`` after each epoch's evaluation;
        its entries join the epoch's record (e.g.
        :func:`~geomrobust.train.robustness_monitor`: robust accuracies, the
        catastrophic-overfitting flag). ``history`` holds the previous epochs only.

    Returns
    -------
    FitResult(state, history)
        ``history`` maps ``epoch``, ``train_loss``, ``train_accuracy`` (means over the
        epoch's steps of ``aux``), ``eval_loss``, ``eval_accuracy`` (if ``eval_data``) and
        ``time_s`` (cumulative wall time) to per-epoch lists.

    Raises
    ------
    TrainingDivergedError
        After an epoch whose mean training loss (or evaluation loss, or any parameter) is not
        finite: a diverged run never returns parameters as if it had trained.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match images, got {labels.shape}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not 1 <= int(batch_size) <= n:
        raise ValueError(f"batch_size must lie in [1, N={n}], got {batch_size!r}")
    steps = n // int(batch_size)
    step_fn = make_train_step(apply, optimizer, loss_fn)
    state = init_train_state(params, optimizer)
    history: dict[str, list] = {"epoch": [], "time_s": []}
    disable = (not progress) if progress is not None else not sys.stderr.isatty()
    bar = tqdm(
        total=int(epochs) * steps, desc="train", file=sys.stderr, disable=disable, leave=False
    )
    start = time.perf_counter()
    try:
        for epoch in range(int(epochs)):
            ekey = jax.random.fold_in(key, epoch)
            auxes = []
            batches = iterate_batches(
                images, labels, int(batch_size), key=ekey, drop_remainder=True
            )
            for b, (x, y) in enumerate(batches):
                state, aux = step_fn(jax.random.fold_in(ekey, b + 1), state, x, y)
                auxes.append(aux)
                bar.update(1)
            record = {"epoch": epoch + 1}
            means = jax.tree.map(lambda *a: float(jnp.mean(jnp.stack(a))), *auxes)
            record.update({f"train_{k}": v for k, v in means.items()})
            if eval_data is not None:
                ev = evaluate(apply, state.params, *eval_data, batch_size=eval_batch_size)
                record.update(eval_loss=ev.loss, eval_accuracy=ev.accuracy)
            if eval_hook is not None:
                record.update(eval_hook(epoch + 1, state.params, history))
            record["time_s"] = time.perf_counter() - start
            _check_diverged(record, state.params, epoch + 1)
            for k, v in record.items():
                history.setdefault(k, []).append(v)
            bar.set_postfix(
                {k: f"{v:.3f}" for k, v in record.items() if "accuracy" in k and _is_num(v)}
            )
            if callback is not None:
                callback(epoch + 1, record)
    finally:
        bar.close()
    return FitResult(state, history)
