"""Minimal-norm searches (FMN, C&W L2, minimal_margin) against closed forms: affine
classifiers (L2 and Linf distances |F| / ||w||_q) and the inside of a ball (distance
r - ||x|| in L2, the root of a quadratic in Linf); APGD on affine classifiers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import affine, mlp
from conftest import RTOL

from geomrobust import Classifier
from geomrobust.search import (
    apgd,
    apgd_checkpoints,
    cw_init,
    cw_l2,
    cw_step,
    deepfool,
    fmn,
    minimal_margin,
    square_attack,
)

D, N = 6, 16


def _binary_affine(dtype, seed=0):
    """A 2-class affine classifier and points at known distances 0.5..2 (L2) from its
    boundary, on both sides."""
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal((D, 2)), dtype)
    b = jnp.asarray(rng.standard_normal(2), dtype)
    u = w[:, 0] - w[:, 1]
    nu = jnp.linalg.norm(u)
    x0 = jnp.asarray(rng.standard_normal((N, D)), dtype)
    x0 = x0 - ((x0 @ u + b[0] - b[1]) / nu**2)[:, None] * u  # on the boundary
    d = jnp.asarray(rng.uniform(0.5, 2.0, N) * rng.choice([-1.0, 1.0], N), dtype)
    x = x0 + d[:, None] * u / nu
    f = affine(w, b)
    y = jnp.argmax(f(x), -1).astype(jnp.int32)
    exact = {2: jnp.abs(d), jnp.inf: jnp.abs(d) * nu / jnp.sum(jnp.abs(u))}
    return f, x, y, exact


def _multi_affine(dtype, k=4, seed=1):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal((D, k)), dtype)
    b = jnp.asarray(rng.standard_normal(k), dtype)
    x = jnp.asarray(rng.standard_normal((N, D)), dtype)
    f = affine(w, b)
    lg = f(x)
    y = jnp.argmax(lg, -1)
    F = lg[jnp.arange(N), y][:, None] - lg  # (N, K) >= 0
    W = w[:, y].T[:, None, :] - w.T[None]  # (N, K, D)
    other = jnp.arange(k)[None] != y[:, None]
    exact = {
        2: jnp.where(other, F / jnp.linalg.norm(W, axis=-1), jnp.inf).min(1),
        jnp.inf: jnp.where(other, F / jnp.abs(W).sum(-1), jnp.inf).min(1),
    }
    return f, x, y.astype(jnp.int32), exact


def _ball(dtype, r=2.0, seed=2):
    """Class 0 inside the ball of radius r (logits ``[(r² - ||x||²) / 2r, 0]``), points at
    radii 0.3 r .. 0.8 r: L2 distance ``r - ||x||``; Linf distance ``t`` with
    ``||(|x| + t)||_2 = r``, i.e. ``D t² + 2 t Σ|x_i| + ||x||² - r² = 0``."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((N, D))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a = rng.uniform(0.3, 0.8, N) * r
    xn = v * a[:, None]

    def f(z):
        s = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=1)
        return jnp.stack([(r * r - s) / (2 * r), jnp.zeros_like(s)], axis=1)

    s1 = np.abs(xn).sum(1)
    t = (-2 * s1 + np.sqrt(4 * s1**2 - 4 * D * (a**2 - r * r))) / (2 * D)
    exact = {2: jnp.asarray(r - a, dtype), jnp.inf: jnp.asarray(t, dtype)}
    return f, jnp.asarray(xn, dtype), jnp.zeros(N, jnp.int32), exact


def _rel(m, exact):
    return np.asarray(m, np.float64) / np.asarray(exact, np.float64) - 1


CW = dict(steps=200, binary_steps=6, initial_const=1.0)


