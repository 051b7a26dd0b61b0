"""LeNet's convolution path, padding and initialisation options, and the authors' training
recipe of the NADs paper's Fourier accuracy maps (linear decay, gradient clipping, epochs)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import rel_err, rtol_for
from flax import nnx

import geomrobust as gr
from geomrobust.measures._fourier_map import _batch, _epoch_orders, _optimizer
from geomrobust.models import (
    LeNet,
    as_classifier,
    conv2d_im2col,
    create_model,
    init_kwargs,
    model_config,
    model_from_config,
)

SMALL = {"channels": [3, 4], "hidden": [12, 8]}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_im2col_is_the_xla_convolution(k, padding, dtype):
    """Values and both gradients (input and kernel) of the im2col convolution equal
    ``lax.conv_general_dilated``'s, odd and even kernels (SAME pads an even kernel
    asymmetrically), several channels, float32 and float64."""
    kx, kw, kb = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 9, 7, 3), dtype)
    w = jax.random.normal(kw, (k, k, 3, 5), dtype)
    b = jax.random.normal(kb, (5,), dtype)

    def xla(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=dn) + b

    def mine(x, w):
        return conv2d_im2col(x, w, b, padding)

    a, c = xla(x, w), mine(x, w)
    assert a.shape == c.shape and c.dtype == dtype
    tol = rtol_for(dtype)
    assert rel_err(c, a) <= 10 * tol
    g = jax.random.normal(jax.random.key(3), a.shape, dtype)
    ga = jax.grad(lambda x, w: jnp.sum(g * xla(x, w)), argnums=(0, 1))(x, w)
    gc = jax.grad(lambda x, w: jnp.sum(g * mine(x, w)), argnums=(0, 1))(x, w)
    for u, v in zip(ga, gc, strict=True):
        assert rel_err(v, u) <= 10 * tol


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_lenet_im2col_matches_xla_to_second_order(padding, dtype):
    """The same weights through either convolution path: logits, input gradients and the
    dense input Hessian of a smooth LeNet (softplus, average pooling) agree."""
    shape = (7, 7, 1)
    kw = dict(activation="softplus", pool="avg", padding=padding, param_dtype=dtype,
              kernel_size=3, **SMALL)  # fmt: skip
    model = create_model("lenet", shape, 3, key=jax.random.key(0), **kw)
    x = jax.random.normal(jax.random.key(1), shape, np.dtype(dtype))
    fns = {}
    for impl in ("xla", "im2col"):
        model.conv_impl = impl
        fn = as_classifier(model)
        F = gr.logit_difference(fn, 0, 2)
        fns[impl] = (
            fn(x[None]),
            jax.grad(F)(x),
            jax.jit(jax.hessian(lambda z, F=F: F(z.reshape(shape))))(x.ravel()),
        )
    tol = rtol_for(np.dtype(dtype))
    for a, b in zip(fns["xla"], fns["im2col"], strict=True):
        assert b.dtype == np.dtype(dtype)
        assert rel_err(b, a) <= 100 * tol
    assert float(jnp.linalg.norm(fns["xla"][2])) > 1e-4  # a real (non-zero) Hessian


def test_lenet_auto_uses_im2col_on_the_cpu_and_same_function():
    assert LeNet((8, 8, 1), 3, rngs=nnx.Rngs(0), **SMALL).conv_impl == "xla"  # the default
    model = LeNet((8, 8, 1), 3, conv="auto", rngs=nnx.Rngs(0), **SMALL)
    assert model.conv_impl == "auto" and "conv" not in model_config(model)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    auto = model(x)
    model.conv_impl = "xla"
    np.testing.assert_allclose(np.asarray(auto), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    if jax.default_backend() == "cpu":
        model.conv_impl = "im2col"
        np.testing.assert_array_equal(np.asarray(auto), np.asarray(model(x)))


def test_classic_lenet5_layout_and_pytorch_init():
    """``padding="VALID", init="pytorch"``: 32 -> 28 -> 14 -> 10 -> 5 (a 400-wide flatten),
    every kernel and bias uniform on ``±1/sqrt(fan_in)`` as PyTorch's defaults."""
    model = LeNet((32, 32, 1), 2, padding="VALID", init="pytorch", rngs=nnx.Rngs(0))
    assert model.fc1.kernel.shape == (400, 120)
    fans = {"conv1": 25, "conv2": 150, "fc1": 400, "fc2": 120, "out": 84}
    for name, fan in fans.items():
        layer = getattr(model, name)
        bound = 1 / np.sqrt(fan)
        for p in (layer.kernel[...], layer.bias[...]):
            p = np.asarray(p)
            assert np.abs(p).max() <= bound and np.any(p != 0)
            # uniform, not normal: the range is used, the std is bound / sqrt(3)
            if p.size >= 400:
                assert np.abs(p).max() > 0.99 * bound
                assert abs(p.std() * np.sqrt(3) / bound - 1) < 0.1
    assert model(jnp.zeros((2, 32, 32, 1))).shape == (2, 2)
    mlp = gr.models.MLP((16,), 2, widths=(), init="pytorch", rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(mlp.layers[0].kernel[...])).max() <= 0.25
    assert np.any(np.asarray(mlp.layers[0].bias[...]) != 0)
    assert init_kwargs("flax", 10) == {}


