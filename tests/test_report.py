"""``geomrobust report --quick``: every figure referenced in index.html exists, results.json
holds finite numbers for every section (non-finite values only as the strings "nan" / "inf"
of geomrobust.io.to_json_text, next to explicit unconverged counts), and a second run reuses
the cached models and the finished stages."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from geomrobust.cli import main
from geomrobust.report import SIZES, STAGES, model_cache_key, model_settings
from geomrobust.report._driver import canonical


def _numbers(o, path=""):
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(o, int | float) and not isinstance(o, bool):
        yield path, o


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One quick report per module (a module's tests run on one xdist worker: ``--dist loadfile``).
    The models come from the session's model cache (tests/conftest.py), shared with the
    notebooks and scripts; a damaged stage file is tested on its own in
    tests/test_reliability_files.py."""
    out = tmp_path_factory.mktemp("report")
    argv = ["report", "--quick", "--n", "16", "--out", str(out)]
    assert main(argv) == 0
    return out, argv


def test_index_references_existing_figures(report):
    out, _ = report
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no network resources
    figures = re.findall(r"<img src='([^']+)'", html)
    assert len(figures) >= 9
    for f in figures:
        assert (out / f).is_file() and (out / f).stat().st_size > 1000, f
    assert html.count("<figcaption>") == len(figures)


