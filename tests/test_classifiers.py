"""Every entry point accepts every classifier form, and a form's weights are the current ones.

* Forms (tests/_forms.py): a plain function (the reference), ``gr.Classifier``, Flax NNX,
  Flax Linen + variables, an Equinox module, Haiku + params (with and without the RNG
  argument), an Equinox per-example MLP under ``eqx.filter_vmap``. With the same weights,
  every entry point gives the reference's results for the forms each entry point converts
  itself (NNX, Equinox), and the headline calls for the ones the caller converts (Linen
  and Haiku with their variables, which arrive as a ``gr.Classifier``; up to float32 rounding: a
  program whose weights are traced may round differently from one where they are
  constants).
* An NNX module whose weights change in place between two calls gives the NEW results at
  every entry point (nothing is baked into a compiled program).
* ``gr.as_classifier`` itself: pytree structure, hashing, errors.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _forms import SHAPE, cnn_apply, cnn_forms, cnn_params, mlp_forms, mlp_params, needs
from flax import nnx

import geomrobust as gr
from geomrobust.measures import (
    boundary_slice,
    local_linearity,
    loss_hessian_slq,
    loss_hessian_trace,
    margin_signature,
    subspace_fooling_rate,
)

N = 6


def _data():
    x = 0.5 + 0.25 * jax.random.normal(jax.random.key(11), (N, *SHAPE), jnp.float32)
    return jnp.clip(x, 0.0, 1.0)


def battery(f) -> dict:
    """The outputs of every dataset-level entry point for classifier ``f``."""
    x = _data()
    key = jax.random.key(3)
    clf = gr.as_classifier(f)
    pred = jnp.argmax(clf(x), -1)
    out = {}

    def put(name, res):
        items = res._asdict().items() if hasattr(res, "_asdict") else [("", res)]
        for k, v in items:
            if isinstance(v, jax.Array | np.ndarray):
                out[f"{name}.{k}"] = np.asarray(v)

    df = gr.deepfool(f, x)
    put("deepfool", df)
    put("deepfool_traced", jax.jit(lambda z: gr.deepfool(f, z, steps=10))(x))
    put("deepfool_dataset", gr.deepfool_dataset(f, x, pred, chunk_size=4, slots=2))
    bands = gr.dct_subspaces(SHAPE, 4, 4)
    put("subspace", gr.subspace_margins(f, x, pred, bands, chunk_size=4, slots=2))
    put("random", gr.random_subspace_margins(f, x, None, dim=8, key=key))
    d = jax.random.normal(jax.random.key(4), (3, *SHAPE))
    d = d / jnp.linalg.norm(d.reshape(3, -1), axis=1).reshape(3, 1, 1, 1)
    put("along", gr.margin_along(f, x, d, max_dist=8.0, chunk_size=4))
    bp = gr.refine_boundary(f, x, x + df.perturbation, pred, chunk_size=4)
    put("refine", bp)
    z, yb, kb = x + 0.999 * df.perturbation, pred, jnp.where(df.converged, df.adv_label, 0)
    kb = jnp.where(kb == yb, (yb + 1) % 3, kb)
    off = dict(boundary_tol=np.inf)  # z near, not on, the boundary: the level sets through z
    put("curv", gr.principal_curvatures(f, z, yb, kb, num=3, key=key, chunk_size=4, **off))
    put(
        "curv_lanczos",
        gr.principal_curvatures(
            f, z, yb, kb, num=3, key=key, method="lanczos", krylov_dim=10, **off
        ),
    )
    u = d[:1].repeat(N, 0)
    out["normal_curvature"] = np.asarray(gr.normal_curvature(f, z, yb, kb, u, **off).values)
    put("loss_eigs", gr.loss_hessian_eigs(f, x, pred, num=2, key=key, method="lanczos"))
    out["loss_trace"] = np.asarray(loss_hessian_trace(f, x, pred, num_probes=4, key=key))
    put("slq", loss_hessian_slq(f, x, pred, num_probes=2, steps=4, key=key))
    put("fgsm", gr.fgsm(f, x, pred, eps=0.1))
    put("pgd", gr.pgd(f, x, pred, key=key, eps=0.1, steps=3))
    ra = gr.robust_accuracy(f, x, pred, [0.0, 0.1], key=key, steps=3, chunk_size=4)
    out["robust.success"] = np.asarray(ra.success)
    uap = gr.universal_perturbation(f, x, key=key, eps=0.5, norm=2, steps=1)
    out["uap"] = np.asarray(uap.perturbation)
    put("thickness", gr.boundary_thickness(f, x, x + df.perturbation, pred, num_points=16))
    out["signature"] = np.asarray(margin_signature(f, x, pred).layer("input").margins)
    put(
        "sparsefool",
        gr.sparsefool(f, x[:2], pred[:2], steps=3, deepfool_steps=10, bounds=(0.0, 1.0)),
    )
    put("slice", boundary_slice(f, x[0], d[0], d[1], 1.0, 5))
    put("linearity", local_linearity(f, x, pred, eps=0.05, key=key, steps=2))
    fr = subspace_fooling_rate(f, x, np.eye(64, 4), eps=0.5, num_samples=2, key=key, chunk_size=4)
    put("fooling", fr)
    return out


def _assert_close(name, got: dict, ref: dict):
    assert set(got) == set(ref), name
    for k in ref:
        a, b = got[k], ref[k]
        assert a.shape == b.shape and a.dtype == b.dtype, (name, k)
        if a.dtype.kind in "fc":
            fin = np.isfinite(b)
            assert np.array_equal(np.isfinite(a), fin), (name, k)
            scale = np.abs(b[fin]).max(initial=1.0)
            np.testing.assert_allclose(a[fin], b[fin], rtol=2e-4, atol=2e-5 * scale,
                                       err_msg=f"{name}: {k}")  # fmt: skip
        elif k.endswith(("iterations", ".steps", "restarts")):  # counts may move by one
            assert np.abs(a.astype(int) - b.astype(int)).max(initial=0) <= 1, (name, k)
        else:
            assert np.array_equal(a, b), (name, k)


@pytest.fixture(scope="module")
def cnn_reference():
    p = cnn_params(jax.random.key(0))
    return p, battery(cnn_forms(p)["plain"])


@pytest.mark.parametrize("form", ["nnx", "equinox"])
def test_cnn_forms_agree_at_every_entry_point(form, cnn_reference):
    """The modules each entry point converts itself (``as_classifier`` inside)."""
    p, ref = cnn_reference
    _assert_close(form, battery(cnn_forms(p)[form]), ref)


def test_linen_agrees_on_the_headline_calls(cnn_reference):
    """A Linen module with its variables is converted by the caller
    (``gr.as_classifier(module, variables)``): every entry point then receives a
    ``gr.Classifier``, the form the battery above runs for the modules, so the headline
    calls check the adapter's numbers."""
    p, ref = cnn_reference
    f = cnn_forms(p)["linen"]
    assert isinstance(f, gr.Classifier)
    x = _data()
    df = gr.deepfool(f, x)
    np.testing.assert_allclose(df.margin, ref["deepfool.margin"], rtol=2e-4)
    pred = jnp.argmax(f(x), -1)
    z, k = x + 0.999 * df.perturbation, jnp.where(df.converged, df.adv_label, 0)
    k = jnp.where(k == pred, (pred + 1) % 3, k)
    c = gr.principal_curvatures(f, z, pred, k, num=3, key=jax.random.key(3), chunk_size=4,
                                boundary_tol=np.inf)  # fmt: skip
    np.testing.assert_allclose(c.values, ref["curv.values"], rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["haiku", "haiku_no_rng", "equinox_vmap"])
