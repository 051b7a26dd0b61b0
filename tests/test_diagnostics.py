"""Diagnostics against closed forms: boundary thickness of an affine two-class classifier,
first-order margin signatures (input and hidden layers), local linearity of an affine
two-class model, and the ``geomrobust diagnose`` command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import affine, mlp
from conftest import rtol_for

from geomrobust.measures import (
    boundary_thickness,
    first_order_margins,
    layer_splits,
    local_linearity,
    margin_signature,
    thickness,
)
from geomrobust.measures._thickness import segment_fraction
from geomrobust.models import create_model


def _two_class_affine(key, dtype, d=6):
    w = jax.random.normal(key, (d, 2), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (2,), dtype)
    return w, b


def test_thickness_of_an_affine_classifier_has_a_closed_form(key, dtype):
    """Two classes, ``F = f_j - f_i`` affine: along ``x + t (x_r - x)``,
    ``F(t) = F_0 + t (F_1 - F_0)`` and ``p_i - p_j = tanh(-F/2)``, so
    ``α < p_i - p_j < β  <=>  -2 artanh(β) < F(t) < -2 artanh(α)``: an interval of ``t``
    found by solving two linear equations; thickness = its length × ``||x_r - x||``."""
    w, b = _two_class_affine(key, dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (12, 6), dtype)
    i = jnp.argmax(fn(x), axis=-1)
    sign = jnp.where(i == 0, 1.0, -1.0).astype(dtype)  # F = f_1 - f_0 for i = 0
    n = w[:, 1] - w[:, 0]
    # endpoints 1.5 to 3 margins away along the normal (well past the boundary)
    F0 = sign * (fn(x)[:, 1] - fn(x)[:, 0])
    scale = jnp.linspace(1.5, 3.0, 12, dtype=dtype)
    step = (-F0 / jnp.sum(n * n)) * scale  # along ∇F = sign * n: F_1 = F_0 (1 - scale)
    x_adv = x + (step * sign)[:, None] * n[None, :]
    F1 = sign * (fn(x_adv)[:, 1] - fn(x_adv)[:, 0])
    assert bool(jnp.all(F0 < 0)) and bool(jnp.all(F1 > 0))
    for alpha, beta in ((0.0, 0.75), (-0.5, 0.9)):
        lo = -2 * np.arctanh(beta)
        hi = -2 * np.arctanh(alpha)
        f0, f1 = np.asarray(F0, np.float64), np.asarray(F1, np.float64)
        t_lo = np.clip((lo - f0) / (f1 - f0), 0, 1)
        t_hi = np.clip((hi - f0) / (f1 - f0), 0, 1)
        dist = np.linalg.norm(np.asarray(x_adv - x, np.float64), axis=1)
        expect = (t_hi - t_lo) * dist
        res = boundary_thickness(fn, x, x_adv, alpha=alpha, beta=beta, num_points=400)
        assert res.thickness.dtype == dtype
        assert bool(res.valid.all())
        # piecewise-linear interpolation of tanh: O(h²) error
        np.testing.assert_allclose(np.asarray(res.thickness), expect, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(res.mean, expect.mean(), rtol=2e-4)


def test_segment_fraction_is_exact_for_linear_profiles(dtype):
    g = jnp.linspace(1.0, -1.0, 5, dtype=dtype)[None]  # linear from 1 to -1
    np.testing.assert_allclose(float(segment_fraction(g, 0.0, 0.75)[0]), 0.375, rtol=1e-6)
    np.testing.assert_allclose(float(segment_fraction(g, -2.0, 2.0)[0]), 1.0, rtol=1e-6)


def test_thickness_driver_with_deepfool_on_affine(key):
    """DeepFool's endpoint (just past the boundary, overshoot 0.02): with ``α = 0`` the
    band ends at the boundary, so the thickness is the distance between the level sets
    ``F = -2 artanh(β)`` and ``F = 0`` intersected with ``[x, boundary]``:
    ``min(|F_0|, 2 artanh β) / ||n||``."""
    dtype = jnp.float64
    w, b = _two_class_affine(key, dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (10, 6), dtype)
    res = thickness(fn, x, num_points=512)
    f = fn(x)
    F0 = np.abs(np.asarray(f[:, 1] - f[:, 0]))
    nn = float(jnp.linalg.norm(w[:, 1] - w[:, 0]))
    expect = np.minimum(F0, 2 * np.arctanh(0.75)) / nn
    assert bool(res.valid.all())
    np.testing.assert_allclose(np.asarray(res.thickness), expect, rtol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        thickness(fn, x, alpha=0.8, beta=0.75)


def test_input_margins_of_an_affine_classifier_are_exact_distances(key, dtype):
    """For an affine classifier the first-order margin is the exact distance to the
    hyperplane ``{f_y = f_j}``: ``(f_y - f_j) / ||w_y - w_j||``."""
    w = jax.random.normal(key, (8, 4), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (4,), dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (9, 8), dtype)
    y = jnp.arange(9) % 4
    m, j = first_order_margins(fn, x, y)
    f = np.asarray(fn(x), np.float64)
    ff = f.copy()
    ff[np.arange(9), np.asarray(y)] = -np.inf
    jj = ff.argmax(1)
    np.testing.assert_array_equal(np.asarray(j), jj)
    wn = np.asarray(w, np.float64)
    expect = (f[np.arange(9), y] - f[np.arange(9), jj]) / np.linalg.norm(
        wn[:, np.asarray(y)] - wn[:, jj], axis=0
    )
    assert m.dtype == dtype
    np.testing.assert_allclose(np.asarray(m), expect, rtol=10 * rtol_for(dtype))
    sig = margin_signature(fn, x, y)
    q = np.percentile(expect, [25, 50, 75])
    np.testing.assert_allclose(sig.layer("input").stats[1:4], q, rtol=10 * rtol_for(dtype))
    assert sig.layers == ("input",) and sig.margins.shape == (1, 9) and sig.stats.shape == (1, 7)
    np.testing.assert_array_equal(sig.margins[0], m)
    with pytest.warns(DeprecationWarning, match="layer"):
        old = sig["input"]  # the dict of one release ago
    np.testing.assert_array_equal(old.stats, sig.stats[0])


@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_hidden_layer_margins_use_the_gradient_wrt_the_activation(arch):
    """The splits compose to the model, and hidden margins equal a hand computation with
    ``jax.grad`` of the head with respect to the layer's activation."""
    config = {"widths": [16, 12]} if arch == "mlp" else {"channels": [3, 4], "hidden": [10, 8]}
    model = create_model(arch, (8, 8, 1), 5, key=jax.random.key(0), activation="tanh", **config)
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    y = jnp.arange(6) % 5
    splits = layer_splits(model)
    expect_names = ["hidden1", "hidden2"] if arch == "mlp" else ["conv1", "conv2", "fc1", "fc2"]
    assert list(splits) == expect_names
    logits = model(x)
    sig = margin_signature(model, x, y, splits=splits)
    for name, (feat, head) in splits.items():
        h = feat(x)
        np.testing.assert_allclose(np.asarray(head(h)), np.asarray(logits), rtol=1e-5, atol=1e-6)
        for n in range(1):
            f = head(h[n : n + 1])[0]
            jn = int(jnp.argmax(jnp.where(jnp.arange(5) == y[n], -jnp.inf, f)))

            def diff(hn, head=head, yn=y[n], jn=jn):
                return head(hn[None])[0][yn] - head(hn[None])[0][jn]

            g = jax.jit(jax.grad(diff))(h[n])
            expect = float(f[y[n]] - f[jn]) / float(jnp.linalg.norm(g))
            np.testing.assert_allclose(float(sig.layer(name).margins[n]), expect, rtol=1e-4)
    with pytest.raises(TypeError, match="MLP and LeNet"):
        layer_splits(create_model("resnet", (8, 8, 1), 5, key=jax.random.key(0)))