def test_results_json_finite_per_section(report):
    out, _ = report
    text = (out / "results.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(record["sections"]) == set(STAGES)
    for name, section in record["sections"].items():
        nums = list(_numbers(section))
        assert nums, name
        assert all(math.isfinite(v) for _, v in nums), name
    for m in ("standard", "pgd"):
        assert len(record["models"][m]["checkpoint_sha256"]) == 64
        margins = record["sections"]["margins"][m]["l2"]
        # every example is either summarized or counted as unconverged
        assert margins["n_valid"] + margins["n_excluded"] == 16
        assert margins["n_valid"] == 16 - margins["n_unconverged"]
    # robust training enlarges the margins (the headline of the report)
    sec = record["sections"]["margins"]
    assert sec["pgd"]["l2"]["median"] > sec["standard"]["l2"]["median"]
    assert record["settings"]["quick"] is True and record["geomrobust_version"]


def test_frequency_noise_and_interpretability_sections_account_for_every_example(report):
    out, _ = report
    sec = json.loads((out / "results.json").read_text())["sections"]
    for m in ("standard", "pgd"):
        clean = sec["accuracy"][m]["clean_accuracy"]
        assert sec["frequency"][m]["clean_error"] == pytest.approx(1 - clean)
        assert sec["frequency"][m]["n_invalid"] == 0 and sec["noise"][m]["n_invalid"] == 0
        errors = sec["noise"][m]["error"]
        assert len(errors) == len(sec["noise"]["sigmas"]) and errors[-1] >= errors[0]
        acc = sec["noise"][m]["corruption_accuracy"]
        assert set(acc) == set(sec["noise"]["corruptions"]) and all(
            len(v) == 5 for v in acc.values()
        )
        it = sec["interpretability"][m]
        assert it["alignment_n_valid"] + it["alignment_n_excluded"] == 16
        assert 0 <= it["alignment_median"] <= 1
        assert it["synthesis_classes"] == 10
    figures = [
        f["file"] for f in json.loads((out / "results.json").read_text())["figures"]["noise"]
    ]
    assert figures == ["noise.png"]


def test_second_run_reuses_models_and_stages(report, capsys):
    out, argv = report
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("reused the finished stage") == len(STAGES)
    assert "LeNet: reused" in err
    record = json.loads((out / "results.json").read_text())
    assert all(t["reused"] for t in record["timings"]["stages"].values())


def test_cache_key_tracks_settings():
    a = model_settings("standard", SIZES["quick"], dataset="digits", data_dir=None,
                       resize=None, key=0)  # fmt: skip
    b = dict(a, epochs=a["epochs"] + 1)
    assert model_cache_key(a) == model_cache_key(dict(a))
    assert model_cache_key(a) != model_cache_key(b)
    p = model_settings("pgd", SIZES["quick"], dataset="digits", data_dir=None, resize=None, key=0)
    assert p["init_from"] == model_cache_key(a)


def test_records_write_non_finite_as_strings():
    # one JSON encoding for the CLI and the report: geomrobust.io.to_json_text
    record = canonical({"a": [float("inf"), 1.5, float("nan")], "b": np.float32(-np.inf)})
    assert record == {"a": ["inf", 1.5, "nan"], "b": "-inf"}


def test_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["report", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "geomrobust report: error" in capsys.readouterr().err


def test_report_on_any_classifiers_and_arrays(tmp_path):
    """``geomrobust.report.run``: the report from classifiers and arrays (no checkpoint, no
    dataset name); a ReLU model is found piecewise linear and its curvature measured at a
    scale; stages resume on a second call."""
    import jax

    import geomrobust as gr
    from geomrobust.report import run

    d = gr.load_dataset("digits", "test")
    x, y = d.images[:8], d.labels[:8]
    smooth = gr.create_model("lenet", (8, 8, 1), 10, key=jax.random.key(0), activation="tanh",
                             pool="avg")  # fmt: skip
    relu = gr.create_model("mlp", (8, 8, 1), 10, key=jax.random.key(1), widths=[32])
    kw = dict(out=tmp_path / "r", quick=True, stages=["accuracy", "curvature"])
    rec = run({"tanh": smooth, "relu": gr.as_classifier(relu)}, x, y, **kw)
    curv = rec["sections"]["curvature"]
    assert curv["tanh"]["smooth_network"] and curv["tanh"]["scale"] is None
    assert not curv["relu"]["smooth_network"] and curv["relu"]["scale"] > 0
    assert (tmp_path / "r" / "index.html").stat().st_size > 0
    assert "piecewise linear" in (tmp_path / "r" / "index.html").read_text()
    again = run({"tanh": smooth, "relu": gr.as_classifier(relu)}, x, y, **kw)
    assert all(t["reused"] for t in again["timings"]["stages"].values())
    with pytest.raises(ValueError, match=r"images in \[0, 1\]"):
        run({"tanh": smooth}, 2 * x + 1, y, out=tmp_path / "bad")


def _tables(html: str) -> list[str]:
    return re.findall(r"<table>.*?</table>", html, flags=re.S)


def test_index_reads_in_stage_order_with_contents_and_introductions(report):
    """The page follows the analysis (accuracy, DeepFool margins, then what builds on them),
    not the alphabetical order of results.json; a table of contents links every section;
    every section opens with an introduction; every table lists the standard model before
    the robust one."""
    out, _ = report
    html = (out / "index.html").read_text()
    ids = re.findall(r"<h2 id='([^']+)'>", html)
    assert ids == ["settings", *STAGES], ids
    nav = re.search(r"<nav>.*?</nav>", html, flags=re.S).group(0)
    assert re.findall(r"href='#([^']+)'", nav) == ids
    chunks = re.split(r"<h2 id='[^']+'>", html)[2:]  # the text of each stage's section
    for name, chunk in zip(STAGES, chunks, strict=True):
        intro = re.search(r"<p class='intro'>(.*?)<small>", chunk, flags=re.S)
        assert intro and len(intro.group(1).split()) >= 8, name  # a sentence, not only a time
    tables = _tables(html)
    both = [t for t in tables if "standard" in t and "PGD-AT" in t]
    assert len(both) >= 10, len(both)
    for t in both:
        assert t.index("standard") < t.index("PGD-AT"), t[:300]
    assert "{&quot;" not in html and '{"' not in html  # no raw JSON dict on the page
    # fractions are percentages; a rate never reached is said in words
    assert re.search(r"minimum found by fmn", html) and " %" in html
    record = json.loads((out / "results.json").read_text())
    for m in ("standard", "pgd"):
        if record["sections"]["noise"][m]["sigma_at_50pct_error"] in (None, "nan"):
            assert "not reached (&gt;" in html or "not reached (>" in html


def test_stage_progress_prints_while_a_stage_runs():
    import time

    from geomrobust.report._driver import StageProgress

    lines = []
    with StageProgress("margins", interval=0.05, log=lines.append) as p:
        time.sleep(0.12)
        p(16)
        time.sleep(0.12)
    assert lines and "margins:" in lines[0] and "compiling" in lines[0]
    assert any("16 examples done" in s for s in lines), lines
