"""Issue 17, numerics: no silently wrong number from a boundary search.

One rule per class of input, the same at every entry point (docs/conventions.md, "Input
checks"): inputs outside ``bounds`` -> ValueError naming the count; tied top logits -> margin
0, converged; logits scaled by 1e±20 -> the unscaled margins (float32, closed forms on affine
models); curvature at points off the boundary -> status ``OFF_BOUNDARY`` and not converged (a
ValueError for the normal curvatures); float16 / bfloat16 -> computed and returned in
float32; mixed float32 / float64 -> the wider dtype; inputs and weights on different devices
-> handled (a 2-device subprocess).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.measures import normal_curvatures
from geomrobust.search import refine_boundary

D = 6
ETA = 0.02


def _affine(p, x):
    return p["s"] * (x.reshape(x.shape[0], -1) @ p["w"] + p["b"])


def affine(k=2, dtype=jnp.float32, scale=1.0, seed=0):
    """``s (x W + b)``: the scale is a weight, so every scale shares one compilation."""
    kw, kb = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(kw, (D, k), jnp.float64)
    b = 0.3 * jax.random.normal(kb, (k,), jnp.float64)
    p = {"w": w.astype(dtype), "b": b.astype(dtype), "s": jnp.asarray(scale, dtype)}
    return gr.Classifier(_affine, p)


def _points(n=4, dtype=jnp.float32, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, D), jnp.float64, 0.2, 0.8).astype(dtype)


def _affine_margin(clf, x, p):
    """Closed form of DeepFool on a 2-class affine model: ``(1 + η) |F| / ||w1 - w0||_q``."""
    w = np.asarray(clf.params["w"], np.float64)
    b = np.asarray(clf.params["b"], np.float64)
    F = np.asarray(x, np.float64) @ (w[:, 1] - w[:, 0]) + (b[1] - b[0])
    q = 1.0 if np.isinf(p) else p / (p - 1)
    return (1 + ETA) * np.abs(F) / np.linalg.norm(w[:, 1] - w[:, 0], q)


# --------------------------------------------------------------------------- scale


@pytest.mark.parametrize("scale", [1e20, 1e-20])
@pytest.mark.parametrize("norm", [2, np.inf, 3])
def test_deepfool_scale_invariant_float32(scale, norm):
    x = _points()
    ref = gr.deepfool(affine(), x, norm=norm)
    res = gr.deepfool(affine(scale=scale), x, norm=norm)
    assert bool(np.all(res.converged)) and bool(np.all(ref.converged))
    np.testing.assert_allclose(res.margin, ref.margin, rtol=1e-6)
    np.testing.assert_allclose(res.margin, _affine_margin(affine(), x, norm), rtol=2e-5)
    # the transformable loop (under jit) and the box path follow the same arithmetic
    jit = jax.jit(lambda c, z: gr.deepfool(c, z, norm=norm))(affine(scale=scale), x)
    np.testing.assert_allclose(jit.margin, ref.margin, rtol=1e-6)
    boxed = gr.deepfool(affine(scale=scale), x, norm=norm, bounds=(-10.0, 10.0))
    assert bool(np.all(boxed.converged))
    np.testing.assert_allclose(boxed.margin, ref.margin, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_boundary_and_sparsefool_scale_invariant_float32(scale):
    x = _points()
    clf, ref_clf = affine(scale=scale), affine()
    adv = x + gr.deepfool(ref_clf, x).perturbation
    y = jnp.argmax(ref_clf(x), -1).astype(jnp.int32)
    ref = refine_boundary(ref_clf, x, adv, y)
    res = refine_boundary(clf, x, adv, y)
    assert bool(np.all(res.converged)) and bool(np.all(ref.converged))
    np.testing.assert_allclose(res.z, ref.z, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(res.normal, ref.normal, rtol=1e-6, atol=1e-7)
    sf_ref = gr.sparsefool(ref_clf, x, bounds=None)
    sf = gr.sparsefool(clf, x, bounds=None)
    assert bool(np.all(sf.converged)) and bool(np.all(sf_ref.converged))
    np.testing.assert_allclose(sf.l1, sf_ref.l1, rtol=1e-5)


# --------------------------------------------------------------------------- ties


def _first3(p, x):
    return x[:, :3] * p


TIE = gr.Classifier(_first3, jnp.ones((), jnp.float32))


def test_tied_logits_margin_zero_converged():
    # rows 0, 1: f_0 = f_1 (true margin 0); row 2: f_0 = f_1 + 0.1, closed form 1.02 · 0.1/√2
    x = jnp.array(
        [[0.5, 0.5, 0.1, 0, 0, 0], [0.3, 0.3, 0.3, 0, 0, 0], [0.6, 0.5, 0.1, 0, 0, 0]],
        jnp.float32,
    )
    for res in (gr.deepfool(TIE, x), jax.jit(gr.deepfool)(TIE, x)):
        np.testing.assert_array_equal(res.margin[:2], [0.0, 0.0])
        np.testing.assert_array_equal(res.converged, [True, True, True])
        np.testing.assert_array_equal(res.iterations[:2], [0, 0])
        np.testing.assert_array_equal(res.adv_label[:2], [1, 1])  # the tied class, not y
        np.testing.assert_allclose(res.margin[2], 1.02 * 0.1 / np.sqrt(2), rtol=1e-5)
    # y given as the tied class of higher index (argmax says 0): margin 0, adv_label 0
    res = gr.deepfool(TIE, x[:1], jnp.array([1]))
    assert float(res.margin[0]) == 0.0 and int(res.adv_label[0]) == 0
    boxed = gr.deepfool(TIE, x, bounds=(0.0, 1.0))
    np.testing.assert_array_equal(boxed.margin[:2], [0.0, 0.0])
    sf = gr.sparsefool(TIE, x, bounds=(0.0, 1.0))
    np.testing.assert_array_equal(sf.converged, [True, True, True])
    np.testing.assert_array_equal(sf.perturbation[:2], np.zeros((2, D)))
    np.testing.assert_array_equal(sf.adv_label[:2], [1, 1])
    np.testing.assert_array_equal(sf.iterations[:2], [0, 0])


# --------------------------------------------------------------------------- bounds

X_OUT = jnp.array([[0.5] * D, [1.5] + [0.5] * (D - 1), [-0.2] * D], jnp.float32)
Y_OUT = jnp.zeros(3, jnp.int32)
BOX = (0.0, 1.0)
OUT_OF_BOX = {
    "deepfool": lambda c: gr.deepfool(c, X_OUT, bounds=BOX),
    "deepfool linf": lambda c: gr.deepfool(c, X_OUT, norm=np.inf, bounds=BOX),
    "deepfool subspace": lambda c: gr.deepfool(c, X_OUT, subspace=jnp.eye(D)[:, :2], bounds=BOX),
    "deepfool_dataset": lambda c: gr.deepfool_dataset(c, np.asarray(X_OUT), bounds=BOX),
    "subspace_margins": lambda c: gr.subspace_margins(c, X_OUT, None, [jnp.eye(D)], bounds=BOX),
    "sparsefool": lambda c: gr.sparsefool(c, X_OUT, bounds=BOX),
    "fgsm": lambda c: gr.fgsm(c, X_OUT, Y_OUT, eps=0.1, bounds=BOX),
    "pgd": lambda c: gr.pgd(c, X_OUT, Y_OUT, key=jax.random.key(0), eps=0.1, bounds=BOX),
    "robust_accuracy": lambda c: gr.robust_accuracy(
        c, X_OUT, Y_OUT, [0.1], key=jax.random.key(0), bounds=BOX
    ),
    "universal": lambda c: gr.universal_perturbation(
        c, X_OUT, key=jax.random.key(0), eps=0.1, bounds=BOX
    ),
}


@pytest.mark.parametrize("name", sorted(OUT_OF_BOX))
def test_out_of_box_inputs_raise_with_count(name):
    with pytest.raises(ValueError, match=r"2 of 3 examples of x lie outside bounds \[0, 1\]"):
        OUT_OF_BOX[name](affine())


def test_bounds_tolerance_and_per_coordinate_boxes():
    clf = affine()
    # within 1e-6 (hi - lo): accepted, and the result is feasible
    x = _points().at[0, 0].set(1.0 + 5e-7)
    res = gr.deepfool(clf, x, bounds=BOX)
    adv = np.asarray(x + res.perturbation)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    with pytest.raises(ValueError, match="1 of 4 examples"):
        gr.deepfool(clf, _points().at[2, 3].set(1.0 + 1e-4), bounds=BOX)
    lo, hi = jnp.zeros(D), jnp.full(D, 0.7)
    with pytest.raises(ValueError, match=r"examples of x lie outside bounds \[lo, hi\]"):
        gr.pgd(clf, _points(), jnp.zeros(4, jnp.int32), key=jax.random.key(0), eps=0.1,
               bounds=(lo, hi))  # fmt: skip
    with pytest.raises(ValueError, match="broadcastable"):
        gr.deepfool(clf, _points(), bounds=(jnp.zeros(3), 1.0))


def test_pgd_in_box_respects_eps():
    clf = affine(k=3)
    x = _points(8)
    y = jnp.argmax(clf(x), -1).astype(jnp.int32)
    for norm, eps in ((np.inf, 0.05), (2, 0.1)):
        res = gr.pgd(clf, x, y, key=jax.random.key(3), eps=eps, norm=norm, bounds=BOX)
        d = np.asarray(res.perturbation, np.float64)
        n = np.abs(d).max(1) if np.isinf(norm) else np.linalg.norm(d, axis=1)
        assert n.max() <= eps * (1 + 1e-5)
        assert np.asarray(res.adversarial).min() >= 0 and np.asarray(res.adversarial).max() <= 1


# --------------------------------------------------------------------------- dtypes


def _sphere(p, x):
    """Class 0 inside the ball of radius ``sqrt(p)``: ``f = (p - ||x||², 0)``."""
    x = x.reshape(x.shape[0], -1)
    return jnp.stack([p - jnp.sum(x * x, -1), jnp.zeros(x.shape[0], x.dtype)], -1)


def _searches(clf, x):
    """Every search on ``x`` (float arrays of the result: the part the dtype rule governs)."""
    n = x.shape[0]
    y = jnp.zeros(n, jnp.int32)
    key = jax.random.key(0)
    u = jnp.ones((2, D), x.dtype) / np.sqrt(D)
    df = gr.deepfool(clf, x)
    out = {
        "deepfool": df.margin,
        "deepfool linf": gr.deepfool(clf, x, norm=np.inf).margin,
        "deepfool box": gr.deepfool(clf, x, bounds=(-5.0, 5.0)).margin,
        "deepfool jit": jax.jit(gr.deepfool)(clf, x).margin,
        "subspace": gr.subspace_margins(clf, x, None, [jnp.eye(D)[:, :3]]).margin,
        "sparsefool": gr.sparsefool(clf, x, bounds=None).l1,
        "refine": refine_boundary(clf, x, x + df.perturbation, y).z,
        "margin_along": gr.margin_along(clf, x, u, max_dist=4.0).margin,
        "fgsm": gr.fgsm(clf, x, y, eps=0.1).perturbation,
        "pgd": gr.pgd(clf, x, y, key=key, eps=0.1, steps=3).perturbation,
        "universal": gr.universal_perturbation(clf, x, key=key, eps=1.0, steps=1).perturbation,
    }
    return out


def _sphere_clf(dtype):
    return gr.Classifier(_sphere, jnp.asarray(1.0, dtype))


@pytest.mark.slow  # every search compiled once more: ~20 s on 2 shared cores
@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_half_precision_inputs_run_in_float32(low):
    """float16 / bfloat16 inputs: every search returns float32, the very numbers of the
    float32 search on the rounded inputs."""
    clf = _sphere_clf(jnp.float32)
    x_low = (0.3 * _points()).astype(low)
    got = _searches(clf, x_low)
    ref = _searches(clf, x_low.astype(jnp.float32))
    for name in got:
        assert got[name].dtype == jnp.float32, name
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    z = jnp.array([[1.0] + [0.0] * (D - 1)], low)
    c = gr.principal_curvatures(clf, z, jnp.array([0]), jnp.array([1]), num=2,
                                key=jax.random.key(0))  # fmt: skip
    assert (
        c.values.dtype == jnp.float32
        and bool(c.converged[0])
        and int(c.status[0]) == gr.Status.SUCCESS
    )
    np.testing.assert_allclose(c.values[0], [1.0, 1.0], rtol=1e-5)


@pytest.mark.parametrize("x_dtype,model_dtype", [("float32", "float64"), ("float64", "float32")])
def test_mixed_float32_float64_promotes_to_float64(x_dtype, model_dtype):
    clf = _sphere_clf(model_dtype)
    x = (0.3 * _points(dtype=jnp.float64)).astype(x_dtype)
    got = _searches(clf, x)
    ref = _searches(_sphere_clf(jnp.float64), x.astype(jnp.float64))
    for name in got:
        assert got[name].dtype == jnp.float64, name
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12, atol=1e-15, err_msg=name)


# --------------------------------------------------------------------------- curvature


def _sphere_points(radii):
    return jnp.asarray([[r] + [0.0] * (D - 1) for r in radii], jnp.float64)


@pytest.mark.parametrize("scale", [None, 0.05])
def test_curvature_flags_points_off_the_boundary(scale):
    clf = gr.Classifier(_sphere, jnp.asarray(4.0, jnp.float64))  # boundary: radius 2
    # first-order distance |F|/||g|| = |4 - r²| / 2r: 0, ~1e-3 (tol 1e-3 · ||z|| = 2e-3:
    # on), ~3e-3 (off), 0.45 (far off)
    z = _sphere_points([2.0, 2.001, 2.006, 2.5])
    y, k = jnp.zeros(4, jnp.int32), jnp.ones(4, jnp.int32)
    kw = dict(num=2, key=jax.random.key(0), scale=scale, num_samples=64)
    c = gr.principal_curvatures(clf, z, y, k, **kw)
    np.testing.assert_array_equal(c.status != gr.Status.OFF_BOUNDARY, [True, True, False, False])
    np.testing.assert_array_equal(c.converged, [True, True, False, False])
    assert np.all(np.isnan(np.asarray(c.values)[2:]))  # unconverged values are nan
    if scale is None:  # (at a scale the values carry Monte Carlo noise; the flags do not)
        np.testing.assert_allclose(c.values[0], [0.5, 0.5], rtol=1e-9)
    # boundary_tol=inf measures the level set through z: radius 2.5, curvature 0.4
    c = gr.principal_curvatures(clf, z, y, k, boundary_tol=float("inf"), **kw)
    assert bool(np.all(c.status == gr.Status.SUCCESS)) and bool(np.all(c.converged))
    if scale is None:
        np.testing.assert_allclose(c.values[3], [0.4, 0.4], rtol=1e-9)
    u = jnp.broadcast_to(jnp.eye(D)[1], z.shape)
    with pytest.raises(ValueError, match="2 of 4 points z are not on the"):
        gr.normal_curvature(clf, z, y, k, u, scale=scale, key=jax.random.key(0), num_samples=64)
    kappa = normal_curvatures(clf, z[:2], y[:2], k[:2], u[:1], scale=scale,
                              key=jax.random.key(0), num_samples=64).values  # fmt: skip
    assert kappa.shape == (2, 1) and bool(np.all(np.isfinite(kappa)))
    if scale is None:
        np.testing.assert_allclose(kappa[:, 0], [1 / 2.0, 1 / 2.001], rtol=1e-9)


def test_curvature_scale_of_logits_does_not_flag():
    """The on-boundary test is a ratio (|F| / ||∇F||) and ||∇F|| is a scaled norm: logits
    scaled by 1e±20 in float32 give the unscaled flags and curvatures (1/r on the sphere)."""
    for s in (1e20, 1e-20):
        clf = gr.Classifier(_sphere_scaled, (jnp.asarray(4.0), jnp.asarray(s, jnp.float32)))
        z = _sphere_points([2.0, 2.5]).astype(jnp.float32)
        c = gr.principal_curvatures(clf, z, jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32),
                                    num=2, key=jax.random.key(0))  # fmt: skip
        np.testing.assert_array_equal(c.status != gr.Status.OFF_BOUNDARY, [True, False])
        np.testing.assert_array_equal(c.converged, [True, False])
        np.testing.assert_allclose(c.values[0], [0.5, 0.5], rtol=1e-5)


def _sphere_scaled(p, x):
    return p[1] * _sphere(p[0], x)


# --------------------------------------------------------------------------- devices

DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, "tests")
    import geomrobust as gr
    from test_reliability_numerics import _affine, _points, affine
    d0, d1 = jax.devices()[:2]
    clf = affine(k=3)
    far = gr.Classifier(_affine, jax.device_put(clf.params, d1))  # weights on device 1
    x = jax.device_put(_points(), d0)                               # inputs on device 0
    y = jnp.argmax(clf(x), -1).astype(jnp.int32)
    key = jax.random.key(0)
    runs = {
        "deepfool": lambda c: gr.deepfool(c, x).perturbation,
        "deepfool_box": lambda c: gr.deepfool(c, x, bounds=(0.0, 1.0)).perturbation,
        "pgd": lambda c: gr.pgd(c, x, y, key=key, eps=0.1).perturbation,
        "fgsm": lambda c: gr.fgsm(c, x, y, eps=0.1).perturbation,
        "refine": lambda c: gr.refine_boundary(c, x, x + 2.0 * gr.deepfool(clf, x).perturbation,
                                               y).z,
        "sparsefool": lambda c: gr.sparsefool(c, x, bounds=(0.0, 1.0)).perturbation,
    }
    out = {}
    for name, run in runs.items():
        out[name] = bool(np.array_equal(np.asarray(run(far)), np.asarray(run(clf))))
    print(json.dumps(out))
    """
)


def test_inputs_and_weights_on_different_devices():
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's flags (tests/conftest.py), and 2 devices
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT], env=env, capture_output=True, text=True,
        timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out and all(out.values()), out
