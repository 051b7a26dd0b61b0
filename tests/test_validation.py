"""Bad inputs at every public entry point: one ``ValueError``/``TypeError`` that names the
argument, what was expected and what was given; checks run eagerly, once, outside jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import mlp

import geomrobust as gr
from geomrobust import measures
from geomrobust._validation import check_bounds, check_classifier, check_int

SHAPE = (2, 3)
N, K, D = 3, 4, 6
F = mlp(jax.random.key(0), SHAPE, K, width=8, dtype=jnp.float64)
X = jax.random.normal(jax.random.key(1), (N, *SHAPE), jnp.float64)
Y = jnp.argmax(F(X), -1).astype(jnp.int32)
KEY = jax.random.key(2)
U = jax.random.normal(jax.random.key(3), (N, *SHAPE), jnp.float64)
U = U / jnp.linalg.norm(U.reshape(N, -1), axis=1).reshape(N, 1, 1)
DIRS = U  # (M=3, *s) shared directions, unit
BASIS = jnp.linalg.qr(jax.random.normal(jax.random.key(4), (D, 2), jnp.float64))[0]
OTHER = (Y + 1) % K


def scalar_fn(x):  # (N,) outputs: not logits
    return F(x)[:, 0]


def one_class(x):
    return F(x)[:, :1]


def int_logits(x):
    return jnp.argmax(F(x), -1)[:, None] * jnp.ones((1, K), jnp.int32)


NAN_X = X.at[1, 0, 0].set(jnp.nan)
INF_X = X.at[0, 1, 2].set(jnp.inf)

# Every entry point, as a call that takes (logits_fn, x, y) to vary the common arguments.
ENTRY = {
    "deepfool": lambda f, x, y: gr.deepfool(f, x, y),
    "deepfool_dataset": lambda f, x, y: gr.deepfool_dataset(f, x, y, slots=2, chunk_size=4),
    "margin_along": lambda f, x, y: gr.margin_along(f, x, DIRS, max_dist=1.0),
    "refine_boundary": lambda f, x, y: gr.refine_boundary(f, x, x + 1.0, y),
    "subspace_margins": lambda f, x, y: gr.subspace_margins(f, x, y, [BASIS]),
    "random_subspace_margins": lambda f, x, y: gr.random_subspace_margins(f, x, y, dim=2, key=KEY),
    "principal_curvatures": lambda f, x, y: gr.principal_curvatures(
        f, x, y, (y + 1) % 2, num=2, key=KEY
    ),
    "normal_curvature": lambda f, x, y: gr.normal_curvature(f, x, y, (y + 1) % 2, U),
    "loss_hessian_eigs": lambda f, x, y: gr.loss_hessian_eigs(f, x, y, num=2, key=KEY),
    "fgsm": lambda f, x, y: gr.fgsm(f, x, y, eps=0.1),
    "pgd": lambda f, x, y: gr.pgd(f, x, y, key=KEY, eps=0.1, steps=2),
    "robust_accuracy": lambda f, x, y: gr.robust_accuracy(f, x, y, [0.1], key=KEY, steps=2),
    "sparsefool": lambda f, x, y: gr.sparsefool(f, x, y, bounds=(-5.0, 5.0)),
    "universal_perturbation": lambda f, x, y: gr.universal_perturbation(f, x, key=KEY, eps=0.5),
    "boundary_thickness": lambda f, x, y: gr.boundary_thickness(f, x, x + 1.0, y),
    "margin_signature": lambda f, x, y: gr.margin_signature(f, x, y),
    "local_linearity": lambda f, x, y: measures.local_linearity(f, x, y, eps=0.1, key=KEY),
    "subspace_fooling_rate": lambda f, x, y: measures.subspace_fooling_rate(
        f, x, BASIS, eps=0.5, key=KEY
    ),
}
USES_Y = set(ENTRY) - {"margin_along", "universal_perturbation", "subspace_fooling_rate"}

COMMON = {
    # case: (logits_fn, x, y, error type, message pattern)
    "nan-x": (F, NAN_X, Y, ValueError, r"contains 1 non-finite value"),
    "inf-x": (F, INF_X, Y, ValueError, r"contains 1 non-finite value"),
    "integer-x": (F, X.astype(jnp.int32), Y, TypeError, r"floating-point array, got dtype int32"),
    "unbatched-x": (F, X[0, 0], Y, ValueError, r"batch of shape \(N, \*input_shape\)"),
    "wrong-input-shape": (F, jnp.ones((N, 5), X.dtype), Y, ValueError, r"logits_fn cannot be"),
    "scalar-output": (scalar_fn, X, Y, ValueError, r"logits of shape \(N, K\).*got \(3,\)"),
    "one-class": (one_class, X, Y, ValueError, r"at least 2 classes \(K >= 2\).*K=1"),
    "integer-logits": (int_logits, X, Y, TypeError, r"floating logits, got dtype int"),
}
Y_CASES = {
    "float-y": (Y.astype(jnp.float64), TypeError, r"integer class labels, got dtype float64"),
    "y-out-of-range": (Y.at[0].set(K), ValueError, r"must lie in \[0, 4\), got values in"),
    "negative-y": (Y.at[0].set(-1), ValueError, r"must lie in \[0, 4\)"),
    "y-wrong-shape": (Y[:2], ValueError, r"shape \(3,\) to match x, got \(2,\)"),
}


@pytest.mark.parametrize("case", sorted(COMMON))
@pytest.mark.parametrize("entry", sorted(ENTRY))
def test_common_bad_inputs(entry, case):
    f, x, y, error, pattern = COMMON[case]
    with pytest.raises(error, match=pattern) as info:
        ENTRY[entry](f, x, y)
    msg = str(info.value)
    assert len(msg) < 400 and "\n" not in msg


@pytest.mark.parametrize("case", sorted(Y_CASES))
@pytest.mark.parametrize("entry", sorted(USES_Y))
def test_bad_labels(entry, case):
    y, error, pattern = Y_CASES[case]
    name = "k" if entry in ("principal_curvatures", "normal_curvature") else "y"
    with pytest.raises(error, match=pattern) as info:
        if name == "k":
            ENTRY[entry](F, X, Y) if False else _curv_with_bad_label(entry, y)
        else:
            ENTRY[entry](F, X, y)
    assert str(info.value).startswith(("y ", "k ", "y must", "k must"))


def _curv_with_bad_label(entry, bad):
    if entry == "principal_curvatures":
        return gr.principal_curvatures(F, X, Y, bad, num=2, key=KEY)
    return gr.normal_curvature(F, X, Y, bad, U)


NONORTHO = BASIS.at[0, 0].add(0.5)
SPECIFIC = {
    # name: (call, error type, pattern)
    "deepfool norm=1": (lambda: gr.deepfool(F, X, norm=1), ValueError, r"norm"),
    "deepfool norm='l2'": (lambda: gr.deepfool(F, X, norm="l2"), (ValueError, TypeError), "norm"),
    "deepfool overshoot<0": (lambda: gr.deepfool(F, X, overshoot=-0.1), ValueError, "overshoot"),
    "deepfool overshoot=nan": (
        lambda: gr.deepfool(F, X, overshoot=float("nan")),
        ValueError,
        "overshoot",
    ),
    "deepfool steps=-1": (lambda: gr.deepfool(F, X, steps=-1), ValueError, "steps"),
    "deepfool steps=2.5": (lambda: gr.deepfool(F, X, steps=2.5), ValueError, "steps"),
    "deepfool candidates=0": (lambda: gr.deepfool(F, X, candidates=0), ValueError, "candidates"),
    "deepfool non-orthonormal subspace": (
        lambda: gr.deepfool(F, X, subspace=NONORTHO),
        ValueError,
        r"subspace must have orthonormal columns",
    ),
    "deepfool subspace wrong D": (
        lambda: gr.deepfool(F, X, subspace=jnp.eye(5)[:, :2]),
        ValueError,
        r"subspace must be a \(D, s\) basis with D=6",
    ),
    "deepfool subspace 1-D": (
        lambda: gr.deepfool(F, X, subspace=BASIS[:, 0]),
        ValueError,
        r"subspace must be a \(D, s\) matrix",
    ),
    "deepfool subspace with Linf": (
        lambda: gr.deepfool(F, X, norm=jnp.inf, subspace=BASIS),
        ValueError,
        "norm=2 only",
    ),
    "deepfool bounds lo>hi": (
        lambda: gr.deepfool(F, X, bounds=(1.0, 0.0)),
        ValueError,
        r"bounds must satisfy lo <= hi",
    ),
    "deepfool bounds not a pair": (
        lambda: gr.deepfool(F, X, bounds=(0.0,)),
        ValueError,
        r"bounds must be .*a pair",
    ),
    "deepfool_dataset slots=0": (
        lambda: gr.deepfool_dataset(F, X, slots=0),
        (ValueError, TypeError),
        "slots",
    ),
    "margin_along non-unit directions": (
        lambda: gr.margin_along(F, X, 2 * DIRS, max_dist=1.0),
        ValueError,
        r"directions must be unit vectors.*norm of 2",
    ),
    "margin_along wrong direction shape": (
        lambda: gr.margin_along(F, X, jnp.ones((3, 6)), max_dist=1.0),
        ValueError,
        r"directions must have shape \(M, \*s\)",
    ),
    "margin_along nan direction": (
        lambda: gr.margin_along(F, X, DIRS.at[0, 0, 0].set(jnp.nan), max_dist=1.0),
        ValueError,
        r"directions",
    ),
    "margin_along max_dist=0": (
        lambda: gr.margin_along(F, X, DIRS, max_dist=0.0),
        ValueError,
        r"max_dist must be a positive finite number, got 0\.0",
    ),
    "margin_along max_dist=inf": (
        lambda: gr.margin_along(F, X, DIRS, max_dist=float("inf")),
        ValueError,
        r"max_dist must be a positive finite",
    ),
    "margin_along tol<0": (
        lambda: gr.margin_along(F, X, DIRS, max_dist=1.0, tol=-1e-3),
        ValueError,
        r"tol must be a positive",
    ),
    "margin_along tol='a'": (
        lambda: gr.margin_along(F, X, DIRS, max_dist=1.0, tol="a"),
        TypeError,
        r"tol must be a number",
    ),
    "refine_boundary x_adv shape": (
        lambda: gr.refine_boundary(F, X, X[:2], Y),
        ValueError,
        r"x_adv must have the shape of x",
    ),
    "refine_boundary tol=0": (
        lambda: gr.refine_boundary(F, X, X + 1, Y, tol=0.0),
        ValueError,
        r"tol must be a positive",
    ),
    "refine_boundary nan x_adv": (
        lambda: gr.refine_boundary(F, X, NAN_X, Y),
        ValueError,
        r"x_adv contains 1 non-finite",
    ),
    "subspace_margins empty list": (
        lambda: gr.subspace_margins(F, X, Y, []),
        ValueError,
        r"subspaces",
    ),
    "subspace_margins non-orthonormal": (
        lambda: gr.subspace_margins(F, X, Y, [BASIS, NONORTHO]),
        ValueError,
        r"orthonormal columns",
    ),
    "random_subspace_margins dim=0": (
        lambda: gr.random_subspace_margins(F, X, Y, dim=0, key=KEY),
        ValueError,
        r"dim",
    ),
    "random_subspace_margins dim>D": (
        lambda: gr.random_subspace_margins(F, X, Y, dim=7, key=KEY),
        ValueError,
        r"dim",
    ),
    "principal_curvatures num=0": (
        lambda: gr.principal_curvatures(F, X, Y, OTHER, num=0, key=KEY),
        ValueError,
        r"num",
    ),
    "principal_curvatures num>D-1": (
        lambda: gr.principal_curvatures(F, X, Y, OTHER, num=6, key=KEY),
        ValueError,
        r"num",
    ),
    "principal_curvatures k == y": (
        lambda: gr.principal_curvatures(F, X, Y, Y, num=2, key=KEY),
        ValueError,
        r"y and k must differ",
    ),
    "principal_curvatures method='svd'": (
        lambda: gr.principal_curvatures(F, X, Y, OTHER, num=2, key=KEY, method="svd"),
        ValueError,
        r"method",
    ),
    "principal_curvatures nan z": (
        lambda: gr.principal_curvatures(F, NAN_X, Y, OTHER, num=2, key=KEY),
        ValueError,
        r"z contains 1 non-finite",
    ),
    "normal_curvature u wrong shape": (
        lambda: gr.normal_curvature(F, X, Y, OTHER, U[:2]),
        ValueError,
        r"u",
    ),
    "loss_hessian_eigs num>D": (
        lambda: gr.loss_hessian_eigs(F, X, Y, num=7, key=KEY),
        ValueError,
        r"num",
    ),
    "fgsm eps<0": (lambda: gr.fgsm(F, X, Y, eps=-0.1), ValueError, r"eps must be >= 0"),
    "fgsm eps=nan": (lambda: gr.fgsm(F, X, Y, eps=float("nan")), ValueError, r"eps"),
    "fgsm norm=1": (lambda: gr.fgsm(F, X, Y, eps=0.1, norm=1), ValueError, r"norm must be p > 1"),
    "pgd steps=-1": (
        lambda: gr.pgd(F, X, Y, key=KEY, eps=0.1, steps=-1),
        ValueError,
        r"steps must be a non-negative integer, got -1",
    ),
    "pgd step_size<0": (
        lambda: gr.pgd(F, X, Y, key=KEY, eps=0.1, step_size=-1.0),
        ValueError,
        r"step_size",
    ),
    "pgd bounds lo>hi": (
        lambda: gr.pgd(F, X, Y, key=KEY, eps=0.1, bounds=(1.0, 0.0)),
        ValueError,
        r"bounds must satisfy lo <= hi",
    ),
    "pgd target out of range": (
        lambda: gr.pgd(F, X, Y, key=KEY, eps=0.1, target=Y.at[0].set(9)),
        ValueError,
        r"target must lie in \[0, 4\)",
    ),
    "pgd key is an int": (
        lambda: gr.pgd(F, X, Y, key=0, eps=0.1),
        TypeError,
        r"key must be a JAX PRNG key",
    ),
    "robust_accuracy no eps": (
        lambda: gr.robust_accuracy(F, X, Y, [], key=KEY),
        ValueError,
        r"eps must be a non-empty",
    ),
    "robust_accuracy attack='cw'": (
        lambda: gr.robust_accuracy(F, X, Y, [0.1], key=KEY, attack="cw"),
        ValueError,
        r"attack",
    ),
    "sparsefool lambda<=0": (
        lambda: gr.sparsefool(F, X, Y, lambda_=0.0, bounds=None),
        ValueError,
        r"lambda_ must be a positive",
    ),
    "universal eps<0": (
        lambda: gr.universal_perturbation(F, X, key=KEY, eps=-1.0),
        ValueError,
        r"eps must be a positive",
    ),
    "universal delta=1.5": (
        lambda: gr.universal_perturbation(F, X, key=KEY, eps=1.0, delta=1.5),
        ValueError,
        r"delta",
    ),
    "boundary_thickness beta<alpha": (
        lambda: gr.boundary_thickness(F, X, X + 1, Y, alpha=0.5, beta=0.2),
        ValueError,
        r"alpha|beta",
    ),
    "summarize_bands shape mismatch": (
        lambda: measures.summarize_bands(np.ones((2, 3)), np.ones((2, 4), bool)),
        ValueError,
        r"converged",
    ),
    "normalized_robustness shape mismatch": (
        lambda: gr.normalized_robustness(np.ones(2), X),
        ValueError,
        r"margin",
    ),
    "dct_subspaces block too large": (
        lambda: gr.dct_subspaces((4, 4, 1), 8, 1),
        ValueError,
        r"block",
    ),
    "dct_subspaces stride=0": (lambda: gr.dct_subspaces((8, 8, 1), 2, 0), ValueError, r"stride"),
}


@pytest.mark.parametrize("case", sorted(SPECIFIC))
def test_specific_bad_inputs(case):
    call, error, pattern = SPECIFIC[case]
    with pytest.raises(error, match=pattern) as info:
        call()
    assert len(str(info.value)) < 500


def test_checks_skip_tracers_and_run_once_outside_jit():
    """Under jit the eager checks are skipped (they see tracers) and nothing raises."""
    out = jax.jit(lambda x: gr.deepfool(F, x).margin)(X)
    assert out.shape == (N,) and out.dtype == X.dtype
    fn = jax.jit(lambda x, d: gr.margin_along(F, x, d, max_dist=2.0).margin)
    assert fn(X, DIRS).shape == (N, N)


def test_helpers():
    assert check_classifier(F, X) == K
    with pytest.raises(TypeError, match="logits_fn must be a callable"):
        check_classifier(3, X)
    assert check_int(np.int64(3), "n") == 3
    with pytest.raises(TypeError, match="n must be an integer >= 1, got True"):
        check_int(True, "n")
    with pytest.raises(ValueError, match="bounds must be finite"):
        check_bounds((0.0, np.inf))
    assert check_bounds(None) is None


def test_normal_curvature_normalizes_u_explicitly():
    """``u`` is projected on the tangent space and normalized (documented), so its scale
    does not matter; a ``u`` along the normal has no tangent part and raises."""
    off = dict(boundary_tol=np.inf)  # X are generic points: the level sets through them
    a = gr.normal_curvature(F, X, Y, OTHER, U, **off)
    b = gr.normal_curvature(F, X, Y, OTHER, 3.0 * U, **off)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-12)


def _never_called(x):
    raise AssertionError("the classifier ran before the settings were checked")


IMG = jnp.full((2, 4, 4, 1), 0.5)
IMG_Y = jnp.zeros(2, jnp.int32)


def _heat(**kw):
    return measures.fourier_heat_map(_never_called, IMG, IMG_Y, eps=1.0, key=KEY, **kw)


def _amap(**kw):
    def init(key):
        raise AssertionError("init ran before the settings were checked")

    return measures.fourier_accuracy_map(init, lambda p, x: x, (4, 4), key=KEY, **kw)


def _noise_errors():
    return measures.gaussian_noise_errors(F, X, Y, sigmas=[0.1], key=KEY, samples=4)


NAN = float("nan")
# Settings accepted silently (or failing with a raw error) before: a ValueError naming the
# argument, the value and the accepted range, before the classifier runs.
SETTINGS = {
    "fmn alpha_max=nan": (lambda: gr.fmn(_never_called, X, alpha_max=NAN), r"alpha_max.*nan"),
    "fmn alpha_max<0": (lambda: gr.fmn(_never_called, X, alpha_max=-1.0), r"alpha_max.*-1"),
    "fmn gamma=nan": (lambda: gr.fmn(_never_called, X, gamma=NAN), r"gamma.*nan"),
    "fmn gamma=1": (lambda: gr.fmn(_never_called, X, gamma=1.0), r"gamma must lie in \(0, 1\)"),
    "fmn gamma_min=1.5": (
        lambda: gr.fmn(_never_called, X, gamma_min=1.5),
        r"gamma_min must lie in \[0, 1\).*1.5",
    ),
    "square p_init=1.5": (
        lambda: gr.search.square_attack(_never_called, X, Y, key=KEY, eps=0.1, p_init=1.5),
        r"p_init must lie in \(0, 1\].*1.5",
    ),
    "heat map phase=nan": (lambda: _heat(phase=NAN), r"phase must be a finite.*nan"),
    "heat map frequencies=[1, 2, 3]": (
        lambda: _heat(frequencies=[1, 2, 3]),
        r"frequencies must be a non-empty sequence of \(i, j\) integer pairs.*\[1, 2, 3\]",
    ),
    "heat map frequencies=[1, 2, 3, 4]": (  # was read as two pairs silently
        lambda: _heat(frequencies=[1, 2, 3, 4]),
        r"\(i, j\) integer pairs",
    ),
    "heat map frequencies=[(0.5, 1)]": (
        lambda: _heat(frequencies=[(0.5, 1)]),
        r"integer \(i, j\) pairs",
    ),
    "heat map stride=0": (lambda: _heat(stride=0), r"stride must be an integer >= 1, got 0"),
    "accuracy map eps=nan": (lambda: _amap(eps=NAN), r"eps must be a positive.*nan"),
    "accuracy map sigma<0": (lambda: _amap(sigma=-1.0), r"sigma must be a non-negative.*-1"),
    "accuracy map chunk_size=0": (lambda: _amap(chunk_size=0), r"chunk_size must be.*>= 1.*0"),
    "accuracy map batch_size=0": (lambda: _amap(batch_size=0), r"batch_size must be.*>= 1.*0"),
    "accuracy map frequencies=[1, 2, 3]": (
        lambda: _amap(frequencies=[1, 2, 3]),
        r"\(i, j\) integer pairs",
    ),
    "class_synthesis eps=0": (
        lambda: measures.class_synthesis(_never_called, X, eps=0),
        r"eps must be a positive finite number, got 0",
    ),
    "class_synthesis steps=0": (
        lambda: measures.class_synthesis(_never_called, X, eps=1.0, steps=0),
        r"steps must be an integer >= 1, got 0",
    ),
    "minimal_margin norm=inf searches=('cw',)": (
        lambda: gr.minimal_margin(_never_called, X, norm=jnp.inf, searches=("cw",)),
        r"C&W is an L2 search.*'deepfool' or 'fmn'",
    ),
    "corrupt ids of the wrong length": (
        lambda: gr.data.corrupt(IMG, "gaussian_noise", 1, key=KEY, ids=[0, 1, 2]),
        r"ids must be \(2,\) integers.*shape \(3,\)",
    ),
}


@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_bad_settings_name_argument_value_and_range(case):
    call, pattern = SETTINGS[case]
    with pytest.raises(ValueError, match=pattern) as info:
        call()
    assert len(str(info.value)) < 500


def test_noise_vs_margin_refuses_negative_margins():
    res = _noise_errors()
    margin = np.array([0.5, -0.2, np.inf])
    with pytest.raises(ValueError, match=r"distances >= 0.*-0.2.*example 1"):
        measures.noise_vs_margin(res, margin)
    out = measures.noise_vs_margin(res, np.abs(margin))  # the fix works
    assert out.predicted.shape[0] == N
