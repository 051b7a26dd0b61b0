"""The public names of the package exist at the top level, with the documented fields."""

import inspect

import geomrobust as gr

CONTRACT = [
    "input_grad",
    "hvp",
    "logit_jacobian",
    "deepfool",
    "margin_along",
    "dct_subspaces",
    "subspace_margins",
    "principal_curvatures",
    "normal_curvature",
    "loss_hessian_eigs",
    "fgsm",
    "pgd",
    "sparsefool",
    "universal_perturbation",
    "nads",
]


def test_contract_names_exist():
    missing = [n for n in CONTRACT if not callable(getattr(gr, n, None))]
    assert not missing, missing


def test_deepfool_signature_and_result_fields():
    sig = inspect.signature(gr.deepfool)
    for name, default in [
        ("norm", 2),
        ("overshoot", 0.02),
        ("max_iter", 50),
        ("candidates", None),
        ("subspace", None),
        ("bounds", None),
    ]:
        assert sig.parameters[name].default == default, name
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert gr.MarginResult._fields == (
        "perturbation",
        "margin",
        "converged",
        "adv_label",
        "iterations",
    )


def test_keyword_only_keys():
    for fn in (gr.principal_curvatures, gr.loss_hessian_eigs, gr.nads):
        p = inspect.signature(fn).parameters["key"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__


def test_curvatures_fields():
    assert gr.Curvatures._fields[:2] == ("values", "directions")


def test_all_exports_resolve():
    public = [n for n in dir(gr) if not n.startswith("_")]
    assert len(public) > 40
