"""Engine regression: the outputs of every entry point for one fixed model and fixed inputs.

``python -m benchmarks.regression save DIR`` computes them and writes ``DIR/outputs.npz``;
``python -m benchmarks.regression compare DIR`` recomputes them and reports, per array,
whether it is bit-identical to the saved one (else the largest absolute and relative
difference, and how many entries differ). Run ``save`` with one version of the package and
``compare`` with another, on the same machine: a refactor of the execution engine must leave
every number unchanged, or explain each difference.

The model is a softplus LeNet with average pooling (smooth, so curvatures are defined) on the
8x8 digits, trained for a few epochs by this script with plain optax (independent of the
package's training code); its parameters are saved next to the outputs, so both runs use
the same weights. The classifier is passed as a plain function ``x -> apply(params, x)``,
which every version of the package accepts.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import geomrobust as gr
from geomrobust.models import create_model


def _model(folder: Path):
    from flax import nnx

    model = create_model(
        "lenet", (8, 8, 1), 10, key=jax.random.key(0), activation="softplus", pool="avg"
    )
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(p, x):
        return nnx.merge(graphdef, p)(x)

    path = folder / "params.npz"
    leaves, treedef = jax.tree.flatten(params)
    if path.exists():
        stored = np.load(path)
        leaves = [jnp.asarray(stored[f"p{i}"]) for i in range(len(leaves))]
        return apply, jax.tree.unflatten(treedef, leaves)
    train = gr.load_dataset("digits", "train")
    x, y = jnp.asarray(train.images), jnp.asarray(train.labels)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply(p, xb), yb).mean()

        g = jax.grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state

    key = jax.random.key(1)
    for epoch in range(15):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), x.shape[0]))
        for s in range(0, x.shape[0] - 63, 64):
            idx = perm[s : s + 64]
            params, state = step(params, state, x[idx], y[idx])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"p{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(params))})
    return apply, params


def outputs(folder: Path) -> dict[str, np.ndarray]:
    apply, params = _model(folder)

    def f(x):
        return apply(params, x)

    test = gr.load_dataset("digits", "test")
    x = jnp.asarray(test.images[:40])
    y = jnp.asarray(test.labels[:40])
    pred = jnp.argmax(f(x), -1)
    key = jax.random.key(7)
    out: dict[str, np.ndarray] = {}

    def put(prefix, res):
        fields = dict(res._asdict())
        if "status" in fields and "values" in fields and "converged" in fields:
            # the issue-23 results: per-example status instead of the flags of one release
            # ago; the same quantities under their old names (and no new key)
            status = np.asarray(fields.pop("status"))
            fields["value_converged"] = np.isfinite(np.asarray(fields["values"]))
            if type(res).__name__ == "Curvatures":
                fields["piecewise_linear"] = status == gr.Status.PIECEWISE_LINEAR
                fields["on_boundary"] = status != gr.Status.OFF_BOUNDARY
        for name, v in fields.items():
            if isinstance(v, jax.Array | np.ndarray):
                out[f"{prefix}.{name}"] = np.asarray(v)

    def kw(fn, new, old, value):
        """``{new: value}`` where ``fn`` takes ``new`` (this version), else ``{old: value}``."""
        return {new if new in inspect.signature(fn).parameters else old: value}

    put("accuracy", type("A", (), {"_asdict": lambda self: {"pred": pred}})())
    put("deepfool_l2", gr.deepfool(f, x, pred))
    put("deepfool_linf_box", gr.deepfool(f, x, None, norm=jnp.inf, bounds=(0.0, 1.0)))
    put("deepfool_top3", gr.deepfool(f, x, pred, candidates=3))
    put("deepfool_dataset", gr.deepfool_dataset(f, x, pred, chunk_size=16, slots=8))
    put(
        "deepfool_dataset_box",
        gr.deepfool_dataset(f, x, None, bounds=(0.0, 1.0), chunk_size=16, slots=8),
    )
    bands = gr.dct_subspaces((8, 8, 1), 4, 2, dtype=np.float32)
    put("subspace", gr.subspace_margins(f, x, pred, bands, chunk_size=16, slots=8))
    put("random_subspace", gr.random_subspace_margins(f, x, None, dim=4, key=key, num_draws=2))
    d = jax.random.normal(jax.random.key(3), (5, 8, 8, 1))
    d = d / jnp.linalg.norm(d.reshape(5, -1), axis=1).reshape(5, 1, 1, 1)
    put("margin_along", gr.margin_along(f, x, d, max_dist=6.0, chunk_size=16))
    df = gr.deepfool_dataset(f, x, pred)
    bp = gr.refine_boundary(f, x, x + df.perturbation, pred)
    put("refine", bp)
    # curvature inputs that do not depend on the bisection (whose program may change): points
    # just before DeepFool's adversarial point, between the predicted and the adversarial class
    ok = np.nonzero(np.asarray(df.converged & (df.margin > 0)))[0][:16]
    z = (x + 0.999 * df.perturbation)[ok]
    yb, kb = pred[ok], df.adv_label[ok]
    put("curv_dense", gr.principal_curvatures(f, z, yb, kb, num=5, key=key, method="dense"))
    put(
        "curv_lanczos",
        gr.principal_curvatures(f, z, yb, kb, num=5, key=key, method="lanczos", chunk_size=8),
    )
    u = jax.random.normal(jax.random.key(4), z.shape, z.dtype)
    # z is 0.999 of the way to DeepFool's point, near but not on the boundary: measure the
    # level set through z (the boundary check of the entry point would refuse it)
    nc = gr.normal_curvature(f, z, yb, kb, u, boundary_tol=float("inf"))
    out["normal_curvature"] = np.asarray(getattr(nc, "values", nc))
    put("loss_eigs", gr.loss_hessian_eigs(f, x[:16], y[:16], num=4, key=key, method="lanczos"))
    put("loss_eigs_dense", gr.loss_hessian_eigs(f, x[:16], y[:16], num=4, key=key))
    put("fgsm", gr.fgsm(f, x, y, eps=0.1, bounds=(0.0, 1.0)))
    put("pgd", gr.pgd(f, x, y, key=key, eps=0.1, steps=7, bounds=(0.0, 1.0)))
    put("pgd_l2", gr.pgd(f, x, y, key=key, eps=0.5, norm=2, steps=5))
    ra = gr.robust_accuracy(f, x, y, [0.0, 0.05, 0.1], key=key, steps=5, chunk_size=16)
    out["robust_accuracy.accuracy"] = np.asarray(ra.accuracy)
    out["robust_accuracy.success"] = np.asarray(ra.success)
    uap = gr.universal_perturbation(f, x[:20], key=key, eps=1.0, norm=2, steps=2)
    out["uap.v"] = np.asarray(uap.perturbation)
    put("thickness", gr.boundary_thickness(f, x, x + df.perturbation, pred, chunk_size=16))
    sig = gr.margin_signature(f, x, y)
    if isinstance(sig, dict):  # one record per layer (before the one-result-type change)
        for name, s in sig.items():
            out[f"signature.{name}"] = np.asarray(s.stats)
            out[f"signature.{name}.margins"] = np.asarray(s.margins)
    else:  # one result with a leading layer axis
        for i, name in enumerate(sig.layers):
            out[f"signature.{name}"] = np.asarray(sig.stats[i])
            out[f"signature.{name}.margins"] = np.asarray(sig.margins[i])
    put("sparsefool", gr.sparsefool(f, x[:10], pred[:10], bounds=(0.0, 1.0)))
    sl = gr.boundary_slice(f, z[0], u[1], u[0], 1.0, 21)
    out["slice.labels"] = np.asarray(sl.labels)
    out["slice.logit_diff"] = np.asarray(sl.logit_diff)
    lin = gr.measures.local_linearity(f, x[:16], y[:16], eps=0.1, key=key)
    put("local_linearity", lin)

    def init_fn(k):
        from flax import nnx

        m = create_model("lenet", (8, 8, 1), 2, key=k, activation="softplus", pool="avg")
        g, p = nnx.split(m, nnx.Param)
        return lambda xx: nnx.merge(g, p)(xx)

    put(
        "nads",
        gr.nads(
            init_fn, (8, 8, 1), num_networks=12, key=key, **kw(gr.nads, "chunk_size", "batch", 5)
        ),
    )

    # the same weights as an NNX module (the adapter's weights: baked in before the engine
    # change, traced arguments after it)
    from flax import nnx

    model = create_model(
        "lenet", (8, 8, 1), 10, key=jax.random.key(0), activation="softplus", pool="avg"
    )
    nnx.update(model, params)
    g = gr.as_classifier(model)
    put("nnx_deepfool_dataset", gr.deepfool_dataset(g, x, pred, chunk_size=16, slots=8))
    put("nnx_curv_lanczos", gr.principal_curvatures(g, z, yb, kb, num=5, key=key, method="lanczos"))
    put("nnx_pgd", gr.pgd(g, x, y, key=key, eps=0.1, steps=7, bounds=(0.0, 1.0)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("save", "compare"))
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", False)
    new = outputs(args.folder)
    path = args.folder / "outputs.npz"
    if args.mode == "save":
        np.savez(path, **new)
        print(f"saved {len(new)} arrays to {path}")
        return 0
    old = dict(np.load(path))
    bad = 0
    for name in sorted(set(old) | set(new)):
        if name not in old:  # a field the new version adds (listed, not a difference)
            print(f"{name}: new field")
            continue
        if name not in new:
            print(f"{name}: only in saved")
            bad += 1
            continue
        a, b = old[name], new[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"{name}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}")
            bad += 1
            continue
        same = np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" else np.array_equal(a, b)
        if same:
            print(f"{name}: identical")
            continue
        bad += 1
        if a.dtype.kind in "fc":
            fin = np.isfinite(a) & np.isfinite(b)
            diff = np.abs(a - b)[fin]
            rel = diff / np.maximum(np.abs(a[fin]), 1e-30)
            print(
                f"{name}: DIFFERS at {int(np.sum(a != b))}/{a.size}; max abs "
                f"{diff.max(initial=0):.3g}, max rel {rel.max(initial=0):.3g}; "
                f"non-finite pattern same: {np.array_equal(np.isfinite(a), np.isfinite(b))}"
            )
        else:
            print(f"{name}: DIFFERS at {int(np.sum(a != b))}/{a.size}")
    print(f"{len(new)} arrays, {bad} differ")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
