"""One small smooth CNN and one MLP, written in every form a user may bring, with the SAME weights.

``cnn_forms(params)`` and ``mlp_forms(params)`` return ``{name: classifier}``: a plain
function (the reference), a ``gr.Classifier``, a Flax NNX module, a Flax Linen module with
its variables, an Equinox module (holding arrays and a non-array activation field), and
(MLP) a Haiku transform with its params and an Equinox per-example MLP under
``eqx.filter_vmap``. Each maps ``(N, 8, 8, 1)`` images to ``(N, 3)`` logits.
"""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

try:  # dm-haiku is a test extra that may not install everywhere: its forms are then skipped
    import haiku as hk
except ImportError:  # pragma: no cover - depends on the environment
    hk = None

import geomrobust as gr

SHAPE = (8, 8, 1)
K = 3
CH = 4
HID = 8


def cnn_params(key, dtype=jnp.float32):
    """conv 3x3 (1 -> 4, SAME) -> tanh -> flatten -> dense (256 -> 3)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    d = SHAPE[0] * SHAPE[1] * CH
    return {
        "conv_w": jax.random.normal(k1, (3, 3, 1, CH), dtype) / 3.0,
        "conv_b": 0.1 * jax.random.normal(k2, (CH,), dtype),
        "dense_w": jax.random.normal(k3, (d, K), dtype) / jnp.sqrt(d).astype(dtype),
        "dense_b": 0.1 * jax.random.normal(k4, (K,), dtype),
    }


def cnn_apply(p, x):
    y = jax.lax.conv_general_dilated(
        x, p["conv_w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = jnp.tanh(y + p["conv_b"])
    return y.reshape(x.shape[0], -1) @ p["dense_w"] + p["dense_b"]


class EqxCNN(eqx.Module):
    conv_w: jax.Array
    conv_b: jax.Array
    dense_w: jax.Array
    dense_b: jax.Array
    act: object = jnp.tanh  # a non-array leaf: static in the classifier

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(
            x, self.conv_w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = self.act(y + self.conv_b)
        return y.reshape(x.shape[0], -1) @ self.dense_w + self.dense_b


class NNXCNN(nnx.Module):
    def __init__(self, p):
        self.conv = nnx.Conv(1, CH, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
        self.dense = nnx.Linear(SHAPE[0] * SHAPE[1] * CH, K, rngs=nnx.Rngs(1))
        self.set(p)

    def set(self, p):
        """Copy ``p`` into the module's variables, in place."""
        self.conv.kernel[...] = p["conv_w"]
        self.conv.bias[...] = p["conv_b"]
        self.dense.kernel[...] = p["dense_w"]
        self.dense.bias[...] = p["dense_b"]

    def __call__(self, x):
        y = jnp.tanh(self.conv(x))
        return self.dense(y.reshape(x.shape[0], -1))


class LinenCNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        y = jnp.tanh(linen.Conv(CH, (3, 3), padding="SAME", name="conv")(x))
        return linen.Dense(K, name="dense")(y.reshape(x.shape[0], -1))


def cnn_forms(p) -> dict:
    model = NNXCNN(p)
    variables = {
        "params": {
            "conv": {"kernel": p["conv_w"], "bias": p["conv_b"]},
            "dense": {"kernel": p["dense_w"], "bias": p["dense_b"]},
        }
    }
    return {
        "plain": lambda x: cnn_apply(p, x),
        "classifier": gr.Classifier(cnn_apply, p),
        "nnx": model,
        "linen": gr.as_classifier(LinenCNN(), variables),
        "equinox": EqxCNN(p["conv_w"], p["conv_b"], p["dense_w"], p["dense_b"]),
    }


def mlp_params(key, dtype=jnp.float32):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    d = SHAPE[0] * SHAPE[1]
    return {
        "w1": jax.random.normal(k1, (d, HID), dtype) / jnp.sqrt(d).astype(dtype),
        "b1": 0.1 * jax.random.normal(k2, (HID,), dtype),
        "w2": jax.random.normal(k3, (HID, K), dtype) / jnp.sqrt(HID).astype(dtype),
        "b2": 0.1 * jax.random.normal(k4, (K,), dtype),
    }


def mlp_apply(p, x):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def _haiku_mlp(x):
    mlp = hk.nets.MLP([HID, K], activation=jnp.tanh, name="mlp")
    return mlp(x.reshape(x.shape[0], -1))


def mlp_forms(p) -> dict:
    """The MLP forms; the Haiku ones (``haiku``, ``haiku_no_rng``) only where dm-haiku is
    installed (:func:`needs`)."""
    per_example = eqx.nn.MLP(
        SHAPE[0] * SHAPE[1], K, HID, 1, activation=jnp.tanh, key=jax.random.key(0)
    )
    per_example = eqx.tree_at(
        lambda m: (m.layers[0].weight, m.layers[0].bias, m.layers[1].weight, m.layers[1].bias),
        per_example,
        (p["w1"].T, p["b1"], p["w2"].T, p["b2"]),
    )
    vmapped = eqx.filter_vmap(lambda m, x: m(x.reshape(-1)), in_axes=(None, 0))
    forms = {
        "plain": lambda x: mlp_apply(p, x),
        "equinox_vmap": jax.tree_util.Partial(vmapped, per_example),
    }
    if hk is not None:
        haiku = hk.transform(_haiku_mlp)
        hparams = {
            "mlp/~/linear_0": {"w": p["w1"], "b": p["b1"]},
            "mlp/~/linear_1": {"w": p["w2"], "b": p["b2"]},
        }
        forms["haiku"] = gr.as_classifier(haiku, hparams)
        forms["haiku_no_rng"] = gr.as_classifier(hk.without_apply_rng(haiku), hparams)
    return forms


def needs(form: str) -> None:
    """Skip the calling test when ``form`` needs a package that is not installed."""
    if form.startswith("haiku") and hk is None:
        pytest.skip("dm-haiku is not installed (pip install '.[test]')")