@pytest.mark.parametrize("norm", [2, jnp.inf])
def test_fmn_exact_on_binary_affine_and_ball(dtype, norm):
    for problem in (_binary_affine, _ball):
        f, x, y, exact = problem(dtype)
        r = fmn(f, x, y, norm=norm)
        assert r.margin.dtype == dtype and bool(r.converged.all())
        rel = _rel(r.margin, exact[norm])
        assert rel.min() > -1e-4 and rel.max() < 0.01, (problem.__name__, rel)
        # every returned point is adversarial, and its norm is the margin
        assert bool((jnp.argmax(f(x + r.perturbation), -1) != y).all())
        flat = r.perturbation.reshape(N, -1)
        nrm = jnp.max(jnp.abs(flat), 1) if norm == jnp.inf else jnp.linalg.norm(flat, axis=1)
        np.testing.assert_allclose(nrm, r.margin, rtol=1e-5)


def test_cw_exact_on_binary_affine_and_ball(dtype):
    for problem in (_binary_affine, _ball):
        f, x, y, exact = problem(dtype)
        r = cw_l2(f, x, y, **CW)
        assert r.margin.dtype == dtype and bool(r.converged.all())
        rel = _rel(r.margin, exact[2])
        assert rel.min() > -1e-4 and rel.max() < 0.01, (problem.__name__, rel)
        assert bool((jnp.argmax(f(x + r.perturbation), -1) != y).all())


def test_cw_abort_early_is_per_example():
    """With early abort an example ends a round when its own objective stalls: fewer steps,
    a valid margin, and each example's result independent of the others in the batch."""
    f, x, y, exact = _binary_affine(jnp.float64)
    full = cw_l2(f, x, y, **CW)
    early = cw_l2(f, x, y, abort_early=True, **CW)
    assert bool(early.converged.all())
    assert int(early.iterations.max()) < int(full.iterations.max()) == 200 * 6
    assert (_rel(early.margin, exact[2]) > -1e-4).all() and (
        _rel(early.margin, exact[2]) < 0.05
    ).all()
    part = cw_l2(f, x[5:], y[5:], abort_early=True, **CW)
    np.testing.assert_allclose(part.margin, early.margin[5:], rtol=1e-10)
    np.testing.assert_array_equal(part.iterations, early.iterations[5:])


def test_cw_confidence_reaches_the_kappa_level_set(dtype):
    """With ``confidence = κ`` an adversarial point needs ``max_{j != y} f_j > f_y + κ``
    (Carlini's ``compare``): on a binary affine classifier ``f_y - f_j = F - u·δ``, so the
    smallest such perturbation has norm ``(F + κ) / ||u|| = |d| + κ / ||u||``."""
    f, x, y, exact = _binary_affine(dtype)
    kappa = 0.5
    u = f(jnp.eye(D, dtype=dtype)) - f(jnp.zeros((1, D), dtype))
    nu = jnp.linalg.norm(u[:, 0] - u[:, 1])
    r = cw_l2(f, x, y, confidence=kappa, **CW)
    assert bool(r.converged.all())
    rel = _rel(r.margin, exact[2] + kappa / nu)
    assert rel.min() > -1e-4 and rel.max() < 0.01, rel
    lg = f(x + r.perturbation)
    idx = jnp.arange(N)
    assert bool((lg[idx, 1 - y] - lg[idx, y] > kappa).all())


def test_cw_objective_is_the_reference_value(dtype):
    """``info.loss`` is ``||z - x||² + c · max(f_y - max_{j != y} f_j + κ, 0)`` (the value
    the early-abort test compares, as in Carlini & Wagner's code and Foolbox)."""
    f, x, y, _ = _binary_affine(dtype)
    kappa, c = 0.3, 2.0
    s = cw_init(f, x, y, initial_const=c)
    s, _ = cw_step(f, s, steps=5, confidence=kappa)  # move off x
    z = x + (s.w - s.w0)
    _, info = cw_step(f, s, steps=5, confidence=kappa)
    lg = f(z)
    gap = lg[jnp.arange(N), y] - lg[jnp.arange(N), 1 - y]
    want = jnp.sum((z - x) ** 2, 1) + c * jnp.maximum(gap + kappa, 0)
    np.testing.assert_allclose(info.loss, want, rtol=RTOL[np.dtype(dtype)])


