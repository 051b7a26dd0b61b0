"""The report's captions state what the literature reports, then what the run shows, and
flag a disagreement (they never assert an expectation the data contradict)."""

import numpy as np

from geomrobust.report._figures import versus_literature
from geomrobust.report._stages import ReportModel


def _models(*methods):
    return [
        ReportModel(f"m{i}", f"model {i}", None, {} if m is None else {"method": m}, True)
        for i, m in enumerate(methods)
    ]


def test_caption_agrees_and_disagrees_with_the_literature():
    models = _models("standard", "pgd")
    kw = dict(quantity="top eigenvalue", claim="robust training lowers it", robust_higher=False)
    agree = versus_literature(models, {"m0": 0.4, "m1": 0.2}, **kw)
    assert agree.startswith("The literature reports that robust training lowers it.")
    assert "model 0 0.4, model 1 0.2" in agree
    assert "0.50×" in agree and "agrees with the literature" in agree
    assert "DISAGREES" not in agree
    disagree = versus_literature(models, {"m0": 0.2, "m1": 3.0}, **kw)
    assert "15.00×" in disagree and "DISAGREES with the literature" in disagree
    higher = versus_literature(models, {"m0": 0.2, "m1": 3.0}, **{**kw, "robust_higher": True})
    assert "agrees with the literature" in higher and "DISAGREES" not in higher


def test_caption_without_methods_or_valid_examples_makes_no_verdict():
    kw = dict(quantity="margin", claim="it grows", robust_higher=True)
    plain = versus_literature(_models(None, None), {"m0": 1.0, "m1": 2.0}, **kw)
    assert "model 0 1, model 1 2" in plain
    assert "agrees" not in plain and "DISAGREES" not in plain
    nan = versus_literature(_models("standard", "cure"), {"m0": np.nan, "m1": 2.0}, **kw)
    assert "not comparable" in nan
    assert (
        versus_literature(_models("standard"), {}, **kw) == "The literature reports that it grows."
    )


def test_caption_differences_within_the_tolerance_are_no_verdict():
    models = _models("standard", "pgd")
    kw = dict(quantity="excess error", claim="it falls", robust_higher=False)
    same = versus_literature(models, {"m0": 1e-4, "m1": -1e-4}, tol=0.01, **kw)
    assert "no measurable difference" in same and "agrees" not in same
    signed = versus_literature(models, {"m0": 0.02, "m1": -0.01}, tol=0.01, **kw)
    assert "-0.03" in signed and "agrees with the literature" in signed
