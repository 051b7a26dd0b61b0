"""Optimizers with learning-rate schedules, built from Optax building blocks."""

from __future__ import annotations

import optax

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_schedule"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "onecycle", "piecewise")


def make_schedule(name: str, lr: float, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step, over ``total_steps`` steps.

    * ``constant``: ``lr``;
    * ``cosine``: ``lr · (1 + cos(π t/T)) / 2`` (Loshchilov & Hutter, 2017);
    * ``onecycle``: linear ``0 -> lr`` over the first 40% of steps, then ``lr -> 0``
      (the cyclic schedule of fast adversarial training, Wong et al., 2020);
    * ``piecewise``: ``lr``, divided by 10 at 50% and again at 75% of the steps
      (Madry et al., 2018; Rice et al., 2020).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if total_steps < 1:
        raise ValueError(f"the schedule needs at least one step, got total_steps={total_steps}")
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if name == "onecycle":
        up = max(1, int(0.4 * total_steps))
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, lr, up),
                optax.linear_schedule(lr, 0.0, max(1, total_steps - up)),
            ],
            [up],
        )
    return optax.piecewise_constant_schedule(
        lr, {int(0.5 * total_steps): 0.1, int(0.75 * total_steps): 0.1}
    )


def make_optimizer(
    name: str,
    lr: float,
    *,
    epochs: int,
    steps_per_epoch: int,
    schedule: str = "cosine",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> optax.GradientTransformation:
    """SGD with (heavy-ball) momentum or Adam, with a schedule over ``epochs × steps``.

    Parameters
    ----------
    name : ``"sgd"`` or ``"adam"``.
    lr : peak learning rate.
    epochs, steps_per_epoch : the length of training, ``T = epochs · steps_per_epoch``.
    schedule : one of :data:`SCHEDULES` (see :func:`make_schedule`).
    weight_decay : L2 decay; SGD adds ``wd · θ`` to the gradient, Adam becomes AdamW
        (decoupled decay, Loshchilov & Hutter, 2019).
    momentum : SGD momentum (ignored by Adam).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if int(epochs) < 1 or int(steps_per_epoch) < 1:
        raise ValueError(
            f"epochs and steps_per_epoch must be positive, got {epochs} and {steps_per_epoch}"
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    sched = make_schedule(schedule, float(lr), int(epochs) * int(steps_per_epoch))
    if name == "adam":
        if weight_decay > 0:
            return optax.adamw(sched, weight_decay=weight_decay)
        return optax.adam(sched)
    sgd = optax.sgd(sched, momentum=momentum or None)
    if weight_decay > 0:
        return optax.chain(optax.add_decayed_weights(weight_decay), sgd)
    return sgd
