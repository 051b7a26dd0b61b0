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
# # 06 Beyond security: frequency, noise, corruptions and interpretability
#
# Adversarial robustness as a lens on what a model uses. On the standard and the PGD-trained
# LeNets of the quick report (8×8 digits, cached after the first run) we measure
#
# * the **Fourier heat map** (Yin et al., NeurIPS 2019): error under one Fourier basis image
#   per frequency, and the spectrum of DeepFool perturbations;
# * **error in Gaussian noise** against the half-space prediction `Φ(-d/σ)` from each
#   example's DeepFool margin `d` (Ford et al., ICML 2019), and **common corruptions**;
# * **gradient-image alignment** (Etmann et al., ICML 2019) and images **synthesised** by large
#   targeted attacks (Tsipras et al. 2019).
#
# For each, the literature's claim is printed next to what this run shows: on small digits
# models the claims need not hold, and the notebook says so when they do not.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from geomrobust.data import CORRUPTIONS, corrupt, load_dataset
from geomrobust.engine import enable_compilation_cache
from geomrobust.measures import (
    class_synthesis,
    fourier_heat_map,
    frequency_radius,
    gaussian_noise_errors,
    gradient_alignment,
    noise_vs_margin,
    perturbation_spectrum,
)
from geomrobust.models import as_classifier
from geomrobust.report import SIZES, cached_model, model_settings
from geomrobust.search import deepfool_dataset
from geomrobust.train import load_checkpoint

enable_compilation_cache()  # compiled programs kept on disk: ~/.cache/geomrobust/xla

sizes = SIZES["quick"]
models, init = {}, None
for method in ("standard", "pgd"):
    s = model_settings(method, sizes, dataset="digits", data_dir=None, resize=None, key=0)
    path, _ = cached_model(method, s, init=init)
    init = path
    models[method] = as_classifier(load_checkpoint(path).model)
test = load_dataset("digits", "test")
x, y = jnp.asarray(test.images[:64]), jnp.asarray(test.labels[:64])


def verdict(claim, standard, robust, robust_higher):
    agrees = robust > standard if robust_higher else robust < standard
    word = "agrees" if agrees else "DISAGREES"
    print(f"{claim}: standard {standard:.3g}, PGD-AT {robust:.3g} -> {word} with the literature")


# %% [markdown]
# ## Fourier heat map and the spectrum of adversarial perturbations

# %%
fig, axes = plt.subplots(2, 2, figsize=(8, 7))
high = {}
for col, (m, f) in enumerate(models.items()):
    hm = fourier_heat_map(f, x, y, eps=1.0, key=jax.random.key(0), bounds=(0.0, 1.0))
    df = deepfool_dataset(f, x)
    spec = perturbation_spectrum(df.perturbation[df.converged])
    axes[0, col].imshow(hm.grid, vmin=0, vmax=1)
    axes[0, col].set_title(f"{m}: error under Fourier noise (mean {float(hm.error.mean()):.2f})")
    axes[1, col].imshow(np.log10(np.asarray(spec) + 1e-6), cmap="magma")
    axes[1, col].set_title(f"{m}: |DFT| of DeepFool perturbations")
    r = frequency_radius(hm.frequencies, x.shape[1:3])
    high[m] = float(np.asarray(hm.error)[r > np.median(r)].mean())
verdict("error under high-frequency Fourier noise (lower for robust models)",
        high["standard"], high["pgd"], False)  # fmt: skip

# %% [markdown]
# ## Error in Gaussian noise against the margin, and common corruptions

# %%
sigmas = [0.05, 0.1, 0.2, 0.4, 0.8]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
at_half = {}
for i, (m, f) in enumerate(models.items()):
    res = gaussian_noise_errors(f, x, y, sigmas, key=jax.random.key(1), samples=32)
    df = deepfool_dataset(f, x)
    cmp = noise_vs_margin(res, np.where(df.converged, df.margin, np.nan))
    axes[0].plot(sigmas, res.error, "o-", color=f"C{i}", label=f"{m}: measured")
    axes[0].plot(sigmas, np.nanmean(cmp.predicted, 0), "--", color=f"C{i}", label=f"{m}: Φ(-d/σ)")
    acc = [np.mean([float(jnp.mean(jnp.argmax(f(corrupt(x, c, s, key=jax.random.key(s))), -1) == y))
                    for s in range(1, 6)]) for c in CORRUPTIONS]  # fmt: skip
    axes[1].bar(np.arange(len(CORRUPTIONS)) + 0.4 * i, acc, 0.4, label=m)
    at_half[m] = float(res.error[-1])
    print(m, "median measured / half-space ratio per σ:", np.round(np.asarray(cmp.median_ratio), 2))
axes[0].set(xscale="log", xlabel="σ", ylabel="error in noise")
axes[0].legend(fontsize=7)
axes[1].set_xticks(np.arange(len(CORRUPTIONS)) + 0.2, CORRUPTIONS, rotation=30, fontsize=7)
axes[1].set(ylabel="accuracy (mean of severities)", ylim=(0, 1))
axes[1].legend()
verdict("error in noise at σ = 0.8 (lower for robust models, Ford et al.)",
        at_half["standard"], at_half["pgd"], False)  # fmt: skip

# %% [markdown]
# ## Alignment and class synthesis

# %%
align = {m: gradient_alignment(f, x, y) for m, f in models.items()}
med = {m: float(np.nanmedian(np.asarray(a.alignment))) for m, a in align.items()}
verdict("median gradient-image alignment (higher for robust models, Etmann et al.)",
        med["standard"], med["pgd"], True)  # fmt: skip
fig, axes = plt.subplots(2, 10, figsize=(12, 2.8))
for row, (m, f) in zip(axes, models.items(), strict=True):
    syn = class_synthesis(f, x[:1], eps=2.0, steps=20, bounds=(0.0, 1.0))
    for c, ax in enumerate(row):
        ax.imshow(np.asarray(syn.images[0, c, ..., 0]), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{m[:3]} → {c}", fontsize=7)