def test_options_enter_the_config_only_when_not_default_and_round_trip():
    default = model_config(create_model("lenet", (8, 8, 1), 3, key=jax.random.key(0), **SMALL))
    assert "padding" not in default and "init" not in default  # earlier checkpoints unchanged
    mlp = model_config(create_model("mlp", (4,), 2, key=jax.random.key(0), widths=[3]))
    assert "init" not in mlp
    kw = dict(padding="VALID", init="pytorch", **SMALL)
    model = create_model("lenet", (16, 16, 1), 3, key=jax.random.key(0), **kw)
    config = model_config(model)
    assert config["padding"] == "VALID" and config["init"] == "pytorch"
    again = model_from_config(config, key=jax.random.key(0))
    assert model_config(again) == config
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="padding"):
        LeNet((8, 8, 1), 2, padding="FULL", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="conv"):
        LeNet((8, 8, 1), 2, conv="fft", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="init"):
        LeNet((8, 8, 1), 2, init="xavier", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least 13×13"):
        LeNet((8, 8, 1), 2, padding="VALID", rngs=nnx.Rngs(0))


def test_linear_schedule_and_clipping_are_the_authors():
    """SGD steps of ``lr (1 - (t+1)/T)`` (the authors' rate after each batch), each on the
    gradient clipped to global norm 0.5."""
    steps, lr = 5, 0.5
    opt = _optimizer("sgd", "linear", lr, steps, clip_norm=0.5)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    state = opt.init(params)
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}  # global norm 13
    for t in range(steps):
        upd, state = opt.update(grads, state, params)
        norm = float(optax.tree.norm(upd))
        np.testing.assert_allclose(norm, lr * (1 - (t + 1) / steps) * 0.5, rtol=1e-6, atol=1e-9)
    small = {"a": jnp.array([0.03, 0.04]), "b": jnp.array([0.0])}  # below the clip: unchanged
    opt = _optimizer("sgd", "linear", lr, steps, clip_norm=0.5)
    upd, _ = opt.update(small, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(upd["a"]), -lr * (1 - 1 / steps) * np.array([0.03, 0.04]))


def test_epoch_sampling_visits_every_example_once_per_epoch():
    n, b, epochs = 10, 4, 3
    per_epoch = -(-n // b)  # 3 steps: 4, 4 and the remaining 2
    orders = _epoch_orders(jax.random.key(0), n, b, per_epoch * epochs)
    seen = []
    for t in range(per_epoch * epochs):
        idx, w = _batch(orders, None, t, n, b, "epoch")
        assert idx.shape == (b,) and w.shape == (b,)
        if t % per_epoch == per_epoch - 1:
            assert np.asarray(w).tolist() == [1, 1, 0, 0]
        seen.append(np.asarray(idx)[np.asarray(w) > 0])
    for e in range(epochs):
        got = np.concatenate(seen[e * per_epoch : (e + 1) * per_epoch])
        assert sorted(got.tolist()) == list(range(n))
    assert not np.array_equal(seen[0], seen[per_epoch])  # reshuffled each epoch


def test_authors_recipe_learns_what_a_linear_model_can():
    """The whole recipe (plain SGD, linear decay from 0.5, clip 0.5, epoch shuffling with a
    short last batch) on the closed-form contrast: a linear model learns every direction."""
    shape = (4, 4)

    def init_params(k):
        return {"w": 0.01 * jax.random.normal(k, (16, 2)), "b": jnp.zeros(2)}

    def linear(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    amap = gr.measures.fourier_accuracy_map(
        init_params, linear, shape, key=jax.random.key(0), frequencies=[(0, 0), (2, 2)],
        n_train=300, n_test=400, steps=20 * 3, batch_size=128, learning_rate=0.5,
        optimizer="sgd", schedule="linear", clip_norm=0.5, sampling="epoch",
    )  # fmt: skip
    assert float(amap.accuracy.min()) > 0.9
    kw = dict(key=jax.random.key(0), frequencies=[(0, 0)], n_train=8, steps=2)
    with pytest.raises(ValueError, match="sampling"):
        gr.measures.fourier_accuracy_map(init_params, linear, shape, sampling="bootstrap", **kw)
    with pytest.raises(ValueError, match="clip_norm"):
        gr.measures.fourier_accuracy_map(init_params, linear, shape, clip_norm=-1.0, **kw)
