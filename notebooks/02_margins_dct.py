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
# # 02 Margins in DCT subspaces ("Hold me tight!")
#
# Ortiz-Jimenez et al. (NeurIPS 2020) measure the margin of each example inside subspaces of
# 2-D DCT frequencies. On digit-like data the margins are small at low frequencies and very
# large (invariance) at high frequencies. If the training data are *flipped* in frequency
# (`IDCT(flip(DCT(x)))`), the profile flips as well: the boundary follows where the
# discriminative information is. We train two small MLPs on the 8×8 digits (seconds each).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from geomrobust.data import dct_flip, load_dataset
from geomrobust.engine import enable_compilation_cache
from geomrobust.measures import dct_subspaces, subspace_margins, summarize_bands
from geomrobust.models import create_model, pure_apply
from geomrobust.train import evaluate, fit, make_optimizer

enable_compilation_cache()  # compiled programs kept on disk: ~/.cache/geomrobust/xla

train, test = load_dataset("digits", "train"), load_dataset("digits", "test")


def train_mlp(images, labels, key):
    model = create_model(
        "mlp", images.shape[1:], 10, key=key, widths=[128, 128], activation="softplus"
    )
    apply, params = pure_apply(model)
    opt = make_optimizer("adam", 3e-3, epochs=20, steps_per_epoch=len(images) // 64)
    res = fit(apply, params, opt, images, labels, key=key, epochs=20, batch_size=64, progress=False)
    return apply, res.state.params


flip = lambda a: np.asarray(dct_flip(jnp.asarray(a)))  # noqa: E731
models = {}
for name, tr, te in [
    ("original", train.images, test.images),
    ("flipped", flip(train.images), flip(test.images)),
]:
    apply, params = train_mlp(tr, train.labels, jax.random.key(0))
    acc = evaluate(apply, params, te, test.labels).accuracy
    models[name] = (lambda z, a=apply, p=params: a(p, z), jnp.asarray(te[:48]))
    print(f"{name}: test accuracy {acc:.3f}")

# %%
bases = dct_subspaces((8, 8, 1), block=2, stride=1)
print(len(bases), "bands of dimension", bases[0].shape[1])
fig, ax = plt.subplots(figsize=(6, 3.5))
profiles = {}
for name, (fn, x) in models.items():
    r = subspace_margins(fn, x, None, bases)
    s = summarize_bands(r.margin, r.converged)
    profiles[name] = s.median
    ax.plot(s.median, marker="o", label=name)
    ax.fill_between(np.arange(len(bases)), s.q25, s.q75, alpha=0.2)
    print(name, "unconverged per band:", s.n_unconverged)
ax.set_yscale("log")
ax.set_xlabel("DCT band (low -> high frequency)")
ax.set_ylabel("median L2 margin in the band")
ax.legend()

# %% [markdown]
# The original model is closest to its boundary at low frequency; the model trained on
# flipped data is closest at high frequency.

# %%
orig, flipped = profiles["original"], profiles["flipped"]
print("original: low/high band margin ratio", orig[0] / orig[-1])
print("flipped : low/high band margin ratio", flipped[0] / flipped[-1])
assert orig[0] < orig[-1] and flipped[0] > flipped[-1]
