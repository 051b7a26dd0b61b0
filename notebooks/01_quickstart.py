# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 Quickstart: a classifier function, its margins, one slice
#
# geomrobust works on any JAX function `logits_fn(x) -> logits` mapping a batch `(N, *shape)`
# to `(N, K)`. We start with a hand-written affine classifier, where DeepFool is exact, then a
# LeNet trained on the embedded 8×8 digits (trained once and cached, a few seconds).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from geomrobust.data import load_dataset
from geomrobust.engine import enable_compilation_cache
from geomrobust.measures import boundary_slice, random_orthogonal
from geomrobust.plot import plot_slice
from geomrobust.search import deepfool

enable_compilation_cache()  # compiled programs kept on disk: ~/.cache/geomrobust/xla

# %% [markdown]
# ## An affine classifier: DeepFool's L2 margin is (1 + η) |F(x)| / ||w||

# %%
key = jax.random.key(0)
W = jax.random.normal(key, (3, 5))
b = jnp.array([0.1, -0.2, 0.3])


def affine(x):  # (N, 5) -> (N, 3)
    return x @ W.T + b


x = jax.random.normal(jax.random.key(1), (4, 5))
res = deepfool(affine, x)  # overshoot η = 0.02: the step is (1 + η) r
y = jnp.argmax(affine(x), -1)
F = affine(x) - affine(x)[jnp.arange(4), y][:, None]  # F_k = f_k - f_y
w = W[None] - W[y][:, None]  # gradients of F_k
dist = jnp.where(jnp.arange(3)[None] == y[:, None], jnp.inf, -F / jnp.linalg.norm(w, axis=-1))
print("DeepFool margins:", np.round(res.margin, 5))
print("closed form     :", np.round(1.02 * dist.min(-1), 5))
assert np.allclose(res.margin, 1.02 * dist.min(-1), rtol=1e-4)

# %% [markdown]
# ## A LeNet on the digits
# `geomrobust.report` trains the report's models once and caches them
# (`~/.cache/geomrobust/models`, or `$GEOMROBUST_CACHE_DIR`). This is the quick report's
# model: a *smooth* LeNet (softplus, average pooling, so that curvatures are defined) trained
# for 15 epochs with Adam, about 79 % test accuracy: enough to show margins, and fast. It is
# not the `geomrobust train` model of the README (ReLU LeNet, SGD with momentum, 30 epochs:
# about 97 %); `geomrobust report` without `--quick` trains its smooth LeNet for 30 epochs
# on 16×16 digits.

# %%
from geomrobust.models import as_classifier
from geomrobust.report import SIZES, cached_model, model_settings
from geomrobust.train import load_checkpoint

settings = model_settings(
    "standard", SIZES["quick"], dataset="digits", data_dir=None, resize=None, key=0
)
path, trained = cached_model("standard", settings)
ckpt = load_checkpoint(path)
logits_fn = as_classifier(ckpt.model)
print("test accuracy:", ckpt.metadata["accuracy"], "(trained now)" if trained else "(cached)")
print("(the quick report's smooth LeNet, 15 epochs: about 0.79; see the text above)")

test = load_dataset("digits", "test")
x, labels = jnp.asarray(test.images[:32]), jnp.asarray(test.labels[:32])
l2 = deepfool(logits_fn, x)
linf = deepfool(logits_fn, x, norm=jnp.inf)
print("converged:", int(l2.converged.sum()), "/", len(x))
print("median L2 margin:", float(jnp.median(l2.margin)))
print("median Linf margin:", float(jnp.median(linf.margin)))

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(np.asarray(l2.margin[l2.converged]), bins=15)
ax.set_xlabel("L2 DeepFool margin")
ax.set_ylabel("examples")
ax.set_title("Distance to the decision boundary")

# %% [markdown]
# ## One slice: the plane of the adversarial direction and a random direction

# %%
i = 0
u = l2.perturbation[i]
v = random_orthogonal(u, key=jax.random.key(2))
sl = boundary_slice(logits_fn, x[i], u, v, 3 * float(l2.margin[i]), 41)
fig, ax = plot_slice(
    sl.labels, sl.a, sl.b, sl.contour, xlabel="adversarial direction", ylabel="random direction"
)
print("the boundary crosses the adversarial axis near", float(l2.margin[i]))
