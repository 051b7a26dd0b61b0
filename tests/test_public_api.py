"""The public names of the package exist at the top level, with the documented fields."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

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
        ("steps", 50),
        ("candidates", None),
        ("subspace", None),
        ("bounds", None),
    ]:
        assert sig.parameters[name].default == default, name
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.warns(DeprecationWarning, match="steps="):  # the old name, one release
        x = np.array([[1.0, 0.0]], np.float32)
        old = gr.deepfool(lambda x: x @ np.eye(2, dtype=x.dtype), x, max_iter=5)
    assert bool(old.converged[0])
    assert gr.MarginResult._fields == (
        "perturbation",
        "margin",
        "converged",
        "adv_label",
        "iterations",
        "status",
    )


def test_keyword_only_keys():
    for fn in (gr.principal_curvatures, gr.loss_hessian_eigs, gr.nads):
        p = inspect.signature(fn).parameters["key"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__


def test_curvatures_fields():
    assert gr.Curvatures._fields[:2] == ("values", "directions")


def test_all_exports_resolve():
    """Every name of ``gr.__all__`` resolves to an object of the package itself, is listed by
    ``dir(gr)`` and ``from geomrobust import *``; an unknown name is an AttributeError."""
    names = gr.__all__
    assert len(names) > 40 and names == sorted(set(names))
    for name in names:
        obj = getattr(gr, name)
        where = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "")
        assert where.startswith("geomrobust"), (name, where)
    assert set(names) <= set(dir(gr))
    star: dict = {}
    exec("from geomrobust import *", star)
    assert set(names) <= set(star)
    with pytest.raises(AttributeError, match="no_such_name"):
        gr.no_such_name  # noqa: B018


def test_import_is_lazy():
    """``import geomrobust`` does not import JAX (the command line's --help starts without
    it); the first ``gr.`` name loads the public API, and does not turn JAX's persistent
    compilation cache on (only the front ends do: geomrobust.engine.enable_compilation_cache)."""
    code = (
        "import sys, geomrobust as gr; assert 'jax' not in sys.modules, 'jax imported'; "
        "gr.deepfool; assert 'jax' in sys.modules and 'geomrobust.search' in sys.modules; "
        "import jax; assert jax.config.jax_compilation_cache_dir is None"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # conftest sets some
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