def test_more_forms_agree(form):
    """The other forms on the headline calls. Haiku's transform and params are converted by
    the caller (``gr.as_classifier(transformed, params)``), so every entry point receives a
    ``gr.Classifier``, which the battery above runs."""
    needs(form)
    p = mlp_params(jax.random.key(1))
    forms = mlp_forms(p)
    x = _data()
    for f in (forms[form], gr.Classifier(cnn_apply, cnn_params(jax.random.key(0)))):
        ref = (
            forms["plain"]
            if f is forms[form]
            else cnn_forms(cnn_params(jax.random.key(0)))["plain"]
        )
        a, b = gr.deepfool(f, x), gr.deepfool(ref, x)
        np.testing.assert_allclose(a.margin, b.margin, rtol=2e-4)
        y, k = jnp.argmax(gr.as_classifier(ref)(x), -1), a.adv_label
        z = x + 0.999 * a.perturbation
        c1 = gr.principal_curvatures(f, z, y, k, num=3, key=jax.random.key(0))
        c2 = gr.principal_curvatures(ref, z, y, k, num=3, key=jax.random.key(0))
        np.testing.assert_allclose(c1.values, c2.values, rtol=2e-4, atol=1e-5)


def test_nnx_weights_changed_in_place_give_the_new_results():
    """The issue's stale-weights case: the same NNX module object, weights updated in place
    between two calls (as an optimizer step does): every entry point uses the new weights."""
    from _forms import NNXCNN

    p0, p1 = cnn_params(jax.random.key(0)), cnn_params(jax.random.key(5))
    model = NNXCNN(p0)
    first = battery(model)  # compiles every program with the module's weights as arguments
    model.set(p1)  # in place: same module, same variables, new values
    second = battery(model)
    # the reference: a fresh module built with the new weights (same architecture, so the
    # programs compiled above serve it), and the plain function on the headline numbers
    _assert_close("in-place", second, battery(NNXCNN(p1)))
    x = _data()
    np.testing.assert_allclose(
        second["deepfool.margin"], gr.deepfool(lambda z: cnn_apply(p1, z), x).margin, rtol=2e-4
    )
    assert not np.allclose(first["deepfool.margin"], second["deepfool.margin"])
    assert not np.allclose(first["curv.values"], second["curv.values"])
    # a Classifier made from the module is a live view too, jitted or not
    clf = gr.as_classifier(model)
    model.set(p0)
    x = _data()
    np.testing.assert_allclose(jax.jit(lambda c, z: c(z))(clf, x), cnn_apply(p0, x), rtol=1e-5)


