"""Property-based tests (hypothesis) of the input rules of every boundary search and attack.

* Bounds: for any box and any inputs, a search raises ``ValueError`` naming exactly the
  number of examples outside the box beyond the tolerance, and otherwise returns feasible
  points (inside the box; PGD / FGSM inside their eps-ball too).
* Dtypes: for any input dtype (float16, bfloat16, float32, float64) and model dtype (float32,
  float64), every search returns the dtype of the rule (float32 for half precision, else the
  wider of the two) and exactly the numbers of the same search on inputs cast to that dtype.

Shapes are fixed and only values vary, so each search compiles once per dtype (not per example).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import geomrobust as gr
from geomrobust._validation import compute_dtype
from geomrobust.measures import normal_curvatures

N, D, K = 3, 6, 3
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _affine(p, x):
    return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]


def _model(dtype):
    kw, kb = jax.random.split(jax.random.key(0))
    w = jax.random.normal(kw, (D, K), jnp.float64)
    b = 0.2 * jax.random.normal(kb, (K,), jnp.float64)
    return gr.Classifier(_affine, {"w": w.astype(dtype), "b": b.astype(dtype)})


def _quadric(p, x):
    """Two classes split by the sphere ``||x - c||² = 1``: a curved boundary."""
    x = x.reshape(x.shape[0], -1)
    d = x - p
    return jnp.stack([1.0 - jnp.sum(d * d, -1), jnp.zeros(x.shape[0], x.dtype)], -1)


KEY = jax.random.key(0)
Y0 = jnp.zeros(N, jnp.int32)


@jax.jit
def _deepfool_jit(clf, x, lo, hi):
    """The transformable DeepFool (traced inputs), compiled once for every box."""
    return gr.deepfool(clf, x, bounds=(lo, hi))


def _no_points(run):
    """A search whose result holds no points to test for feasibility (rates, margins)."""

    def go(c, x, b):
        run(c, x, b)

    return go


# every search with a box: name -> run(clf, x, box) -> adversarial points, an AttackResult,
# or None (nothing to check beyond the absence of an error). Under jit the box check cannot
# run (no values): the traced DeepFool is in the dtype property only.
BOXED = {
    "deepfool": lambda c, x, b: x + gr.deepfool(c, x, bounds=b).perturbation,
    "deepfool linf": lambda c, x, b: x + gr.deepfool(c, x, norm=np.inf, bounds=b).perturbation,
    "deepfool subspace": lambda c, x, b: (
        x + gr.deepfool(c, x, subspace=jnp.eye(D)[:, :3], bounds=b).perturbation
    ),
    "deepfool_dataset": lambda c, x, b: x + gr.deepfool_dataset(c, x, bounds=b).perturbation,
    "subspace_margins": _no_points(
        lambda c, x, b: gr.subspace_margins(c, x, None, [jnp.eye(D)], bounds=b)
    ),
    "sparsefool": lambda c, x, b: x + gr.sparsefool(c, x, bounds=b).perturbation,
    "fgsm": lambda c, x, b: gr.fgsm(c, x, Y0, eps=0.1, bounds=b),
    "pgd": lambda c, x, b: gr.pgd(c, x, Y0, key=KEY, eps=0.1, steps=3, bounds=b),
    "robust_accuracy": _no_points(
        lambda c, x, b: gr.robust_accuracy(c, x, Y0, [0.1], key=KEY, steps=2, bounds=b)
    ),
    "universal": _no_points(
        lambda c, x, b: gr.universal_perturbation(c, x, key=KEY, eps=0.2, steps=1, bounds=b)
    ),
    "fmn": lambda c, x, b: x + gr.fmn(c, x, steps=5, bounds=b).perturbation,
    "cw_l2": lambda c, x, b: x + gr.cw_l2(c, x, steps=5, binary_steps=1, bounds=b).perturbation,
    "apgd": lambda c, x, b: gr.apgd(c, x, Y0, key=KEY, eps=0.1, steps=3, bounds=b),
}

# where each example lies: inside, outside within the tolerance, or outside beyond it
PLACES = st.lists(st.sampled_from(["in", "face", "tol", "out"]), min_size=N, max_size=N)


@settings(max_examples=30, **SETTINGS)
@given(
    name=st.sampled_from(sorted(BOXED)),
    lo=st.floats(-1.0, 0.5),
    width=st.floats(0.25, 3.0),
    places=PLACES,
    u=arrays(np.float64, (N, D), elements=st.floats(0.05, 0.95)),
    col=st.integers(0, D - 1),
)
def test_bounds_rule_of_every_search(name, lo, width, places, u, col):
    hi = lo + width
    x = lo + u * width
    for i, where in enumerate(places):  # move one coordinate of example i
        if where == "face":
            x[i, col] = hi
        elif where == "tol":
            x[i, col] = hi + 0.25e-6 * width  # within max(1e-6 (hi - lo), 8 eps max|lo, hi|)
        elif where == "out":
            x[i, col] = lo - 1e-3 * width - 1e-4
    x = jnp.asarray(x, jnp.float32)
    n_out = places.count("out")
    clf = _model(jnp.float32)
    box = (float(lo), float(hi))
    if n_out:
        try:
            BOXED[name](clf, x, box)
        except ValueError as e:
            assert re.search(rf"\b{n_out} of {N} examples of x lie outside bounds", str(e)), e
        else:
            raise AssertionError(f"{name}: {n_out} examples outside the box were accepted")
        return
    out = BOXED[name](clf, x, box)
    if out is None:
        return
    if isinstance(out, gr.search.AttackResult):
        d = np.abs(np.asarray(out.adversarial, np.float64) - np.asarray(x, np.float64))
        assert d.max() <= 0.1 * (1 + 1e-5) + 1e-6 * width  # the eps-ball (plus the clip)
        out = out.adversarial
    adv = np.asarray(out, np.float64)  # x + perturbation: rounding of the sum allowed
    slack = 1e-6 * max(1.0, abs(lo), abs(hi))
    assert adv.min() >= lo - slack and adv.max() <= hi + slack, name


def _sphere_model(dtype):
    return gr.Classifier(_quadric, jnp.full((D,), 0.125, dtype))  # exact in every dtype


def _run_all(name, clf, x):
    """The float outputs of one search (a tuple of arrays)."""
    y = jnp.zeros(N, jnp.int32)
    if name == "deepfool":
        r = gr.deepfool(clf, x)
        return r.perturbation, r.margin
    if name == "deepfool linf":
        return (gr.deepfool(clf, x, norm=np.inf, bounds=(-2.0, 2.0)).margin,)
    if name == "deepfool jit":
        return (_deepfool_jit(clf, x, -2.0, 2.0).margin,)
    if name == "subspace_margins":
        return (gr.subspace_margins(clf, x, None, [jnp.eye(D)[:, :3]]).margin,)
    if name == "sparsefool":
        r = gr.sparsefool(clf, x, bounds=(-2.0, 2.0))
        return r.perturbation, r.l1
    if name == "refine_boundary":
        far = jnp.full((N, D), 1.5, jnp.float32)  # outside the sphere, the same in both runs
        r = gr.refine_boundary(clf, x, far, jnp.zeros(N, jnp.int32))
        return r.z, r.normal, r.grad_norm
    if name == "margin_along":
        u = jnp.eye(D)[:2]
        return (gr.margin_along(clf, x, u, max_dist=3.0).margin,)
    if name == "fgsm":
        return (gr.fgsm(clf, x, y, eps=0.1).perturbation,)
    if name == "pgd":
        return (gr.pgd(clf, x, y, key=KEY, eps=0.1, steps=2).perturbation,)
    if name == "universal":
        return (gr.universal_perturbation(clf, x, key=KEY, eps=0.5, steps=1).perturbation,)
    if name == "fmn":
        return (gr.fmn(clf, x, steps=5).perturbation,)
    if name == "cw_l2":
        return (gr.cw_l2(clf, x, steps=5, binary_steps=1).perturbation,)
    # curvature at the boundary points of the sphere: c + e_j (exactly on it)
    z = (jnp.full((N, D), 0.125, jnp.float64) + jnp.eye(D)[:N]).astype(x.dtype)
    k = jnp.ones(N, jnp.int32)
    if name == "principal_curvatures":
        c = gr.principal_curvatures(clf, z, y, k, num=2, key=KEY)
        assert bool(np.all(c.status != gr.Status.OFF_BOUNDARY))
        return c.values, c.normal
    return (normal_curvatures(clf, z, y, k, jnp.eye(D)[N : N + 2]).values,)


ALL = [
    "deepfool", "deepfool linf", "deepfool jit", "subspace_margins", "sparsefool",
    "refine_boundary", "margin_along", "fgsm", "pgd", "universal", "principal_curvatures",
    "normal_curvatures", "fmn", "cw_l2",
]  # fmt: skip


@pytest.mark.slow  # ~25 compilations (each search in float32 and float64): ~60 s on 2 cores
@settings(max_examples=30, **SETTINGS)
@given(
    name=st.sampled_from(ALL),
    x_dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
    model_dtype=st.sampled_from(["float32", "float64"]),
    u=arrays(np.float64, (N, D), elements=st.floats(-0.4, 0.4)),
)
def test_dtype_rule_of_every_search(name, x_dtype, model_dtype, u):
    rule = compute_dtype(x_dtype, model_dtype)
    assert rule == (jnp.float64 if "float64" in (x_dtype, model_dtype) else jnp.float32)
    clf = _sphere_model(model_dtype)
    x = jnp.asarray(u + 0.125).astype(x_dtype)
    got = _run_all(name, clf, x)
    ref = _run_all(name, _sphere_model(rule), x.astype(rule))
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == rule, (name, g.dtype, rule)
        np.testing.assert_allclose(g, r, rtol=1e-12 if rule == jnp.float64 else 0, atol=0)


# ------------------------------------------------------------------ the non-finite logits rule
def _nan_model(dtype=jnp.float32):
    """An affine 3-class model whose logit row is all NaN where ``x[:, 0] > 5`` (inputs of
    the last two examples): the argmax of such a row is 0, a label like any other."""

    def apply(p, x):
        z = _affine(p, x)
        bad = x.reshape(x.shape[0], -1)[:, :1] > 5
        return jnp.where(bad, jnp.nan, z)

    base = _model(dtype)
    return gr.Classifier(apply, base.params)


def _nan_data(dtype=jnp.float32):
    x = 0.4 + 0.2 * jax.random.uniform(jax.random.key(7), (4, D), dtype)
    return x.at[2:, 0].set(10.0)  # examples 2 and 3: NaN logits (and stay so in small balls)


NAN_ROWS = np.array([False, False, True, True])


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize(
    "name",
    ["deepfool", "fmn", "cw", "minimal_margin", "sparsefool", "refine_boundary",
     "margin_along", "pgd", "fgsm", "apgd", "square"],
)  # fmt: skip
def test_nonfinite_rows_never_succeed(name, label):
    """A NaN logit row is never a success, never converged, whatever its label (0 is the
    argmax of a NaN row: a label-0 example looks correct, a label-1 one looks broken)."""
    f, x = _nan_model(), _nan_data()
    y = jnp.argmax(_model(jnp.float32)(x), -1).at[2:].set(label).astype(jnp.int32)
    if name == "deepfool":
        ok = gr.deepfool(f, x, y).converged
    elif name == "fmn":
        ok = gr.fmn(f, x, y, steps=5).converged
    elif name == "cw":
        ok = gr.cw_l2(f, x, y, steps=3, binary_steps=2).converged
    elif name == "minimal_margin":
        ok = gr.search.minimal_margin(f, x, y, fmn_kw=dict(steps=3),
                                      cw_kw=dict(steps=3, binary_steps=2)).converged  # fmt: skip
    elif name == "sparsefool":
        ok = gr.search.sparsefool(f, x, y, bounds=(0.0, 11.0)).converged
    elif name == "refine_boundary":
        x_adv = x + jnp.asarray([1.0, 0, 0, 0, 0, 0])
        ok = gr.search.refine_boundary(f, x, x_adv, y).converged
    elif name == "margin_along":
        d = jnp.ones((4, 1, D)) / np.sqrt(D)
        ok = gr.search.margin_along(f, x, d, max_dist=3.0).converged[:, 0]
    elif name == "pgd":
        ok = gr.pgd(f, x, y, key=KEY, eps=0.1, steps=3).success
    elif name == "fgsm":
        ok = gr.search.fgsm(f, x, y, eps=0.1).success
    elif name == "apgd":
        ok = gr.search.apgd(f, x, y, key=KEY, eps=0.1, steps=3).success
    else:
        ok = gr.search.square_attack(f, x, y, key=KEY, eps=0.1, steps=3).success
    assert not np.any(np.asarray(ok)[NAN_ROWS]), name


@pytest.mark.parametrize("label", [0, 1])
def test_nonfinite_rows_never_correct(label):
    """robust_accuracy and masking_checks: a clean input with a NaN logit row is never
    counted correct (nor robust), whatever its label."""
    f, x = _nan_model(), _nan_data()
    y = jnp.argmax(_model(jnp.float32)(x), -1).at[2:].set(label).astype(jnp.int32)
    ra = gr.search.robust_accuracy(f, x, y, [0.0, 0.05], key=KEY, steps=2)
    assert ra.clean_accuracy <= 0.5 and np.all(ra.accuracy <= 0.5)
    mc = gr.search.masking_checks(f, x, y, [0.05], key=KEY, steps=2, square_steps=2)
    assert mc.clean_accuracy <= 0.5 and np.all(mc.worst_case <= 0.5)
    for acc in mc.accuracy.values():
        assert np.all(acc <= 0.5)


def test_nonfinite_rows_never_fooled_by_a_universal_perturbation():
    f, x = _nan_model(), _nan_data()
    r = gr.search.universal_perturbation(f, x, key=KEY, eps=0.05, steps=1)
    assert r.fooling_rate <= 0.5
