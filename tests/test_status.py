"""Every search, solver and attack says per example how it ended (docs/api.md, section 2):
an ``int8`` :class:`geomrobust.Status` array whose ``SUCCESS`` entries are exactly the
result's success field. On an affine 3-class classifier with one easy row (0.1 from the
boundary), one far row (5 from it) and one row whose logits are NaN, each entry point gives
the codes its definition implies, with a normal budget and with a budget too small."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust import Status
from geomrobust._status import STATUS_DTYPE

EASY, FAR, NAN = 0, 1, 2
X = jnp.array([[0.1, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 1.0]])
Y = jnp.array([0, 0, 0], jnp.int32)  # label 0 is also the argmax of a NaN row
KEY = jax.random.key(0)
S, F, N, M = Status.SUCCESS, Status.NONFINITE, Status.NOT_FOUND, Status.MAX_STEPS


def apply(params, x):
    """``f = (x_0, -x_0, x_1 - 5)``: label 0 for ``x_0 > 0``, the boundary ``x_0 = 0`` at L2
    and Linf distance ``x_0``; NaN logits where ``x_3 > 0.5``."""
    w, b = params
    logits = x @ w + b
    return jnp.where(x[:, 3:4] > 0.5, jnp.nan, logits)


W = jnp.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
CLF = gr.Classifier(apply, (W, jnp.array([0.0, 0.0, -5.0])))


def _check(res, success_field, expected, rows=None):
    """The contract, then the codes: ``status`` int8 of the success field's shape,
    ``success == (status == SUCCESS)``, and ``status[rows] == expected``."""
    status = np.asarray(res.status)
    ok = np.asarray(getattr(res, success_field))
    assert status.dtype == STATUS_DTYPE
    assert status.shape == ok.shape
    np.testing.assert_array_equal(ok, status == Status.SUCCESS)
    got = status if rows is None else status[rows]
    np.testing.assert_array_equal(got, np.asarray(expected, STATUS_DTYPE))


@pytest.mark.parametrize("form", ["host", "device", "jit", "box"])
def test_deepfool(form):
    if form == "jit":
        run = jax.jit(lambda x, steps: gr.deepfool(CLF, x, Y, steps=steps), static_argnums=1)
    elif form == "box":
        run = lambda x, steps: gr.deepfool(CLF, x, Y, steps=steps, bounds=(-10.0, 10.0))  # noqa: E731
    else:
        run = lambda x, steps: gr.deepfool_dataset(CLF, x, Y, steps=steps, loop=form)  # noqa: E731
    _check(run(X, 50), "converged", [S, S, F])
    _check(run(X, 0), "converged", [M, M, F])


def test_deepfool_zero_gradient_is_not_found():
    """A flat classifier: no boundary within reach, the search stops (NOT_FOUND)."""
    flat = gr.Classifier(lambda p, x: jnp.zeros((x.shape[0], 3)) + p, jnp.array([1.0, 0, 0]))
    _check(gr.deepfool(flat, X[:2], Y[:2]), "converged", [N, N])


def test_box_not_found():
    """In a box that ends before every boundary (``x_0 >= 0.05``, ``x_1 <= 1``), the search
    ends without a label change."""
    lo, hi = jnp.array([0.05, -1.0, -1.0, -1.0]), jnp.array([10.0, 1.0, 1.0, 1.0])
    res = gr.deepfool(CLF, X[:2], Y[:2], bounds=(lo, hi))
    _check(res, "converged", [N, N])


@pytest.mark.parametrize("loop", ["host", "device"])
def test_fmn(loop):
    _check(gr.fmn(CLF, X, Y, steps=30, loop=loop), "converged", [S, S, F])
    _check(gr.fmn(CLF, X, Y, steps=1, loop=loop), "converged", [M, F], [FAR, NAN])


def test_cw():
    _check(gr.cw_l2(CLF, X, Y, steps=1, binary_steps=1), "converged", [M, F], [FAR, NAN])
    res = gr.cw_l2(CLF, X, Y, steps=50, binary_steps=6, stepsize=0.05, initial_const=10.0)
    _check(res, "converged", [S, F], [EASY, NAN])


def test_minimal_margin():
    res = gr.search.minimal_margin(CLF, X, Y, fmn_kw=dict(steps=20),
                                   cw_kw=dict(steps=3, binary_steps=1))  # fmt: skip
    _check(res, "converged", [S, S, F])
    res = gr.search.minimal_margin(CLF, X, Y, searches=("deepfool", "fmn"),
                                   deepfool_kw=dict(steps=0), fmn_kw=dict(steps=1))  # fmt: skip
    _check(res, "converged", [M, F], [FAR, NAN])


def test_sparsefool():
    _check(gr.search.sparsefool(CLF, X, Y, bounds=(-10.0, 10.0)), "converged", [S, S, F])
    res = gr.search.sparsefool(CLF, X, Y, bounds=(-10.0, 10.0), steps=0)
    _check(res, "converged", [M, M, F])
    # the inner DeepFool out of budget: its status is passed on
    res = gr.search.sparsefool(CLF, X, Y, bounds=(-10.0, 10.0), deepfool_steps=0)
    _check(res, "converged", [M, M, F])


def test_refine_boundary():
    x_adv = X.at[:, 0].set(-3 * X[:, 0])
    x_adv = x_adv.at[FAR].set(X[FAR])  # not adversarial: no bracket
    res = gr.search.refine_boundary(CLF, X, x_adv, Y)
    _check(res, "converged", [S, N, F])
    res = gr.search.refine_boundary(CLF, X, x_adv, Y, steps=1, tol=1e-9)
    _check(res, "converged", [M, N, F])


@pytest.mark.parametrize("bisect_steps", [64, 0])
def test_margin_along(bisect_steps):
    d = jnp.array([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    res = gr.margin_along(CLF, X, d, max_dist=1.0, bisect_steps=bisect_steps)
    toward = S if bisect_steps else M
    _check(res, "converged", [[toward, N], [N, N], [F, F]])
    assert np.isinf(np.asarray(res.margin)[np.asarray(res.status) != S]).all()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd-device", "apgd", "square"])
def test_attacks(name):
    if name == "fgsm":
        res = gr.fgsm(CLF, X, Y, eps=0.5, norm=2)
    elif name.startswith("pgd"):
        loop = "device" if name == "pgd-device" else "host"
        res = gr.pgd(CLF, X, Y, key=KEY, eps=0.5, norm=2, steps=3, loop=loop)
    elif name == "apgd":
        res = gr.search.apgd(CLF, X, Y, key=KEY, eps=0.5, norm=2, steps=3)
    else:
        res = gr.search.square_attack(CLF, X, Y, key=KEY, eps=0.5, steps=5)
    _check(res, "success", [S, N, F])


def test_attacks_under_jit():
    res = jax.jit(lambda x: gr.pgd(CLF, x, Y, key=KEY, eps=0.5, norm=2, steps=3))(X)
    _check(res, "success", [S, N, F])


def test_class_synthesis():
    res = gr.measures.class_synthesis(CLF, X, eps=0.5, steps=3, classes=[1])
    _check(res, "success", [[S], [N], [F]])


def test_universal_perturbation_one_status():
    """One perturbation for the dataset: one (scalar) status."""
    x = X[:2]
    res = gr.search.universal_perturbation(CLF, x, key=KEY, eps=0.5, norm=2, delta=0.4)
    assert np.asarray(res.status).shape == () and res.status.dtype == STATUS_DTYPE
    assert bool(res.converged) == (res.status == S)
    assert res.status == M  # the far row is out of reach: rate 1/2 < 1 - delta
    res = gr.search.universal_perturbation(CLF, x, key=KEY, eps=0.5, norm=2, delta=0.6)
    assert res.status == S and res.converged


def test_margins_headline_names_the_failures():
    """The margins command's one-line summary says how many searches ended, and why."""
    from geomrobust.cli._margins_run import _headline

    head = {"method": "deepfool", "norm": 2, "clean_accuracy": 0.5}
    line = _headline({**head, "status": {"SUCCESS": 5, "MAX_STEPS": 2, "NONFINITE": 1}})
    assert line.endswith(", not converged: MAX_STEPS 2, NONFINITE 1")
    assert "not converged" not in _headline({**head, "status": {"SUCCESS": 5}})