def test_local_linearity_of_a_two_class_affine_model(key, dtype):
    """``ℓ = softplus(F)``, ``F`` affine, ``s = wᵀδ``: ``g(s) = softplus(F+s) - softplus(F)
    - σ(F) s`` is convex in ``s``, so on the Linf ball its maximum lies at a vertex with
    ``s = ±ε ||w||_1``; sign ascent from a random start reaches the vertex on the side of the
    start. We check the found δ is such a vertex and γ is the closed form there (and no
    larger than the global closed-form maximum)."""
    w, b = _two_class_affine(key, dtype)
    fn = affine(w, b)
    x = jax.random.normal(jax.random.fold_in(key, 2), (8, 6), dtype)
    y = jnp.arange(8) % 2
    eps = 0.3
    res = local_linearity(fn, x, y, eps=eps, key=key, steps=8, step_size=0.1)
    f = np.asarray(fn(x), np.float64)
    yy = np.asarray(y)
    F = f[np.arange(8), 1 - yy] - f[np.arange(8), yy]
    wn = np.asarray(w, np.float64)
    wv = np.where(yy[:, None] == 0, 1, -1) * (wn[:, 1] - wn[:, 0])[None]  # ∇F per example
    s = np.sum(wv * np.asarray(res.perturbation, np.float64), axis=1)
    s_max = eps * np.abs(wv).sum(1)
    np.testing.assert_allclose(np.abs(s), s_max, rtol=10 * rtol_for(dtype))

    def gap(s):
        sp = np.logaddexp(0, F + s) - np.logaddexp(0, F)
        return np.abs(sp - s / (1 + np.exp(-F)))

    assert res.gamma.dtype == dtype
    np.testing.assert_allclose(np.asarray(res.gamma), gap(s), rtol=100 * rtol_for(dtype))
    assert np.all(np.asarray(res.gamma) <= np.maximum(gap(s_max), gap(-s_max)) * (1 + 1e-4))
    assert np.all(np.asarray(res.gamma) > 0)


