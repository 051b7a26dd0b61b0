"""Training: optimizer/schedule formulas, one step against a hand-computed update, loss
decrease on the digits, determinism, compile-once, and evaluation against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from geomrobust.data import load_dataset
from geomrobust.models import create_model, pure_apply
from geomrobust.train import (
    cross_entropy_loss,
    evaluate,
    fit,
    init_train_state,
    make_optimizer,
    make_schedule,
    make_train_step,
)

SMALL_LENET = {"channels": [4, 8], "hidden": [32, 16]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_schedules_follow_their_formulas():
    lr, T = 0.1, 100
    cos = make_schedule("cosine", lr, T)
    for t in (0, 25, 50, 100):
        np.testing.assert_allclose(cos(t), lr * (1 + np.cos(np.pi * t / T)) / 2, rtol=1e-6)
    one = make_schedule("onecycle", lr, T)
    np.testing.assert_allclose(
        [one(0), one(20), one(40), one(70), one(100)], [0, lr / 2, lr, lr / 2, 0], atol=1e-7
    )
    pw = make_schedule("piecewise", lr, T)
    np.testing.assert_allclose(
        [pw(0), pw(49), pw(50), pw(74), pw(75), pw(99)],
        [lr, lr, lr / 10, lr / 10, lr / 100, lr / 100],
        rtol=1e-6,
    )
    np.testing.assert_allclose(make_schedule("constant", lr, T)(77), lr)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("linear-warmup", lr, T)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", 0.1, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("sgd", 0.1, epochs=1, steps_per_epoch=1, momentum=1.5)


def test_sgd_step_matches_hand_computed_update(dtype):
    """Two steps of SGD + momentum + weight decay on an affine softmax model against the
    closed form ``m <- μ m + (g + λθ)``, ``θ <- θ - η_t m``."""
    key = jax.random.key(0)
    w = jax.random.normal(key, (5, 3), dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (8, 5), dtype)
    y = jnp.arange(8) % 3

    def apply(p, x):
        return x @ p

    lr, mu, wd = 0.1, 0.9, 0.01
    opt = make_optimizer(
        "sgd", lr, epochs=1, steps_per_epoch=2, schedule="constant", weight_decay=wd, momentum=mu
    )
    state = init_train_state(w, opt)
    step = make_train_step(apply, opt)
    theta, m = np.asarray(w, np.float64), 0
    for i in range(2):
        state, aux = step(jax.random.key(i), state, x, y)
        probs = jax.nn.softmax(np.asarray(x, np.float64) @ theta)
        onehot = np.eye(3)[np.asarray(y)]
        g = np.asarray(x, np.float64).T @ (probs - onehot) / 8
        m = mu * m + (g + wd * theta)
        theta = theta - lr * m
        assert state.params.dtype == dtype
        np.testing.assert_allclose(
            state.params, theta, rtol=10 * (1e-6 if dtype == jnp.float32 else 1e-12)
        )
    assert int(state.step) == 2
    loss, aux = cross_entropy_loss(apply, state.params, x, y)
    assert set(aux) == {"loss", "accuracy"} and aux["loss"] == loss


def _train(digits, key, epochs=1, counter=None, **kw):
    train, test = digits
    model = create_model("lenet", train.images.shape[1:], 10, key=jax.random.key(0), **SMALL_LENET)
    apply, params = pure_apply(model)
    batch = 32
    opt = make_optimizer("sgd", 0.05, epochs=epochs, steps_per_epoch=len(train.labels) // batch)

    def loss_fn(apply, params, x, y, key):
        if counter is not None:
            counter.append(1)  # runs once per trace, not per step
        return cross_entropy_loss(apply, params, x, y, key)

    return (
        apply,
        params,
        fit(
            apply,
            params,
            opt,
            train.images,
            train.labels,
            key=key,
            epochs=epochs,
            batch_size=batch,
            loss_fn=loss_fn,
            eval_data=(test.images, test.labels),
            progress=False,
            **kw,
        ),
    )


def test_fit_learns_compiles_once_and_is_deterministic(digits):
    train, test = digits
    traces, records = [], []
    apply, params0, r1 = _train(
        digits,
        jax.random.key(3),
        epochs=2,
        counter=traces,
        callback=lambda e, rec: records.append((e, rec)),
    )
    # the step was traced (compiled) once for all 2 x 45 steps
    assert len(traces) == 1
    assert int(r1.state.step) == 2 * (len(train.labels) // 32)
    h = r1.history
    assert h["epoch"] == [1, 2] and [e for e, _ in records] == [1, 2]
    # learning: training loss falls every epoch, and the test accuracy is far above chance
    assert h["train_loss"][1] < h["train_loss"][0]
    before = evaluate(apply, params0, test.images, test.labels)
    assert h["eval_loss"][-1] < 0.5 * before.loss
    assert h["eval_accuracy"][-1] > 0.4 > 0.2 > before.accuracy
    # the same key gives bit-identical parameters, another key different ones
    _, _, r2 = _train(digits, jax.random.key(3), epochs=2)
    for a, b in zip(
        jax.tree.leaves(r1.state.params), jax.tree.leaves(r2.state.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, _, r3 = _train(digits, jax.random.key(4), epochs=1)
    assert not np.array_equal(
        jax.tree.leaves(r1.state.params)[0], jax.tree.leaves(r3.state.params)[0]
    )


def test_evaluate_matches_numpy(digits):
    _, test = digits
    model = create_model("mlp", test.images.shape[1:], 10, key=jax.random.key(1), widths=[8])
    apply, params = pure_apply(model)
    logits = np.asarray(apply(params, test.images), np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    ref_loss = -logp[np.arange(len(test.labels)), test.labels].mean()
    ref_acc = (logits.argmax(1) == test.labels).mean()
    # a chunk size that does not divide N: the padded last chunk must not count
    res = evaluate(apply, params, test.images, test.labels, batch_size=100)
    np.testing.assert_allclose(res.loss, ref_loss, rtol=1e-5)
    assert res.accuracy == pytest.approx(ref_acc, abs=1e-12)


def test_fit_rejects_bad_arguments(digits):
    train, _ = digits
    apply, params = pure_apply(
        create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0), widths=[4])
    )
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="batch_size"):
        fit(
            apply,
            params,
            opt,
            train.images,
            train.labels,
            key=jax.random.key(0),
            epochs=1,
            batch_size=10**6,
        )
    with pytest.raises(ValueError, match="labels must have shape"):
        fit(
            apply,
            params,
            opt,
            train.images,
            train.labels[:-1],
            key=jax.random.key(0),
            epochs=1,
            batch_size=8,
        )