def test_cw_abort_step_is_not_recorded():
    """At a check where the objective stalled, the round ends before the point is recorded
    (the reference code breaks out of its loop first): an adversarial point evaluated at
    that step is neither the best nor a success of the round; without ``abort_early`` it is."""
    f, x, y, _ = _binary_affine(jnp.float64)
    u = f(jnp.eye(D)) - f(jnp.zeros((1, D)))
    w = u[:, 0] - u[:, 1]
    sgn = jnp.where(y == 0, -1.0, 1.0)[:, None]  # towards the other class
    s = cw_init(f, x, y, initial_const=1.0)
    far = sgn * (2.5 * w / jnp.linalg.norm(w))  # beyond the boundary (|d| <= 2)
    s = s._replace(w=far, check_loss=jnp.full((N,), -1.0))  # stalled at the first check
    kw = dict(steps=10, binary_steps=3)
    ab, info = cw_step(f, s, abort_early=True, **kw)
    assert not bool(info.adversarial.any()) and bool(jnp.isinf(ab.best_norm).all())
    assert bool((ab.inner == 0).all()) and bool((ab.rounds == 1).all())
    assert bool((ab.c_lo == 1.0).all()) and bool(jnp.isinf(ab.c_hi).all())  # no success
    on, info = cw_step(f, s, abort_early=False, **kw)
    assert bool(info.adversarial.all()) and bool(on.found.all())
    np.testing.assert_allclose(on.best_norm, 2.5, rtol=1e-12)


def test_cw_last_constant_repeats_the_smallest_success():
    """With ``binary_steps >= 10`` the last constant is ``min(c_hi, 1e10)`` (Carlini's
    repeat); below 10 the binary search's midpoint."""
    f, x, y, _ = _binary_affine(jnp.float64)
    for b in (9, 10):
        s = cw_init(f, x, y, initial_const=1e-3)
        for _ in range(2 * (b - 1)):  # two steps per constant; the first Adam step,
            # 2 sign(∇L), crosses the boundary (|d| <= 2): every constant succeeds
            s, _ = cw_step(f, s, steps=2, binary_steps=b, stepsize=2.0)
        assert bool((s.rounds == b - 1).all()) and bool((s.c_hi < 1e-3).all())
        want = jnp.minimum(s.c_hi, 1e10) if b == 10 else (s.c_lo + s.c_hi) / 2
        np.testing.assert_array_equal(s.const, want)


def test_cw_in_a_box_stays_in_the_box():
    f, x, y, exact = _binary_affine(jnp.float64)
    lo, hi = float(x.min()) - 3.0, float(x.max()) + 3.0  # a box that holds the solutions
    r = cw_l2(f, x, y, bounds=(lo, hi), **dict(CW, stepsize=0.01 * 2 / (hi - lo)))
    adv = x + r.perturbation
    assert bool(r.converged.all()) and float(adv.min()) >= lo and float(adv.max()) <= hi
    rel = _rel(r.margin, exact[2])
    assert rel.min() > -1e-4 and rel.max() < 0.01, rel


@pytest.mark.parametrize("norm", [2, jnp.inf])
def test_minimal_margin_exact_on_multiclass_affine_and_ball(dtype, norm):
    """Several classes: FMN and C&W follow the best other class and may end on a farther
    boundary (upper bounds); DeepFool (all classes) and the minimum are exact."""
    f, x, y, exact = _multi_affine(dtype)
    mm = minimal_margin(f, x, y, norm=norm, searches=("deepfool", "fmn"),
                        deepfool_kw=dict(overshoot=1e-3))  # fmt: skip
    assert bool(mm.converged.all()) and mm.margin.dtype == dtype
    rel = _rel(mm.margin, exact[norm])
    assert rel.min() > -1e-4 and rel.max() < 0.01, rel
    for s in range(len(mm.searches)):  # every search is an upper bound
        assert (_rel(mm.margins[s], exact[norm]) > -1e-4).all()
    # on the ball DeepFool's linearization overshoots: (r² - a²) / 2a > r - a
    f, x, y, exact = _ball(dtype)
    mm = minimal_margin(f, x, y, norm=norm, cw_kw=CW)
    assert mm.searches == (("deepfool", "fmn", "cw") if norm == 2 else ("deepfool", "fmn"))
    rel = _rel(mm.margin, exact[norm])
    assert rel.min() > -1e-4 and rel.max() < 0.01, rel
    assert bool((mm.deepfool_ratio > 1.1).all())
    # DeepFool's own point overshoots, so every minimum is below it: FMN or C&W, or DeepFool's
    # point pulled back along its (radial) ray to the sphere
    m_df = mm.margins[0]
    assert bool((mm.margin < m_df).all())