def test_local_linearity_is_zero_only_for_affine_losses():
    """Sanity: a curved net has γ > 0 growing with ε (the gap is O(ε²) for small ε)."""
    key = jax.random.key(0)
    fn = mlp(key, (6,), 3, dtype=jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 6), jnp.float64)
    y = jnp.arange(5) % 3
    g1 = local_linearity(fn, x, y, eps=0.01, key=key, steps=5).gamma
    g2 = local_linearity(fn, x, y, eps=0.02, key=key, steps=5).gamma
    ratio = np.asarray(g2 / g1)
    assert np.all((ratio > 3.0) & (ratio < 5.0)), ratio


def test_diagnose_cli_writes_every_diagnostic(tmp_path):
    """``geomrobust train --method pgd`` (method settings in the metadata), then
    ``geomrobust diagnose`` with every diagnostic; the summary agrees with the library."""
    import json

    from geomrobust.cli import main
    from geomrobust.train import load_metadata

    ck = tmp_path / "ck"
    argv = ["train", "--model", "mlp", "--width", "16", "--epochs", "1", "--method", "pgd"]
    argv += ["--eps", "0.1", "--steps", "2", "--monitor", "64", "--out", str(ck)]
    assert main(argv) == 0
    meta = load_metadata(ck)
    assert meta["method"] == "pgd" and meta["method_settings"]["eps"] == 0.1
    assert len(meta["history"]["pgd_accuracy"]) == 1
    assert (ck / "metrics.json").exists()
    out = tmp_path / "diag"
    argv = ["diagnose", "--checkpoint", str(ck), "--n", "24", "--eps", "0.1", "--out", str(out)]
    assert main([*argv, "--steps", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"thickness", "signature", "linearity", "rho"}
    assert set(summary["signature"]) == {"input", "hidden1"}
    res = np.load(out / "results.npz")
    valid = res["thickness_valid"]
    np.testing.assert_allclose(
        summary["thickness"]["mean"], np.mean(res["thickness"][valid]), rtol=1e-6
    )
    assert main(["diagnose", "--checkpoint", str(ck), "--what", "linearity"]) == 1


def test_thickness_authors_conventions_target_and_point_counting():
    """``target=`` and ``estimator="points"`` reproduce the authors' recipe: the band of
    ``p_i - p_target`` counted on the grid points, written out here directly."""
    import jax.numpy as jnp
    import numpy as np

    from geomrobust.measures import boundary_thickness

    w = jax.random.normal(jax.random.key(0), (6, 3))
    f = lambda z: z @ w  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (5, 6))
    xa = x + 2.0 * jax.random.normal(jax.random.key(2), (5, 6))
    target = (jnp.argmax(f(x), -1) + 1) % 3
    th = boundary_thickness(f, x, xa, target=target, estimator="points", num_points=128)
    ts = np.linspace(0, 1, 128)
    for n in range(5):
        pts = np.asarray(x[n])[None] + ts[:, None] * np.asarray(xa[n] - x[n])[None]
        p = np.asarray(jax.nn.softmax(f(jnp.asarray(pts, jnp.float32)), -1), np.float64)
        i, j = int(jnp.argmax(f(x[n : n + 1]))), int(target[n])
        g = p[:, i] - p[:, j]
        ref = np.linalg.norm(np.asarray(xa[n] - x[n])) * np.mean((g > 0) & (g < 0.75))
        assert int(th.adv_label[n]) == j
        np.testing.assert_allclose(float(th.thickness[n]), ref, rtol=1e-5)
    exact = boundary_thickness(f, x, xa, target=target, num_points=128)
    assert np.all(np.isfinite(np.asarray(exact.thickness)))
    with pytest.raises(ValueError, match="estimator must be"):
        boundary_thickness(f, x, xa, estimator="riemann")