def test_classifier_pytree_and_errors():
    p = cnn_params(jax.random.key(0))
    a = gr.as_classifier(cnn_forms(p)["nnx"])
    b = gr.as_classifier(cnn_forms(cnn_params(jax.random.key(9)))["nnx"])
    # same architecture: equal structure (one compiled program), different leaves
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert hash(jax.tree.structure(a)) == hash(jax.tree.structure(b))
    assert len(jax.tree.leaves(a)) == 4
    assert gr.as_classifier(a) is a
    c = gr.Classifier(cnn_apply, p)
    assert jax.tree.structure(c) == jax.tree.structure(gr.Classifier(cnn_apply, p))
    assert "Classifier(" in repr(c)
    # vmap over models: a batch of weights is a batched classifier
    stacked = jax.tree.map(lambda u, v: jnp.stack([u, v]), p, cnn_params(jax.random.key(2)))
    x = _data()
    logits = jax.vmap(lambda q: gr.Classifier(cnn_apply, q)(x))(stacked)
    np.testing.assert_allclose(logits[0], cnn_apply(p, x), rtol=1e-5)
    with pytest.raises(TypeError, match="hashable"):
        gr.Classifier(
            type("Unhashable", (), {"__call__": lambda s, p, x: x, "__hash__": None})(), p
        )
    with pytest.raises(TypeError, match="params must be None"):
        gr.as_classifier(a, p)
    with pytest.raises(TypeError, match="needs its variables"):
        from _forms import LinenCNN

        gr.as_classifier(LinenCNN())
    with pytest.raises(TypeError, match="must be a classifier"):
        gr.as_classifier("relu")


def test_model_configs_are_hashable_and_share_programs():
    """The zoo's models record tuples, so their NNX graph definitions are jit cache keys."""
    for name in ("mlp", "lenet", "resnet"):
        m1 = gr.create_model(name, SHAPE, 3, key=jax.random.key(0))
        m2 = gr.create_model(name, SHAPE, 3, key=jax.random.key(1))
        g1, g2 = nnx.graphdef(m1), nnx.graphdef(m2)
        assert hash(g1) == hash(g2) and g1 == g2, name
        assert gr.models.model_config(m1)["name"] == name


# ------------------------------------------------------------ static classifiers with arrays
_GLOBAL_W = jnp.ones((4, 3))


def _reads_global(x):
    return x @ _GLOBAL_W


def _no_arrays(x):
    return jnp.stack([x.sum(1), -x.sum(1)], 1)


class _Holder:
    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return x @ self.w

    def logits(self, x):
        return x @ self.w


def _closure(w):
    return lambda x: x @ w


@pytest.mark.parametrize(
    ("case", "what"),
    [
        ("global", "global '_GLOBAL_W'"),
        ("closure", "closure variable 'w'"),
        ("closure over a list of arrays", "closure variable 'w'"),
        ("object", "attribute 'w'"),
        ("bound method", "attribute 'w'"),
    ],
)
def test_static_classifier_holding_arrays_warns_once(case, what):
    """Rebinding the weights of a static classifier silently gives the old weights' results
    (JAX's semantics for static arguments): as_classifier says so, naming the fix."""
    from geomrobust.models import StaticWeightsWarning

    w = jnp.ones((4, 3))
    fn = {
        "global": lambda: _reads_global,
        "closure": lambda: _closure(w),
        "closure over a list of arrays": lambda: (lambda ws: lambda x: x @ ws[0])([w]),
        "object": lambda: _Holder(w),
        "bound method": lambda: _Holder(w).logits,
    }[case]()
    if case == "closure over a list of arrays":
        what = "closure variable 'ws'"
    with pytest.warns(StaticWeightsWarning, match=r"gr\.Classifier\(apply, params\)") as rec:
        gr.as_classifier(fn)
    assert what in str(rec[0].message) and rec[0].filename == __file__  # the user's line
    if case == "bound method":  # once per object: a bound method is made per access
        fn = fn.__self__.logits
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaticWeightsWarning)
        gr.as_classifier(fn)  # once per function


def test_classifiers_without_static_arrays_do_not_warn():
    from geomrobust.models import StaticWeightsWarning, create_model

    w = jnp.ones((4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaticWeightsWarning)
        gr.as_classifier(_no_arrays)
        gr.as_classifier(gr.Classifier(lambda p, x: x @ p, w))
        gr.as_classifier(lambda p, x: x @ p, w)
        gr.as_classifier(functools.partial(lambda p, x: x @ p, w))
        gr.as_classifier(create_model("mlp", (4,), 3, key=jax.random.key(0)))
        gr.as_classifier(lambda x: _no_arrays(x) * 2.0)