def _affine_apply(params, x):
    w, b = params
    return x.reshape(x.shape[0], -1) @ w + b


def _affine_problem(dtype, k, seed, d=40, n=24):
    """A ``k``-class affine classifier in ``d`` dimensions and ``n`` random points with their
    exact L2 distance ``min_j (f_y - f_j) / ||w_y - w_j||`` to the decision boundary."""
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal((d, k)), dtype)
    b = jnp.asarray(rng.standard_normal(k), dtype)
    x = jnp.asarray(rng.standard_normal((n, d)), dtype)
    # weights as arguments: the problems of one shape share their compiled programs
    f = Classifier(_affine_apply, (w, b))
    lg = np.asarray(f(x), np.float64)
    y = lg.argmax(-1)
    wd = np.asarray(w, np.float64)
    gap = lg[np.arange(n), y][:, None] - lg  # (n, k)
    dist = np.linalg.norm(wd[:, y].T[:, None, :] - wd.T[None], axis=-1)  # (n, k)
    exact = np.where(np.arange(k)[None] != y[:, None], gap / np.where(dist > 0, dist, 1), np.inf)
    return f, x, jnp.asarray(y, jnp.int32), exact.min(1)


@pytest.mark.parametrize(("k", "seeds"), [(5, (0, 1, 2, 3)), (10, (0, 1))])
def test_minimal_margin_exact_on_random_multiclass_affine(dtype, k, seeds):
    """FMN (and C&W) can converge to the runner-up logit's boundary while the nearest boundary
    is another class's; DeepFool's direction finds it, and its point pulled back along its ray
    (no overshoot) is at the exact distance. Before: 1.02x (DeepFool's overshoot) on such
    points; with the default overshoot, every point now within 1e-3."""
    for seed in seeds:
        f, x, y, exact = _affine_problem(dtype, k, seed)
        mm = minimal_margin(f, x, y, searches=("deepfool", "fmn"), fmn_kw=dict(steps=40))
        assert bool(mm.converged.all()) and mm.margin.dtype == dtype
        rel = _rel(mm.margin, exact)
        assert np.abs(rel).max() < 1e-3, (k, seed, rel)
        # never above DeepFool without its overshoot (1 + 0.02), to the dtype's rounding
        slack = 1 + (1e-3 if dtype == jnp.float32 else 1e-6)
        assert bool((mm.margin <= mm.margins[0] / 1.02 * slack).all())
        adv = x + mm.perturbation
        assert bool((jnp.argmax(f(adv), -1) != y).all())
        np.testing.assert_array_equal(mm.adv_label, jnp.argmax(f(adv), -1))
        flat = np.asarray(mm.perturbation, np.float64).reshape(x.shape[0], -1)
        np.testing.assert_allclose(np.linalg.norm(flat, axis=1), mm.margin, rtol=1e-5)


def test_minimal_margin_exact_inside_a_ball(dtype):
    """Inside a ball (a sphere boundary) DeepFool overshoots, but its ray is radial: the
    minimum is exact to 1e-3 even with DeepFool alone."""
    f, x, y, exact = _ball(dtype)
    mm = minimal_margin(f, x, y, searches=("deepfool",))
    assert bool(mm.converged.all()) and bool((mm.found_by == 0).all())
    rel = _rel(mm.margin, exact[2])
    assert np.abs(rel).max() < 1e-3, rel
    assert bool((mm.deepfool_ratio > 1.1).all())  # DeepFool's own point is still loose


