"""JAX's persistent compilation cache of the front ends (engine.enable_compilation_cache)
and the command line's fast start: ``--help`` without JAX, the cache on by default, off with
``--no-compilation-cache`` or ``GEOMROBUST_XLA_CACHE=0``, and a damaged entry recompiled, not
a failed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from geomrobust.cli import main

PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from geomrobust.engine import enable_compilation_cache
folder = enable_compilation_cache()
y = jax.jit(lambda x: jnp.sin(x) @ x.T + 1.0)(jnp.arange(6.0).reshape(2, 3))
print(json.dumps({"folder": None if folder is None else str(folder), "y": y.tolist()}))
"""


def _env(tmp_path, **extra):
    """A process environment with the cache root ``tmp_path`` and no cache set through JAX
    (the test session sets one for its subprocesses: tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(GEOMROBUST_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu", **extra)
    return env


def _python(code, env):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def _entries(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_cache_in_the_cache_root_and_a_damaged_entry_is_recompiled(tmp_path):
    first, _ = _python(PROGRAM, _env(tmp_path))
    xla = tmp_path / "xla"
    assert first["folder"] == str(xla)
    entries = _entries(xla)
    assert entries, "no program was cached (min compile time 0 and min entry size -1)"
    for p in entries:  # every entry damaged: garbage, or truncated to nothing
        p.write_bytes(b"\x00garbage" * 7 if p.stat().st_size % 2 else b"")
    again, err = _python(PROGRAM, _env(tmp_path))
    assert again["y"] == first["y"]  # compiled again, same numbers, no failure
    assert "compilation cache" in err  # JAX says it could not read the entry


def test_cache_off_by_environment(tmp_path):
    out, _ = _python(PROGRAM, _env(tmp_path, GEOMROBUST_XLA_CACHE="0"))
    assert out["folder"] is None and not _entries(tmp_path / "xla")


def test_help_does_not_import_jax():
    """``geomrobust margins --help`` is answered before JAX (or NumPy) is imported."""
    code = (
        "import sys\nfrom geomrobust.cli import main\ntry:\n    main(['margins', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('jax', 'numpy', 'geomrobust.analyses') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--no-compilation-cache" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_no_compilation_cache_flag(checkpoint, tmp_path, monkeypatch, capsys):
    """Every subcommand turns the cache on before it runs, unless --no-compilation-cache."""
    import geomrobust.engine

    calls = []
    monkeypatch.setattr(geomrobust.engine, "enable_compilation_cache", lambda: calls.append(1))
    argv = ["margins", "--checkpoint", str(checkpoint), "--n", "2", "--max-iter", "2",
            "--no-plots", "--out", str(tmp_path / "a")]  # fmt: skip
    assert main([*argv, "--no-compilation-cache"]) == 0
    assert calls == []
    assert main([*argv[:-1], str(tmp_path / "b")]) == 0
    assert calls == [1]
    capsys.readouterr()
