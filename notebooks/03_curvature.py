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
# # 03 Curvature of the decision boundary
#
# At a boundary point `z` between classes `y` and `k` (`F_k = f_k - f_y = 0`), the principal
# curvatures are the eigenvalues of the shape operator `P H P / ||∇F_k||` on the tangent space
# (Fawzi et al., CVPR 2018). They are computed matrix-free from Hessian-vector products.
# Findings to look for: the boundary is flat in most directions and curved in a few, and the
# curved directions are shared across examples, which is what universal perturbations exploit.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from geomrobust.analyses import boundary_points
from geomrobust.data import load_dataset
from geomrobust.engine import enable_compilation_cache
from geomrobust.measures import (
    boundary_slice,
    principal_curvatures,
    random_tangents,
    shared_directions,
)
from geomrobust.models import as_classifier
from geomrobust.plot import plot_curvature_spectrum, plot_singular_values, plot_slice
from geomrobust.report import SIZES, cached_model, model_settings
from geomrobust.search import universal_perturbation
from geomrobust.train import load_checkpoint

enable_compilation_cache()  # compiled programs kept on disk: ~/.cache/geomrobust/xla

settings = model_settings(
    "standard", SIZES["quick"], dataset="digits", data_dir=None, resize=None, key=0
)
logits_fn = as_classifier(load_checkpoint(cached_model("standard", settings)[0]).model)
x = jnp.asarray(load_dataset("digits", "test").images[:16])

# %% [markdown]
# ## Boundary points: DeepFool, then bisection onto F_k = 0
# `boundary_points` is the pipeline of `geomrobust curvature`: DeepFool around the predicted
# labels, bisection of the segment onto the boundary, and a validity mask (both converged).

# %%
bp = boundary_points(logits_fn, x)
ok = np.asarray(bp.valid)
print("boundary points found:", ok.sum(), "/", len(x))
z, y, k = bp.z[ok], bp.y[ok], bp.k[ok]

# %%
curv = principal_curvatures(logits_fn, z, y, k, num=10, key=jax.random.key(0))
print("converged:", np.asarray(curv.converged).sum(), "/", len(z))
fig, ax = plot_curvature_spectrum(np.asarray(curv.values)[np.asarray(curv.converged)])

# %% [markdown]
# ## Slices: along the most curved direction vs a random tangent direction

# %%
i = 0
n = curv.normal[i]
t_rand = random_tangents(n[None], 1, key=jax.random.key(1))[0, 0]
e = 3 * float(bp.margin[ok][i])
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, u, name in [
    (axes[0], curv.directions[i, 0], "top principal direction"),
    (axes[1], t_rand, "random tangent direction"),
]:
    sl = boundary_slice(logits_fn, z[i], u, n, e, 41, classes=(int(y[i]), int(k[i])))
    plot_slice(sl.labels, sl.a, sl.b, sl.contour, ax=ax, xlabel=name, ylabel="normal")
print("top curvatures at this point:", np.round(np.asarray(curv.values[i, :3]), 3))

# %% [markdown]
# ## Shared directions and universal perturbations
# The singular values of the stacked top curved directions decay fast when they are shared.

# %%
tops = shared_directions(curv.directions[:, :1], input_shape=x.shape[1:])
normals = shared_directions(curv.normal)
fig, ax = plot_singular_values(tops.normalized, label="top curved directions")
plot_singular_values(normals.normalized, ax=ax, label="normals")

# %%
uap = universal_perturbation(logits_fn, x, key=jax.random.key(2), eps=0.3, norm=jnp.inf, steps=3)
print("universal perturbation fooling rate:", float(uap.fooling_rate))
v = np.asarray(uap.perturbation).ravel()
v = v / np.linalg.norm(v)
overlap = np.linalg.norm(np.asarray(tops.basis[:, :4]).T @ v)
print("norm of its projection on the 4 leading shared curved directions:", round(overlap, 3))
print("(a random unit vector would give about", round(np.sqrt(4 / v.size), 3), ")")