def test_minimal_margin_is_below_deepfool_for_every_example():
    """A tanh MLP on 8x8 inputs in the box [0, 1]: the minimum never exceeds DeepFool's
    margin, it re-tests adversarial, and the ratio is >= 1 exactly where it is finite."""
    f = mlp(jax.random.key(3), (8, 8, 1), 5, width=32)
    x = jax.random.uniform(jax.random.key(4), (24, 8, 8, 1))
    bounds = (0.0, 1.0)
    df = deepfool(f, x, bounds=bounds)
    mm = minimal_margin(f, x, bounds=bounds, fmn_kw=dict(steps=40),
                        cw_kw=dict(steps=40, binary_steps=3, initial_const=1.0))  # fmt: skip
    conv = np.asarray(df.converged)
    assert conv.mean() > 0.9
    assert bool((mm.margin[conv] <= df.margin[conv]).all())
    assert bool(mm.converged[conv].all())
    y = jnp.argmax(f(x), -1)
    adv = x + mm.perturbation
    assert bool((jnp.argmax(f(adv), -1) != y)[mm.converged].all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    np.testing.assert_array_equal(mm.adv_label[mm.converged], jnp.argmax(f(adv), -1)[mm.converged])
    ratio = np.asarray(mm.deepfool_ratio)
    assert (ratio[conv] >= 1.0).all() and np.isfinite(ratio[conv]).all()
    assert not np.isnan(ratio).any()
    # the better searches win most examples, and DeepFool is loose on some
    assert (np.asarray(mm.found_by) > 0).mean() > 0.5
    assert np.median(ratio[conv]) > 1.0


def test_minimal_margin_errors():
    f, x, y, _ = _binary_affine(jnp.float32)
    with pytest.raises(ValueError, match="searches must be"):
        minimal_margin(f, x, y, searches=("deepfool", "boundary"))
    with pytest.raises(ValueError, match="norm must be 2 or inf"):
        fmn(f, x, y, norm=3)
    with pytest.raises(ValueError, match="norm must be 2"):
        minimal_margin(f, x, y, norm=1.5)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        fmn(f, x, y, steps=0)
    with pytest.raises(ValueError, match="binary_steps"):
        cw_l2(f, x, y, binary_steps=0)
    # L-inf: C&W (an L2 attack) is left out; alone, nothing is left
    mm = minimal_margin(f, x, y, norm=jnp.inf, fmn_kw=dict(steps=10))
    assert mm.searches == ("deepfool", "fmn")
    with pytest.raises(ValueError, match=r"C&W is an L2 search.*add 'deepfool' or 'fmn'"):
        minimal_margin(f, x, y, norm=jnp.inf, searches=("cw",))


def test_apgd_checkpoints_follow_the_paper():
    """p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, Sec. 3.2)."""
    assert apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    assert apgd_checkpoints(10) == (3, 5, 6, 7, 8, 9)


@pytest.mark.parametrize("norm", [2, jnp.inf])
def test_apgd_on_binary_affine(dtype, norm):
    """Inside the exact margin nothing is found; just outside, every example is broken."""
    f, x, y, exact = _binary_affine(dtype)
    m = exact[norm]
    key = jax.random.key(0)
    inside = apgd(f, x, y, key=key, eps=0.98 * m, norm=norm, steps=20)
    outside = apgd(f, x, y, key=key, eps=1.02 * m, norm=norm, steps=20)
    assert not bool(inside.success.any()) and bool(outside.success.all())
    flat = outside.perturbation.reshape(N, -1)
    nrm = jnp.max(jnp.abs(flat), 1) if norm == jnp.inf else jnp.linalg.norm(flat, axis=1)
    assert bool((nrm <= 1.02 * m * (1 + 1e-5)).all())


def test_apgd_dlr_and_square_on_multiclass_affine(dtype):
    f, x, y, exact = _multi_affine(dtype)
    m = exact[jnp.inf]
    key = jax.random.key(1)
    for eps, want in ((0.98 * m, False), (3.0 * m, True)):
        r = apgd(f, x, y, key=key, eps=eps, loss="dlr", steps=30, restarts=2)
        s = square_attack(f, x, y, key=key, eps=eps, steps=200)
        if want:
            assert r.success.mean() > 0.9 and s.success.mean() > 0.5
        else:
            assert not bool(r.success.any()) and not bool(s.success.any())
    with pytest.raises(ValueError, match="at least 3 classes"):
        fb, xb, yb, _ = _binary_affine(dtype)
        apgd(fb, xb, yb, key=key, eps=0.1, loss="dlr")
