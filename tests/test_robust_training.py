"""Robust-training losses: every method trains on the digits (loss decreases, deterministic
given the key, one trace per step), PGD-AT beats standard training under PGD, the CURE
penalty against a hand-written finite difference, GradAlign's cosine on affine models, LLR
against the local-linearity measure."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import rel_err, rtol_for

from geomrobust.data import load_dataset
from geomrobust.measures._linearity import local_linearity
from geomrobust.models import create_model, pure_apply
from geomrobust.search import pgd, robust_accuracy
from geomrobust.train import (
    cure_loss,
    cure_regularizer,
    fit,
    gradalign_loss,
    gradient_cosine,
    init_train_state,
    input_loss_grad,
    llr_loss,
    make_loss,
    make_optimizer,
    make_train_step,
    pgd_at_loss,
)

EPS = 0.1
AT_EPS = 0.2
SETTINGS = {
    "standard": {},
    "pgd": {"eps": EPS, "steps": 3, "bounds": (0.0, 1.0)},
    "fgsm": {"eps": EPS, "bounds": (0.0, 1.0)},
    "fgsm_rs": {"eps": EPS, "bounds": (0.0, 1.0)},
    "nfgsm": {"eps": EPS, "bounds": (0.0, 1.0)},
    "gradalign": {"eps": EPS, "lam": 0.5, "bounds": (0.0, 1.0)},
    "cure": {"h": 0.5, "lam": 0.5},
    "llr": {"eps": EPS, "steps": 2, "bounds": (0.0, 1.0)},
}
STOCHASTIC = ("pgd", "fgsm_rs", "nfgsm", "gradalign", "llr")


@pytest.fixture(scope="module")
def digits():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    return tr, te


@pytest.fixture(scope="module")
def mlp():
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0), widths=[32])
    return pure_apply(model)


def _trainer(apply, loss_fn):
    """A train step built (and jitted) once, and a driver of ``steps`` steps from ``key``."""
    counter = {"traces": 0}

    def counted(*args):
        counter["traces"] += 1
        return loss_fn(*args)

    opt = optax.adam(1e-2)
    step = make_train_step(apply, opt, counted)

    def train(params, x, y, key, steps=10):
        state = init_train_state(params, opt)
        for i in range(steps):
            state, aux = step(jax.random.fold_in(key, i), state, x, y)
        return state.params, aux

    return train, counter


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_every_method_trains_deterministically_with_one_trace(method, digits, mlp):
    apply, params = mlp
    x = jnp.asarray(digits[0].images[:128])
    y = jnp.asarray(digits[0].labels[:128])
    loss_fn = make_loss(method, **SETTINGS[method])
    objective = jax.jit(lambda p: loss_fn(apply, p, x, y, jax.random.key(7))[0])
    before = float(objective(params))
    train, counter = _trainer(apply, loss_fn)
    key = jax.random.key(1)
    p1, aux = train(params, x, y, key)
    after = float(objective(p1))
    assert np.isfinite(after) and after < 0.9 * before, (method, before, after)
    assert {"loss", "accuracy"} <= set(aux)
    p2, _ = train(params, x, y, key)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if method in STOCHASTIC:  # the key matters: another key, other parameters
        p3, _ = train(params, x, y, jax.random.key(2))
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p3), strict=True)
        )
        assert diff > 0
    # 2-3 runs x 10 steps with different keys: the step was traced once
    assert counter["traces"] == 1, f"{method}: the train step was traced {counter['traces']} times"


def test_pgd_training_beats_standard_under_pgd(digits):
    """Linf PGD-AT at ε = 0.2 (digits in [0, 1]) against standard training, same budget."""
    tr, te = digits
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(3), widths=[64])
    apply, params = pure_apply(model)
    acc = {}
    for name, loss_fn in (
        ("standard", make_loss("standard")),
        ("pgd", pgd_at_loss(AT_EPS, bounds=(0.0, 1.0))),
    ):
        opt = make_optimizer("adam", 3e-3, epochs=8, steps_per_epoch=len(tr.images) // 64)
        res = fit(
            apply,
            params,
            opt,
            tr.images,
            tr.labels,
            key=jax.random.key(4),
            epochs=8,
            batch_size=64,
            loss_fn=loss_fn,
            progress=False,
        )
        p = res.state.params
        ra = robust_accuracy(
            lambda z, p=p: apply(p, z),
            te.images,
            te.labels,
            [AT_EPS],
            key=jax.random.key(5),
            steps=10,
            bounds=(0.0, 1.0),
        )
        acc[name] = (ra.clean_accuracy, float(ra.accuracy[0]))
    assert acc["standard"][0] > 0.85 and acc["pgd"][0] > 0.6, acc
    assert acc["pgd"][1] > acc["standard"][1] + 0.2, acc


def test_pgd_at_loss_is_cross_entropy_at_the_pgd_point(mlp, digits):
    """L2 PGD-AT: the loss is CE at ``search.pgd``'s point (same key), and its parameter
    gradient is that of CE at that point held fixed (the attack is a constant)."""
    apply, params = mlp
    key = jax.random.key(0)
    x = jnp.asarray(digits[0].images[:16])
    y = jnp.asarray(digits[0].labels[:16])
    loss_fn = pgd_at_loss(0.5, steps=4, norm=2, bounds=(0.0, 1.0))
    loss, g = jax.jit(jax.value_and_grad(lambda p: loss_fn(apply, p, x, y, key)[0]))(params)
    adv = jax.jit(
        lambda p: (
            pgd(
                lambda z: apply(p, z), x, y, key=key, eps=0.5, norm=2, steps=4, bounds=(0.0, 1.0)
            ).adversarial
        )
    )(params)
    assert float(jnp.max(jnp.linalg.norm((adv - x).reshape(16, -1), axis=1))) <= 0.5 + 1e-5

    def ce(p):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, adv), y).mean()

    ref, g_ref = jax.jit(jax.value_and_grad(ce))(params)
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
    flat = jax.flatten_util.ravel_pytree
    assert rel_err(flat(g)[0], flat(g_ref)[0]) < 1e-4


def _tanh_mlp(dtype):
    key = jax.random.key(11)
    w1 = jax.random.normal(key, (12, 8), dtype) / 3
    w2 = jax.random.normal(jax.random.fold_in(key, 1), (8, 4), dtype)
    params = {"w1": w1, "w2": w2}

    def apply(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    return apply, params


def test_cure_regularizer_matches_hand_finite_difference(dtype):
    """``||∇ℓ(x + h z) - ∇ℓ(x)||²``, ``z = sign(∇ℓ)/||sign(∇ℓ)||``, each example by jax.grad."""
    apply, params = _tanh_mlp(dtype)
    x = jax.random.normal(jax.random.key(2), (6, 12), dtype)
    y = jnp.arange(6) % 4
    h = 0.3

    def ell(p, xi, yi):
        return -jax.nn.log_softmax(apply(p, xi[None])[0])[yi]

    @jax.jit
    def hand(p):
        def one(xi, yi):
            g = jax.grad(ell, argnums=1)(p, xi, yi)
            z = jax.lax.stop_gradient(jnp.sign(g) / jnp.linalg.norm(jnp.sign(g)))
            gh = jax.grad(ell, argnums=1)(p, xi + h * z, yi)
            return jnp.sum((gh - g) ** 2)

        return jax.vmap(one)(x, y)

    reg = cure_regularizer(lambda z: apply(params, z), x, y, h)
    assert reg.dtype == dtype
    assert rel_err(reg, hand(params)) < 10 * rtol_for(dtype)
    # the loss and its parameter gradient (z held constant) against the hand version
    lam = 0.7
    loss_fn = cure_loss(h, lam)
    ce = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()  # noqa: E731
    loss, _ = loss_fn(apply, params, x, y, None)
    np.testing.assert_allclose(
        float(loss), float(ce(params) + lam * hand(params).mean()), rtol=10 * rtol_for(dtype)
    )
    g = jax.jit(jax.grad(lambda p: loss_fn(apply, p, x, y, None)[0]))(params)
    g_ref = jax.jit(jax.grad(lambda p: ce(p) + lam * hand(p).mean()))(params)
    for k in g:
        assert rel_err(g[k], g_ref[k]) < 100 * rtol_for(dtype)


def test_gradalign_cosine_is_one_for_a_two_class_affine_model(dtype, key):
    """For two classes ``∇ℓ = σ(F) ∇F`` with ``∇F = w_k - w_y`` constant: the gradients at
    ``x`` and ``x + η`` are positive multiples of one vector, cos = 1, the penalty is 0. With
    three classes the softmax weights move the gradient and cos < 1."""
    x = jax.random.uniform(key, (10, 6), dtype)
    eta = 0.3 * jax.random.uniform(jax.random.fold_in(key, 1), (10, 6), dtype, -1, 1)
    apply = lambda p, z: z @ p["w"] + p["b"]  # noqa: E731
    for k, expect_one in ((2, True), (3, False)):
        params = {
            "w": jax.random.normal(jax.random.fold_in(key, k), (6, k), dtype),
            "b": jnp.zeros((k,), dtype),
        }
        y = jnp.arange(10) % k
        fn = lambda z, params=params: apply(params, z)  # noqa: E731
        _, g1 = input_loss_grad(fn, x, y)
        _, g2 = input_loss_grad(fn, x + eta, y)
        cos, ok = gradient_cosine(g1, g2)
        assert cos.dtype == dtype and bool(ok.all())
        if expect_one:
            np.testing.assert_allclose(np.asarray(cos), 1.0, atol=10 * rtol_for(dtype))
            _, aux = gradalign_loss(0.3, 1.0, bounds=None)(apply, params, x, y, key)
            assert abs(float(aux["reg"])) < 10 * rtol_for(dtype)
            assert abs(float(aux["loss"] - aux["ce"])) < 10 * rtol_for(dtype)
        else:
            assert float(jnp.min(cos)) < 1 - 1e-3


def test_llr_terms_match_the_local_linearity_measure(key, dtype):
    apply, params = _tanh_mlp(dtype)
    x = jax.random.uniform(jax.random.key(3), (5, 12), dtype)
    y = jnp.arange(5) % 4
    _, aux = llr_loss(0.2, steps=3, lam=1.0, mu=1.0, bounds=None)(apply, params, x, y, key)
    ll = local_linearity(lambda z: apply(params, z), x, y, eps=0.2, key=key, steps=3)
    np.testing.assert_allclose(
        float(aux["gamma"]), float(ll.gamma.mean()), rtol=100 * rtol_for(dtype)
    )
    np.testing.assert_allclose(
        float(aux["grad_term"]), float(ll.grad_term.mean()), rtol=100 * rtol_for(dtype)
    )


def test_make_loss_rejects_bad_settings():
    with pytest.raises(ValueError, match="method must be one of"):
        make_loss("trades", eps=0.1)
    with pytest.raises(ValueError, match="eps must be"):
        make_loss("pgd", eps=-1.0)
    with pytest.raises(TypeError, match="bad settings"):
        make_loss("cure", eps=0.1)
    with pytest.raises(ValueError, match="steps must be"):
        make_loss("pgd", eps=0.1, steps=0)
    with pytest.raises(ValueError, match="bounds"):
        make_loss("fgsm_rs", eps=0.1, bounds=(1.0, 0.0))
