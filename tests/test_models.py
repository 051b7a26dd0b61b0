"""Model zoo and adapters: shapes, dtypes, configuration round trips, per-example
independence, smoothness, and the three adapter forms against each other."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_err, rtol_for
from flax import nnx

import geomrobust as gr
from geomrobust.models import (
    MLP,
    ResNet,
    as_classifier,
    as_logits_fn,
    create_model,
    model_config,
    model_from_config,
    pure_apply,
)
from geomrobust.models._layers import pool2d

SMALL = {
    "mlp": {"widths": [16, 8]},
    "lenet": {"channels": [3, 4], "hidden": [12, 8]},
    "resnet": {"width": 4, "blocks": [1, 1]},
}
SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_config_round_trip(name, shape):
    model = create_model(name, shape, 7, key=jax.random.key(0), **SMALL[name])
    x = jax.random.uniform(jax.random.key(1), (3, *shape), jnp.float32)
    apply, params = pure_apply(model)
    apply = jax.jit(apply)  # one compile, shared by the rebuilt models (same structure)
    logits = apply(params, x)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    config = model_config(model)
    assert config["name"] == name and config["input_shape"] == list(shape)
    # the recorded configuration rebuilds the same architecture; the same key, the same weights
    again = model_from_config(config, key=jax.random.key(0))
    assert model_config(again) == config
    np.testing.assert_array_equal(np.asarray(apply(pure_apply(again)[1], x)), np.asarray(logits))
    # a different key gives different weights
    other = model_from_config(config, key=jax.random.key(5))
    assert not np.array_equal(np.asarray(apply(pure_apply(other)[1], x)), np.asarray(logits))


def test_resnet_default_is_resnet18_layout():
    model = nnx.eval_shape(lambda: ResNet((32, 32, 3), 10, rngs=nnx.Rngs(0)))
    _, params = nnx.split(model, nnx.Param)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    # ResNet-18 (CIFAR stem): 11.17M parameters with BatchNorm; GroupNorm has the same count
    assert 11.1e6 < n < 11.3e6, n
    assert len(model.blocks) == 8


@pytest.mark.parametrize("name", sorted(SMALL))
def test_examples_do_not_interact(name):
    """Per-example independence (needed by the geometry operators): an example's logits do
    not depend on the other examples of the batch (GroupNorm, no BatchNorm)."""
    fn = jax.jit(
        as_classifier(create_model(name, (8, 8, 1), 4, key=jax.random.key(2), **SMALL[name]))
    )
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
    y = x.at[1:].set(jax.random.normal(jax.random.key(4), (3, 8, 8, 1)) * 10)
    a, b = np.asarray(fn(x)[0]), np.asarray(fn(y)[0])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fn(x[::-1])[-1]), a, rtol=1e-5, atol=1e-6)


def test_smooth_lenet_hessian_matches_dense(dtype):
    """softplus + average pooling is C² (float32 and float64 parameters): the HVP of the
    logit difference matches the dense Hessian (not the zero Hessian of a ReLU net)."""
    model = create_model(
        "lenet",
        (4, 4, 1),
        3,
        key=jax.random.key(0),
        activation="softplus",
        pool="avg",
        param_dtype=str(dtype),
        **SMALL["lenet"],
    )
    fn = as_classifier(model)
    x = jax.random.normal(jax.random.key(1), (4, 4, 1), dtype)
    assert jax.jit(fn)(x[None]).dtype == dtype  # float64 parameters give float64 logits
    F = gr.logit_difference(fn, 0, 2)
    H = jax.jit(jax.hessian(lambda z: F(z.reshape(x.shape))))(x.ravel())
    v = jax.random.normal(jax.random.key(2), x.shape, dtype)
    hv = jax.jit(lambda x, v: gr.hvp(F, x, v))(x, v)
    assert hv.dtype == dtype
    assert rel_err(hv.ravel(), H @ v.ravel()) <= 10 * rtol_for(dtype)
    assert np.linalg.norm(np.asarray(H)) > 1e-3


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_same_padding_odd_size(kind):
    x = jnp.arange(2 * 5 * 5 * 3, dtype=jnp.float64).reshape(2, 5, 5, 3) ** 1.5
    out = np.asarray(pool2d(x, kind))
    assert out.shape == (2, 3, 3, 3)
    assert pool2d(x.astype(jnp.float32), kind).dtype == jnp.float32  # dtype is kept
    xn = np.asarray(x)
    reduce = np.max if kind == "max" else np.mean
    for i in range(3):
        for j in range(3):
            win = xn[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, :]  # clipped at the border
            np.testing.assert_allclose(out[:, i, j], reduce(win, axis=(1, 2)), rtol=1e-12)


class _LinenMLP(linen.Module):
    widths: tuple = (16,)
    num_classes: int = 3

    @linen.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for w in self.widths:
            h = jnp.tanh(linen.Dense(w)(h))
        return linen.Dense(self.num_classes)(h)


def test_adapter_forms_agree_and_differentiate(dtype):
    """NNX module, Linen apply + params, and a plain function: same logits and the same input
    gradients when they hold the same weights."""
    x = jax.random.normal(jax.random.key(0), (4, 2, 3), dtype)
    linen_model = _LinenMLP()
    variables = linen_model.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda a: a.astype(dtype), variables)
    (k1, b1), (k2, b2) = (
        (variables["params"][n]["kernel"], variables["params"][n]["bias"])
        for n in ("Dense_0", "Dense_1")
    )

    nnx_model = MLP(
        (2, 3), 3, widths=[16], activation="tanh", param_dtype=str(dtype), rngs=nnx.Rngs(0)
    )
    for layer, (k, b) in zip(nnx_model.layers, [(k1, b1), (k2, b2)], strict=True):
        layer.kernel[...], layer.bias[...] = k, b

    def plain(z):
        return jnp.tanh(z.reshape(z.shape[0], -1) @ k1 + b1) @ k2 + b2

    forms = {
        "nnx": as_classifier(nnx_model),
        "linen-apply": as_classifier(linen_model.apply, variables),
        "linen-module": as_classifier(linen_model, variables),
        "plain": as_classifier(plain),
    }
    assert as_classifier(plain).apply.fn is plain  # a plain function is static, unchanged
    ref = plain(x)
    gref = gr.input_grad(gr.logit_difference(plain, 0, 1), x[0])
    for name, fn in forms.items():
        out = jax.jit(fn)(x)
        assert out.dtype == dtype, name
        assert rel_err(out, ref) <= rtol_for(dtype), name
        g = gr.input_grad(gr.logit_difference(fn, 0, 1), x[0])
        assert g.shape == x[0].shape and g.dtype == dtype, name
        assert rel_err(g, gref) <= rtol_for(dtype), name


def test_pure_apply_snapshot_and_param_grads():
    model = create_model("mlp", (5,), 3, key=jax.random.key(0), widths=[4])
    apply, params = pure_apply(model)
    fn = as_classifier(model)
    x = jax.random.normal(jax.random.key(1), (2, 5))
    before = np.asarray(fn(x))
    model.layers[0].kernel[...] = 0.0  # mutate the module in place
    np.testing.assert_array_equal(np.asarray(apply(params, x)), before)  # a snapshot
    # the classifier holds the module's own variables: it sees the update, eagerly and jitted
    np.testing.assert_array_equal(np.asarray(fn(x)), np.asarray(model(x)))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda c, z: c(z))(fn, x)), model(x))
    assert not np.array_equal(np.asarray(fn(x)), before)
    grads = jax.grad(lambda p: apply(p, x).sum())(params)
    # d/db of sum of logits of the last layer = batch size for every class
    np.testing.assert_allclose(np.asarray(grads["layers"][1]["bias"][...]), 2.0, rtol=1e-6)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="name must be one of"):
        create_model("vgg", (8, 8, 1), 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="activation must be one of"):
        create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0), activation="sigmoidish")
    with pytest.raises(TypeError, match="PRNG key"):
        create_model("mlp", (8, 8, 1), 10, key=0)
    with pytest.raises(TypeError, match="bad configuration for model 'lenet'"):
        create_model("lenet", (8, 8, 1), 10, key=jax.random.key(0), widths=[3])
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mlp", (8,), 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="image input_shape"):
        create_model("resnet", (64,), 10, key=jax.random.key(0))
    with pytest.raises(TypeError, match="does not record a configuration"):
        model_config(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="Flax NNX module, an Equinox module, or an apply"):
        as_classifier(3)


def test_as_logits_fn_deprecated():
    """The old adapter name works one release, with a warning naming as_classifier."""
    model = create_model("mlp", (4,), 3, key=jax.random.key(0), widths=[5])
    with pytest.warns(DeprecationWarning, match="as_classifier"):
        fn = as_logits_fn(model)
    x = jnp.ones((2, 4))
    np.testing.assert_array_equal(fn(x), as_classifier(model)(x))
