"""The measurement stages of the report: arrays in, ``(arrays, summary)`` out.

Each stage runs one analysis on every model of the report and returns

* ``arrays``: a flat dict of NumPy arrays, keys ``"<model>__<name>"`` (saved as ``.npz``);
* ``summary``: a JSON-ready dict of the numbers shown in the report, with explicit counts of
  unconverged / excluded examples.

Stages do not plot (``_figures`` draws from the arrays) and do not write files (the driver
saves each stage atomically, so an interrupted report resumes). Methods and references:

* margins: DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), L2 and Linf;
* DCT-subspace margins: "Hold me tight! Influence of discriminative features on deep network
  boundaries" (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, NeurIPS 2020);
* random-subspace margins vs ``sqrt(D/m)``: Fawzi, Moosavi-Dezfooli, Frossard, "Robustness of
  classifiers: from adversarial to random noise", NeurIPS 2016;
* principal curvatures, shared directions, slices: Fawzi, Moosavi-Dezfooli, Frossard, Soatto,
  "Empirical study of the topology and geometry of deep networks", CVPR 2018;
* input-loss Hessian spectra: Moosavi-Dezfooli, Fawzi, Uesato, Frossard, "Robustness via
  curvature regularization, and vice versa" (CURE), CVPR 2019;
* NADs: Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural anisotropy directions",
  NeurIPS 2020;
* boundary thickness: Yang, Khanna, Yu, Gholami, Keutzer, Gonzalez, Ramchandran, Mahoney,
  "Boundary thickness and robustness in learning models", NeurIPS 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["REQUIRES", "STAGES", "Context", "ReportModel"]


class ReportModel(NamedTuple):
    """name : short id (``standard``, ``pgd``, or the checkpoint's folder name); label : the
    legend text; logits_fn : ``(N, *s) -> (N, K)``; metadata : the checkpoint metadata plus
    ``checkpoint_path`` and ``checkpoint_sha256``; smooth : whether the network is C²
    (smooth activation, no max pooling), required for meaningful curvature."""

    name: str
    label: str
    logits_fn: Callable
    metadata: dict
    smooth: bool


class Context(NamedTuple):
    """Everything a stage reads: the models, the held-out examples ``x`` ``(N, *s)`` with
    labels ``y``, the size settings, the stage's PRNG ``key``, results of earlier stages
    (``previous[stage] = (arrays, summary)``) and a ``progress(desc, total)`` bar factory."""

    models: list
    x: jax.Array
    y: jax.Array
    sizes: dict
    key: jax.Array
    previous: dict
    progress: Callable


def _stats(values, valid=None) -> dict:
    """Median, quartiles, mean over the valid finite entries, and the counts."""
    v = np.asarray(values, np.float64).ravel()
    ok = np.isfinite(v) if valid is None else (np.asarray(valid, bool).ravel() & np.isfinite(v))
    out = {"n_valid": int(ok.sum()), "n_excluded": int((~ok).sum())}
    if ok.any():
        q1, med, q3 = np.percentile(v[ok], [25, 50, 75])
        out.update(median=float(med), q25=float(q1), q75=float(q3), mean=float(v[ok].mean()))
    return out


def _pred(logits_fn, x, chunk=512):
    return jnp.concatenate(
        [jnp.argmax(logits_fn(x[s : s + chunk]), -1) for s in range(0, x.shape[0], chunk)]
    )


# --------------------------------------------------------------------------- stages


def stage_accuracy(ctx: Context):
    """Clean accuracy on the analysed examples and PGD (Linf) accuracy at ``sizes['eps']``."""
    from geomrobust.search import robust_accuracy

    arrays, summary = {}, {}
    eps = ctx.sizes["eps"]
    for m in ctx.models:
        pred = np.asarray(_pred(m.logits_fn, ctx.x))
        ra = robust_accuracy(
            m.logits_fn,
            ctx.x,
            ctx.y,
            [eps],
            key=ctx.key,
            attack="pgd",
            norm=jnp.inf,
            steps=ctx.sizes["pgd_steps_eval"],
            bounds=(0.0, 1.0),
        )
        arrays[f"{m.name}__pred"] = pred
        summary[m.name] = {
            "clean_accuracy": float(np.mean(pred == np.asarray(ctx.y))),
            "pgd_accuracy": float(np.asarray(ra.accuracy)[0]),
            "pgd_eps_linf": eps,
            "test_accuracy_full_split": m.metadata.get("accuracy"),
            "method": m.metadata.get("method", "unknown"),
        }
    return arrays, summary


def stage_margins(ctx: Context):
    """L2 and Linf DeepFool margins around the predicted labels; ``ρ = mean ||r|| / ||x||``."""
    from geomrobust.measures import normalized_robustness
    from geomrobust.search import deepfool_dataset

    arrays, summary = {}, {}
    for m in ctx.models:
        summary[m.name] = {}
        for tag, norm in (("l2", 2), ("linf", jnp.inf)):
            with ctx.progress(f"deepfool {tag} {m.name}", ctx.x.shape[0]) as bar:
                r = deepfool_dataset(m.logits_fn, ctx.x, None, norm=norm, progress=bar.update)
            margin, conv = np.asarray(r.margin), np.asarray(r.converged)
            arrays[f"{m.name}__{tag}_margin"] = margin
            arrays[f"{m.name}__{tag}_converged"] = conv
            if tag == "l2":  # reused by the random, curvature and thickness stages
                arrays[f"{m.name}__l2_perturbation"] = np.asarray(r.perturbation)
            st = _stats(margin, conv)
            st["n_unconverged"] = int((~conv).sum())
            st["rho"] = float(
                normalized_robustness(
                    r.margin, ctx.x, r.converged, norm=2 if tag == "l2" else jnp.inf
                )
            )
            summary[m.name][tag] = st
    return arrays, summary


def stage_dct(ctx: Context):
    """L2 DeepFool margins inside diagonal K×K DCT blocks (low to high frequency)."""
    from geomrobust.measures import dct_subspaces, subspace_margins, summarize_bands

    block, stride = ctx.sizes["dct_block"], ctx.sizes["dct_stride"]
    bases = dct_subspaces(ctx.x.shape[1:], block, stride, dtype=ctx.x.dtype)
    arrays, summary = {}, {"block": block, "stride": stride, "n_bands": len(bases)}
    for m in ctx.models:
        with ctx.progress(f"dct subspaces {m.name}", len(bases)) as bar:
            r = subspace_margins(m.logits_fn, ctx.x, None, bases, progress=bar.update)
        margin, conv = np.asarray(r.margin), np.asarray(r.converged)
        b = summarize_bands(margin, conv)
        arrays[f"{m.name}__margin"] = margin
        arrays[f"{m.name}__converged"] = conv
        summary[m.name] = {
            "median": [_num(v) for v in b.median],
            "q25": [_num(v) for v in b.q25],
            "q75": [_num(v) for v in b.q75],
            "n_converged": b.n_converged.tolist(),
            "n_unconverged": b.n_unconverged.tolist(),
        }
    return arrays, summary


def stage_random(ctx: Context):
    """Margins in random m-dimensional subspaces over the minimal margin, vs ``sqrt(D/m)``."""
    from geomrobust.measures import random_subspace_margins

    d = math.prod(ctx.x.shape[1:])
    dims = [m for m in ctx.sizes["random_dims"] if 1 <= m <= d]
    arrays, summary = {"dims": np.asarray(dims)}, {"dims": dims, "D": d}
    summary["predicted_ratio"] = [math.sqrt(d / m) for m in dims]
    for m in ctx.models:
        med, n_valid, n_bad = [], [], []
        with ctx.progress(f"random subspaces {m.name}", len(dims)) as bar:
            for i, dim in enumerate(dims):
                r = random_subspace_margins(
                    m.logits_fn,
                    ctx.x,
                    None,
                    dim=dim,
                    key=jax.random.fold_in(ctx.key, i),
                    num_draws=ctx.sizes["random_draws"],
                )
                ratio = np.asarray(r.ratio)
                arrays[f"{m.name}__ratio_m{dim}"] = ratio
                ok = np.isfinite(ratio)
                med.append(float(np.median(ratio[ok])) if ok.any() else None)
                n_valid.append(int(ok.sum()))
                n_bad.append(int((~ok).sum()))
                bar.update(1)
        summary[m.name] = {"median_ratio": med, "n_valid": n_valid, "n_unconverged": n_bad}
    return arrays, summary


def stage_curvature(ctx: Context):
    """Boundary points (DeepFool + bisection), principal curvatures, shared directions and
    fooling rates of random perturbations in the shared subspace vs isotropic ones."""
    from geomrobust.measures import (
        principal_curvatures,
        shared_directions,
        subspace_fooling_rate,
    )
    from geomrobust.search import refine_boundary

    n = min(ctx.sizes["curv_n"], ctx.x.shape[0])
    x = ctx.x[:n]
    shape = x.shape[1:]
    num = min(ctx.sizes["curv_num"], math.prod(shape) - 1)
    arrays, summary = {}, {"num": num, "n_points": n}
    margins, _ = ctx.previous["margins"]
    for m in ctx.models:
        pred = _pred(m.logits_fn, x)
        pert = jnp.asarray(margins[f"{m.name}__l2_perturbation"][:n])
        df_margin = margins[f"{m.name}__l2_margin"][:n]
        df_ok = margins[f"{m.name}__l2_converged"][:n] & (df_margin > 0)
        bp = refine_boundary(m.logits_fn, x, x + pert, pred)
        found = np.asarray(bp.converged) & df_ok
        idx = np.nonzero(found)[0]
        s = {
            "n_boundary_points": int(idx.size),
            "n_no_boundary_point": int(n - idx.size),
            "smooth_network": m.smooth,
        }
        summary[m.name] = s
        if idx.size == 0:
            continue
        with ctx.progress(f"curvature {m.name}", idx.size) as bar:
            c = principal_curvatures(
                m.logits_fn,
                bp.z[idx],
                bp.y[idx],
                bp.k[idx],
                num=num,
                key=ctx.key,
                progress=bar.update,
            )
        values, conv = np.asarray(c.values), np.asarray(c.converged)
        normals = shared_directions(c.normal)
        tops = shared_directions(c.directions[:, :1], input_shape=shape)
        arrays.update(
            {
                f"{m.name}__index": idx,
                f"{m.name}__values": values,
                f"{m.name}__converged": conv,
                f"{m.name}__z": np.asarray(bp.z[idx]),
                f"{m.name}__y": np.asarray(bp.y[idx]),
                f"{m.name}__k": np.asarray(bp.k[idx]),
                f"{m.name}__normal": np.asarray(c.normal),
                f"{m.name}__top_direction": np.asarray(c.directions[:, 0]),
                f"{m.name}__margin": df_margin[idx],
                f"{m.name}__normals_sv": np.asarray(normals.normalized),
                f"{m.name}__top_sv": np.asarray(tops.normalized),
            }
        )
        good = values[conv]
        s.update(
            n_converged=int(conv.sum()),
            n_unconverged=int((~conv).sum()),
            median_abs_curvature_by_rank=np.median(np.abs(good), 0).tolist() if len(good) else None,
            median_curvature_by_rank=np.median(good, 0).tolist() if len(good) else None,
            normals_singular_values=np.asarray(normals.normalized[:10]).tolist(),
            top_directions_singular_values=np.asarray(tops.normalized[:10]).tolist(),
        )
        dim = min(ctx.sizes["shared_dim"], tops.basis.shape[1])
        radius = float(np.median(df_margin[idx]))
        fr = subspace_fooling_rate(
            m.logits_fn,
            x[idx],
            tops.basis[:, :dim].astype(x.dtype),
            radius=radius,
            num_samples=ctx.sizes["fooling_samples"],
            key=jax.random.fold_in(ctx.key, 1),
        )
        s.update(
            fooling_radius=radius,
            fooling_subspace_dim=int(dim),
            fooling_rate_shared=float(fr.subspace),
            fooling_rate_isotropic=float(fr.isotropic),
        )
    return arrays, summary


def stage_loss_hessian(ctx: Context):
    """Largest eigenvalues of the input-space Hessian of the cross-entropy at data points."""
    from geomrobust.measures import loss_hessian_eigs

    n = min(ctx.sizes["hess_n"], ctx.x.shape[0])
    num = min(ctx.sizes["hess_num"], math.prod(ctx.x.shape[1:]))
    arrays, summary = {}, {"num": num, "n_points": n}
    for m in ctx.models:
        with ctx.progress(f"loss hessian {m.name}", n) as bar:
            r = loss_hessian_eigs(
                m.logits_fn, ctx.x[:n], ctx.y[:n], num=num, key=ctx.key, progress=bar.update
            )
        values, conv = np.asarray(r.values), np.asarray(r.converged)
        arrays[f"{m.name}__values"] = values
        arrays[f"{m.name}__converged"] = conv
        good = values[conv]
        summary[m.name] = {
            "n_converged": int(conv.sum()),
            "n_unconverged": int((~conv).sum()),
            "median_by_rank": np.median(good, 0).tolist() if len(good) else None,
            "median_top_eigenvalue": float(np.median(good[:, 0])) if len(good) else None,
        }
    return arrays, summary


def stage_slices(ctx: Context):
    """Three planes per model at the first boundary point of the curvature stage: (normal, top
    principal direction), (normal, random tangent), and through x: (adversarial, random)."""
    from geomrobust.measures import boundary_slice, random_orthogonal

    curv_arrays, _ = ctx.previous["curvature"]
    res = ctx.sizes["slice_res"]
    arrays, summary = {}, {"resolution": res}
    for m in ctx.models:
        if f"{m.name}__z" not in curv_arrays:
            summary[m.name] = {"skipped": "no boundary point"}
            continue
        z = jnp.asarray(curv_arrays[f"{m.name}__z"][0])
        i = int(curv_arrays[f"{m.name}__index"][0])
        x = ctx.x[i]
        cls = (int(curv_arrays[f"{m.name}__y"][0]), int(curv_arrays[f"{m.name}__k"][0]))
        n = jnp.asarray(curv_arrays[f"{m.name}__normal"][0], x.dtype)
        top = jnp.asarray(curv_arrays[f"{m.name}__top_direction"][0], x.dtype)
        margin = float(curv_arrays[f"{m.name}__margin"][0])
        e = ctx.sizes["slice_extent"] * max(margin, 1e-3)
        rnd_t = random_orthogonal(jax.random.fold_in(ctx.key, 0), n)
        rnd_x = random_orthogonal(jax.random.fold_in(ctx.key, 1), n)
        planes = {"curved": (z, top, n), "flat": (z, rnd_t, n), "data": (x, n, rnd_x)}
        summary[m.name] = {"example": i, "classes": list(cls), "extent": e, "margin": margin}
        for tag, (center, u, v) in planes.items():
            sl = boundary_slice(
                m.logits_fn, center, u, v, 2 * e if tag == "data" else e, res, classes=cls
            )
            arrays[f"{m.name}__{tag}_labels"] = np.asarray(sl.labels)
            arrays[f"{m.name}__{tag}_contour"] = np.asarray(sl.contour)
            arrays[f"{m.name}__{tag}_a"] = np.asarray(sl.a)
            arrays[f"{m.name}__{tag}_b"] = np.asarray(sl.b)
            summary[m.name][f"{tag}_boundary_points"] = int(np.asarray(sl.contour).shape[0])
    return arrays, summary


def stage_nads(ctx: Context):
    """NADs of the (first) model's architecture: eigenvectors of ``E_θ[∇f ∇fᵀ]`` at ``x_0``."""
    from geomrobust.measures import fourier_magnitude, nads
    from geomrobust.models import as_logits_fn, create_model

    meta = ctx.models[0].metadata
    config = dict(meta["model_config"])
    name = config.pop("name")
    shape = tuple(config.pop("input_shape"))
    config.pop("num_classes", None)

    def init_fn(k):
        return as_logits_fn(create_model(name, shape, 2, key=k, **config))

    num = min(ctx.sizes["nads_num"], math.prod(shape), ctx.sizes["nads_networks"])
    with ctx.progress("nads", 1) as bar:
        r = nads(
            init_fn,
            shape,
            num_networks=ctx.sizes["nads_networks"],
            key=ctx.key,
            num=num,
            output="difference",
            dtype=ctx.x.dtype,
        )
        bar.update(1)
    vecs = np.asarray(r.eigenvectors)
    arrays = {
        "eigenvalues": np.asarray(r.eigenvalues),
        "eigenvectors": vecs,
        "fourier_magnitude": np.asarray(fourier_magnitude(vecs)),
    }
    ev = arrays["eigenvalues"]
    summary = {
        "architecture": name,
        "model_config": config,
        "input_shape": list(shape),
        "num_networks": ctx.sizes["nads_networks"],
        "eigenvalues": ev.tolist(),
        "eigenvalue_ratio_first_last": float(ev[0] / ev[-1]) if ev[-1] > 0 else None,
    }
    return arrays, summary


def stage_thickness(ctx: Context):
    """Boundary thickness (alpha = 0, beta = 0.75) on the segment from x to its L2 DeepFool
    point (from the margins stage); examples whose DeepFool did not converge are excluded."""
    from geomrobust.measures import boundary_thickness

    margins, _ = ctx.previous["margins"]
    arrays, summary = {}, {"alpha": 0.0, "beta": 0.75}
    for m in ctx.models:
        pert = jnp.asarray(margins[f"{m.name}__l2_perturbation"])
        with ctx.progress(f"thickness {m.name}", 1) as bar:
            r = boundary_thickness(m.logits_fn, ctx.x, ctx.x + pert)
            bar.update(1)
        t = np.asarray(r.thickness)
        valid = np.asarray(r.valid) & margins[f"{m.name}__l2_converged"]
        arrays[f"{m.name}__thickness"] = t
        arrays[f"{m.name}__valid"] = valid
        arrays[f"{m.name}__distance"] = np.asarray(r.distance)
        summary[m.name] = _stats(t, valid)
    return arrays, summary


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


#: ``name -> (title, function)`` in execution order.
STAGES: dict[str, tuple[str, Any]] = {
    "accuracy": ("accuracy and PGD robustness", stage_accuracy),
    "margins": ("DeepFool margins (L2, Linf)", stage_margins),
    "dct": ("DCT-subspace margins", stage_dct),
    "random": ("random-subspace margins", stage_random),
    "curvature": ("principal curvatures and shared directions", stage_curvature),
    "loss_hessian": ("input-loss Hessian spectra", stage_loss_hessian),
    "slices": ("2-D boundary slices", stage_slices),
    "nads": ("neural anisotropy directions", stage_nads),
    "thickness": ("boundary thickness", stage_thickness),
}

#: Stages whose results a stage reads (run first, or reused from disk).
REQUIRES: dict[str, tuple[str, ...]] = {
    "curvature": ("margins",),
    "slices": ("margins", "curvature"),
    "thickness": ("margins",),
}