def test_subspace_margins():
    """DeepFool inside a subspace: along ``e_0`` the boundary is reached; ``e_2`` moves no
    logit (zero projected gradients: NOT_FOUND)."""
    e = jnp.eye(4)
    res = gr.subspace_margins(CLF, X, Y, [e[:, :1], e[:, 2:3]])
    _check(res, "converged", [[S, S, F], [N, N, F]])


def test_boundary_points():
    """A boundary set says which step failed: DeepFool's own code, ``MISCLASSIFIED`` for an
    example already across (margin 0), ``NONFINITE`` first; ``valid == (status == SUCCESS)``."""
    from geomrobust.analyses import boundary_points

    x = jnp.concatenate([X, X[:1]])  # a last row labelled 1: misclassified (f_0 > f_1)
    y = jnp.array([0, 0, 0, 1], jnp.int32)
    mis = Status.MISCLASSIFIED
    res = boundary_points(CLF, x, y)
    _check(res, "valid", [S, S, F, mis])
    assert np.asarray(res.margin)[3] == 0.0 and bool(res.deepfool_converged[3])
    res = boundary_points(CLF, x, y, deepfool_steps=0)
    _check(res, "valid", [M, M, F, mis])
    # a DeepFool result passed in without status: its failures' reasons are unknown
    df = gr.deepfool(CLF, x, y, steps=0)
    legacy = type("Legacy", (), dict(perturbation=df.perturbation, margin=df.margin,
                                     converged=df.converged))  # fmt: skip
    res = boundary_points(CLF, x, y, deepfool=legacy)
    _check(res, "valid", [Status.UNKNOWN, Status.UNKNOWN, F, mis])


def test_status_from_success():
    """A saved result without status (an earlier release): SUCCESS where it succeeded,
    UNKNOWN elsewhere, int8, any shape."""
    from geomrobust._status import status_from_success

    got = status_from_success(np.array([[True, False], [False, True]]))
    assert got.dtype == STATUS_DTYPE
    np.testing.assert_array_equal(got, [[S, Status.UNKNOWN], [Status.UNKNOWN, S]])
    assert Status.describe(got) == {"SUCCESS": 2, "UNKNOWN": 2}
