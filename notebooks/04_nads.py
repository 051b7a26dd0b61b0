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
# # 04 Neural anisotropy directions
#
# NADs (Ortiz-Jimenez et al., NeurIPS 2020) are the eigenvectors of
# `E_θ[∇f_θ(x₀) ∇f_θ(x₀)ᵀ]` over random initialisations θ of an architecture. An architecture
# learns a linearly separable directional dataset `D(v)` easily only when `v` lines up with
# its leading NADs. Logistic regression (an MLP without hidden layers) has no preferred
# direction; a CNN with pooling does.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

from geomrobust.engine import enable_compilation_cache
from geomrobust.measures import fourier_accuracy_map, fourier_magnitude, nads
from geomrobust.models import as_classifier, create_model, pure_apply
from geomrobust.plot import plot_accuracy_map, plot_nads

enable_compilation_cache()  # compiled programs kept on disk: ~/.cache/geomrobust/xla

shape = (8, 8, 1)


def lenet(k):
    return as_classifier(create_model("lenet", shape, 2, key=k))


res = nads(lenet, shape, num_networks=128, key=jax.random.key(0), num=16, output="difference")
fig, _ = plot_nads(res.eigenvectors, res.eigenvalues)
fig, _ = plot_nads(fourier_magnitude(res.eigenvectors), res.eigenvalues, fourier=True)
print("eigenvalues:", np.round(np.asarray(res.eigenvalues), 4))

# %% [markdown]
# ## The published estimator: secants at a large scale
# The authors' code estimates `g` by central secants along each pixel,
# `(f(x₀ + s eᵢ) - f(x₀ - s eᵢ)) / 2s` with `s = 100`, and takes a PCA (centred). On a ReLU
# LeNet the secant at that scale spans many linear pieces and is not the gradient of the
# definition, so the two sets of NADs differ: `fd_scale=100, center=True` reproduces the
# published figures, the default follows the paper's definition (docs/conventions.md).

# %%
published = nads(lenet, shape, num_networks=128, key=jax.random.key(0), num=16,
                 output="difference", fd_scale=100.0, center=True)  # fmt: skip
fig, _ = plot_nads(published.eigenvectors, published.eigenvalues)
cos = np.abs(np.sum(np.asarray(published.eigenvectors).reshape(16, -1)
                    * np.asarray(res.eigenvectors).reshape(16, -1), axis=1))  # fmt: skip
print("|cos| between the two estimators' NADs, by index:", np.round(cos, 2))

# %% [markdown]
# ## Fourier accuracy map on a few frequencies
# Train the architecture on `D(v)` for 2-D Fourier directions `v` and record the test
# accuracy (small sizes here; `scripts/nads.py` runs the full map).

# %%
freqs = [(0, 0), (0, 3), (2, 2), (4, 4), (1, 6), (7, 7)]
maps = {}
for name in ("lenet", "mlp"):
    cfg = {} if name == "lenet" else {"widths": []}
    apply, _ = pure_apply(create_model(name, shape, 2, key=jax.random.key(0), **cfg))

    def init(k, name=name, cfg=cfg):
        return pure_apply(create_model(name, shape, 2, key=k, **cfg))[1]

    maps[name] = fourier_accuracy_map(
        init,
        apply,
        shape,
        key=jax.random.key(1),
        frequencies=freqs,
        n_train=500,
        n_test=200,
        steps=150,
    )
    print(name, dict(zip(freqs, np.round(np.asarray(maps[name].accuracy), 2), strict=True)))

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, name in zip(axes, maps, strict=True):
    plot_accuracy_map(maps[name].grid, ax=ax, title=f"{name} (logistic)" if name == "mlp" else name)
assert np.mean(np.asarray(maps["mlp"].accuracy)) > 0.9  # logistic regression: no preference
