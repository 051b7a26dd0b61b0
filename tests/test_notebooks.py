"""Every notebook in notebooks/ runs top to bottom on a python3 kernel (jupytext -> nbclient).

The notebooks are jupytext percent-format ``.py`` files (reviewable diffs, no outputs). They
share the session's cache (``$GEOMROBUST_CACHE_DIR``, tests/conftest.py) with the report and
script tests, so the report's quick models are trained once per test session and compiled
programs are loaded from JAX's persistent cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


def test_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:6] == [
        "01_quickstart",
        "02_margins_dct",
        "03_curvature",
        "04_nads",
        "05_robust_training",
        "06_beyond_security",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel must not inherit the test session's x64 setting: notebooks run as users do
    monkeypatch.delenv("JAX_ENABLE_X64", raising=False)
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]  # fmt: skip
    assert not errors
