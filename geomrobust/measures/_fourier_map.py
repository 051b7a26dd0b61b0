"""The Fourier accuracy map of an architecture: test accuracy on ``D(v)`` per 2-D frequency.

For each 2-D Fourier direction ``v`` (``geomrobust.data.fourier_direction``), train the
architecture on the directional dataset ``D(v)``: ``x = y (ε/2) v + (I - v vᵀ) n``,
``n ~ N(0, σ² I)`` (``geomrobust.data.directional_dataset``, ``σ = 3``, ``ε = 1``) and record the
test accuracy. An architecture learns ``D(v)`` easily only for ``v`` aligned with its leading
neural anisotropy directions (Ortiz-Jimenez et al., "Neural Anisotropy Directions", NeurIPS
2020, section 2; published: logistic regression 100% everywhere, LeNet mean about 56%).

The training loop is deliberately tiny (Adam via optax, a fixed number of minibatch steps under
``lax.scan``) and runs for a chunk of directions at once, under ``vmap`` on accelerators or
one after the other under ``lax.map`` on the CPU (``batching="auto"``: XLA's CPU convolutions
with a batch of different weights ran 4x slower than a loop over them, measured on the LeNet at
32×32); one compilation serves every chunk. ``optimizer="sgd", schedule="onecycle"`` is the
authors' recipe (plain SGD, no momentum, a one-cycle learning rate peaking at
``learning_rate``, 0.5 in their code, 20 epochs of 10,000 examples in batches of 128);
``scripts/fourier_map.py`` runs both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from geomrobust._deprecation import renamed
from geomrobust._validation import check_int, check_positive
from geomrobust.data import directional_dataset, fourier_direction
from geomrobust.models import StaticFunction

from ._frequency import frequency_pairs

__all__ = ["AccuracyMap", "fourier_accuracy_map"]


class AccuracyMap(NamedTuple):
    """accuracy ``(F,)`` test accuracy per frequency; frequencies ``(F, 2)`` the ``(i, j)``;
    grid ``(H, W)`` the accuracies placed at their frequency (NaN where not computed)."""

    accuracy: Array
    frequencies: Array
    grid: Array


@renamed(epsilon="eps")
def fourier_accuracy_map(
    init_params: Callable[[Array], object],
    apply_fn: Callable[[object, Array], Array],
    input_shape: tuple[int, ...],
    *,
    key: Array,
    frequencies: Sequence[tuple[int, int]] | None = None,
    n_train: int = 1000,
    n_test: int = 500,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    optimizer: str = "adam",
    schedule: str = "constant",
    clip_norm: float | None = None,
    sampling: str = "random",
    eps: float = 1.0,
    sigma: float = 3.0,
    batching: str = "auto",
    dtype=np.float32,
    chunk_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> AccuracyMap:
    """Test accuracy of an architecture trained on ``D(v)`` for each Fourier direction ``v``.

    Parameters
    ----------
    init_params : ``key -> params`` (any pytree), a fresh initialisation.
    apply_fn : ``(params, x) -> logits`` with ``x (N, *s)`` and logits ``(N, 2)`` (class 1 is
        the ``+v`` side).
    input_shape : ``(H, W)`` or ``(H, W, C)``.
    key : PRNG key (data, initialisation and minibatches of every direction).
    frequencies : ``(i, j)`` pairs (default all ``H × W``).
    n_train, n_test, steps, batch_size, learning_rate : the tiny training run.
    optimizer : ``"adam"`` (default) or ``"sgd"`` (no momentum, as in the authors' code).
    schedule : ``"constant"`` (default), ``"linear"`` (from ``learning_rate`` down to 0 at
        the last step, ``lr_t = learning_rate (1 - (t + 1) / steps)``: the authors' schedule,
        their ``np.interp([t], [0, epochs], [max_lr, 0])`` evaluated after each batch) or
        ``"onecycle"`` (``optax.cosine_onecycle_schedule`` over ``steps``, peaking at
        ``learning_rate``).
    clip_norm : clip each gradient to this global norm before the update (the authors'
        ``clip_grad_norm_(params, 0.5)``); ``None`` (default) does not clip.
    sampling : ``"random"`` (default: each step draws ``batch_size`` distinct examples) or
        ``"epoch"`` (a fresh permutation per epoch of ``ceil(n_train / batch_size)`` steps,
        the last batch of an epoch the remainder, as a shuffling PyTorch ``DataLoader``).
    eps, sigma : the directional dataset's separation and noise.
    batching : ``"vmap"`` (the chunk's directions vmapped, the steps under ``lax.scan``: one
        program), ``"map"`` (sequential ``lax.map`` over the directions), ``"host"`` (the
        directions vmapped, one jitted call per step from the host) or ``"auto"``
        (``"host"`` when the default backend is the CPU, else ``"vmap"``); the same numbers
        up to rounding. On the CPU, ``"host"`` and ``"map"`` take the same time at XLA's
        default optimization level, and ``"host"`` is 3.4x faster with
        ``--xla_backend_optimization_level=0`` (short compiles; docs/performance.md).
    chunk_size : directions trained per compiled call (default 16, not
        ``engine.CHUNK_SIZE``: each direction is a whole training run with its own
        ``n_train + n_test`` examples in memory); the last chunk is padded. The
        program is compiled once per architecture (the functions are compared by their code
        and settings, :class:`~geomrobust.models.StaticFunction`) and training settings: a
        second call (another key, other frequencies) does not recompile.
    progress : optional callback with the number of directions done after each chunk.

    Returns
    -------
    AccuracyMap.
    """
    input_shape = tuple(int(s) for s in input_shape)
    h, w = input_shape[:2]
    if frequencies is None:
        frequencies = [(i, j) for i in range(h) for j in range(w)]
    freqs = frequency_pairs(frequencies)
    for name, val in (("n_train", n_train), ("n_test", n_test), ("steps", steps),
                      ("batch_size", batch_size), ("chunk_size", chunk_size)):  # fmt: skip
        check_int(val, name)
    check_positive(learning_rate, "learning_rate")
    check_positive(eps, "eps")
    check_positive(sigma, "sigma", allow_zero=True)
    if batching not in ("auto", "vmap", "map", "host"):
        raise ValueError(f"batching must be 'auto', 'vmap', 'map' or 'host', got {batching!r}")
    if batching == "auto":
        batching = "host" if jax.default_backend() == "cpu" else "vmap"
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if schedule not in ("constant", "linear", "onecycle"):
        raise ValueError(f"schedule must be 'constant', 'linear' or 'onecycle', got {schedule!r}")
    if sampling not in ("random", "epoch"):
        raise ValueError(f"sampling must be 'random' or 'epoch', got {sampling!r}")
    if clip_norm is not None:
        check_positive(clip_norm, "clip_norm")
        clip_norm = float(clip_norm)
    batch_size = min(int(batch_size), int(n_train))
    program = _train_and_test_host if batching == "host" else _train_and_test
    train = partial(
        program, init_params=StaticFunction(init_params),
        apply_fn=StaticFunction(apply_fn), steps=int(steps), batch_size=batch_size,
        learning_rate=float(learning_rate), optimizer=optimizer, schedule=schedule,
        clip_norm=clip_norm, sampling=sampling, batching=batching,
    )  # fmt: skip

    acc = []
    size = min(int(chunk_size), freqs.shape[0])
    for start in range(0, freqs.shape[0], size):
        fs = freqs[start : start + size]
        fs_pad = np.concatenate([fs, np.repeat(fs[-1:], size - len(fs), axis=0)])
        xs_tr, ys_tr, xs_te, ys_te, keys = [], [], [], [], []
        for i, j in fs_pad:
            kd = jax.random.fold_in(key, int(i) * w + int(j))
            v = fourier_direction(input_shape, int(i), int(j), dtype=dtype)
            k_tr, k_te, k_fit = jax.random.split(kd, 3)
            tr = directional_dataset(v, n_train, key=k_tr, eps=eps, sigma=sigma)
            te = directional_dataset(v, n_test, key=k_te, eps=eps, sigma=sigma)
            xs_tr.append(tr.images)
            ys_tr.append(tr.labels)
            xs_te.append(te.images)
            ys_te.append(te.labels)
            keys.append(k_fit)
        out = train(
            jnp.stack(keys), np.stack(xs_tr), np.stack(ys_tr), np.stack(xs_te), np.stack(ys_te)
        )
        acc.append(np.asarray(out)[: len(fs)])
        if progress is not None:
            progress(len(fs))
    accuracy = np.concatenate(acc)
    grid = np.full((h, w), np.nan, accuracy.dtype)
    grid[freqs[:, 0] % h, freqs[:, 1] % w] = accuracy
    return AccuracyMap(jnp.asarray(accuracy), jnp.asarray(freqs), jnp.asarray(grid))


def _optimizer(name: str, schedule: str, learning_rate: float, steps: int, clip_norm=None):
    if schedule == "onecycle":
        lr = optax.cosine_onecycle_schedule(steps, learning_rate)
    elif schedule == "linear":
        # optax counts the updates from 0; the authors set the rate of batch t to
        # max_lr (1 - (t + 1) / steps) before its update
        lr = optax.linear_schedule(learning_rate * (1 - 1 / steps), 0.0, max(steps - 1, 1))
    else:
        lr = learning_rate
    opt = optax.adam(lr) if name == "adam" else optax.sgd(lr)
    return opt if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), opt)


def _epoch_orders(key, n: int, batch_size: int, steps: int):
    """One permutation of the ``n`` examples per epoch (``ceil(n / batch_size)`` steps),
    padded to whole batches: ``(epochs, steps_per_epoch * batch_size)``, drawn once before
    the training loop."""
    per_epoch = -(-n // batch_size)
    epochs = -(-steps // per_epoch)
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(
        jnp.arange(epochs)
    )
    return jnp.pad(perms, ((0, 0), (0, per_epoch * batch_size - n)))


def _batch(orders, step_key, t, n: int, batch_size: int, sampling: str):
    """Indices and weights of the examples of step ``t`` (weights 0 pad a short batch)."""
    if sampling == "random":
        idx = jax.random.choice(step_key, n, (batch_size,), replace=False)
        return idx, jnp.ones((batch_size,))
    per_epoch = -(-n // batch_size)
    epoch, pos = t // per_epoch, t % per_epoch
    idx = jax.lax.dynamic_slice(orders[epoch], (pos * batch_size,), (batch_size,))
    return idx, (pos * batch_size + jnp.arange(batch_size) < n).astype(jnp.float32)


def _parts(
    init_params,
    apply_fn,
    steps,
    batch_size,
    learning_rate,
    optimizer,
    schedule,
    clip_norm,
    sampling,
):
    """The training run of ONE direction as ``start``, ``step`` and ``test`` functions: the
    kernels of both forms of :func:`_train_and_test` (and of :func:`_train_and_test_host`)."""
    opt = _optimizer(optimizer, schedule, learning_rate, steps, clip_norm)

    def loss(params, x, y, weight):
        logits = apply_fn(params, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        weight = weight.astype(ce.dtype)
        return jnp.sum(weight * ce) / jnp.sum(weight)

    def start(key, x):
        """``(params, optimizer state, epoch orders or None, the step keys (steps,))``."""
        k_init, k_batches = jax.random.split(key)
        params = init_params(k_init)
        orders = (
            _epoch_orders(k_batches, x.shape[0], batch_size, steps) if sampling == "epoch" else None
        )
        return params, opt.init(params), orders, jax.random.split(k_batches, steps)

    def step(params, state, orders, x, y, t, step_keys):
        idx, weight = _batch(orders, step_keys[t], t, x.shape[0], batch_size, sampling)
        grads = jax.grad(loss)(params, x[idx], y[idx], weight)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def test(params, x_test, y_test):
        pred = jnp.argmax(apply_fn(params, x_test), axis=-1)
        return jnp.mean((pred == y_test).astype(x_test.dtype))

    return start, step, test


_TRAIN = ("init_params", "apply_fn", "steps", "batch_size", "learning_rate", "optimizer",
          "schedule", "clip_norm", "sampling")  # fmt: skip
_STATIC = (*_TRAIN, "batching")


@partial(jax.jit, static_argnames=_STATIC)
def _train_and_test(keys, xs_tr, ys_tr, xs_te, ys_te, *, init_params, apply_fn, steps,
                    batch_size, learning_rate, optimizer="adam", schedule="constant",
                    clip_norm=None, sampling="random", batching="vmap"):  # fmt: skip
    """The training and test of a chunk of directions as one program (the steps under
    ``lax.scan``), compiled once per architecture and training settings (the data and keys
    are arguments)."""
    start, step, test = _parts(init_params, apply_fn, steps, batch_size, learning_rate,
                               optimizer, schedule, clip_norm, sampling)  # fmt: skip

    def one(key, x, y, x_test, y_test):
        params, state, orders, step_keys = start(key, x)

        def body(carry, t):
            return step(*carry, orders, x, y, t, step_keys), None

        (params, _), _ = jax.lax.scan(body, (params, state), jnp.arange(steps))
        return test(params, x_test, y_test)

    if batching == "map":
        return jax.lax.map(lambda a: one(*a), (keys, xs_tr, ys_tr, xs_te, ys_te))
    return jax.vmap(one)(keys, xs_tr, ys_tr, xs_te, ys_te)


@partial(jax.jit, static_argnames=_TRAIN)
def _host_start(keys, xs_tr, **train):
    return jax.vmap(_parts(**train)[0])(keys, xs_tr)


@partial(jax.jit, static_argnames=_TRAIN, donate_argnums=(0, 1))
def _host_step(params, state, orders, xs_tr, ys_tr, t, step_keys, **train):
    step = _parts(**train)[1]
    return jax.vmap(step, in_axes=(0, 0, 0, 0, 0, None, 0))(
        params, state, orders, xs_tr, ys_tr, t, step_keys
    )


@partial(jax.jit, static_argnames=_TRAIN)
def _host_test(params, xs_te, ys_te, **train):
    return jax.vmap(_parts(**train)[2])(params, xs_te, ys_te)


def _train_and_test_host(keys, xs_tr, ys_tr, xs_te, ys_te, *, batching, **train):
    """The same training runs with the step loop on the host: one jitted call per step, all
    the chunk's directions vmapped in it (the CPU default; timings in docs/performance.md);
    the arithmetic is the same, the numbers agree to rounding."""
    del batching
    params, state, orders, step_keys = _host_start(keys, xs_tr, **train)
    xs_tr, ys_tr = jnp.asarray(xs_tr), jnp.asarray(ys_tr)
    for t in range(train["steps"]):
        params, state = _host_step(params, state, orders, xs_tr, ys_tr, np.int32(t),
                                   step_keys, **train)  # fmt: skip
    return _host_test(params, jnp.asarray(xs_te), jnp.asarray(ys_te), **train)
