"""Shared fixtures: PRNG keys, and float32/float64 parametrization with matching tolerances.

One cache folder serves the whole test session, its xdist workers and every process the tests
start (scripts, notebooks, CLI runs): ``$GEOMROBUST_CACHE_DIR`` points there, so the report's
quick models are trained once per session (``models/``), and JAX's persistent compilation
cache lives in ``xla/`` (a program compiled by one worker or subprocess is loaded, not
compiled again, by the others and after :func:`_release_compiled_programs`). The folder is a
fresh temporary one removed at the end, or ``$GEOMROBUST_TEST_CACHE_DIR`` when set (kept: a
CI cache can carry it from one run to the next).
"""

import gc
import os
import shutil
import tempfile

import jax

# float64 must be possible for the float64 half of the numerical tests. With x64 on, library
# code must take its dtype from its inputs, never from JAX's default; the float32 tests check it.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

RTOL = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-9}

_SESSION_CACHE = "_GEOMROBUST_TEST_SESSION_CACHE"  # set by the controller, read by workers
TEST_XLA_FLAGS = {  # see pytest_configure
    "--xla_backend_optimization_level": "0",
    "--xla_cpu_use_fusion_emitters": "false",
}


def pytest_configure(config):
    """The session's cache folder (see the module docstring), chosen once by the controller
    process and inherited by the xdist workers and every subprocess through the environment."""
    if _SESSION_CACHE not in os.environ:
        kept = os.environ.get("GEOMROBUST_TEST_CACHE_DIR")
        folder = kept or tempfile.mkdtemp(prefix="geomrobust-tests-")
        os.environ[_SESSION_CACHE] = folder
        if not kept:
            config._geomrobust_remove_cache = folder
    folder = os.environ[_SESSION_CACHE]
    xla = os.path.join(folder, "xla")
    os.makedirs(xla, exist_ok=True)
    # Two XLA flags for this process, its workers and subprocesses (read by XLA when the
    # backend starts, after this hook). The suite's programs are small and many, so compiling
    # them dominates its time; the numerics tests run against closed forms and dense
    # references, which hold whatever the compiler does; benchmarks and users keep XLA's
    # defaults. Measured on 2 cores (user CPU seconds of test_lenet_options + test_minimal_norm):
    # - backend optimization level 0 (LLVM's -O0): 35-40 % less CPU time per test;
    # - the CPU backend's legacy elemental emitters instead of its MLIR fusion emitters: each
    #   compilation no longer builds an MLIR context and pattern sets per fusion (24 % of
    #   test_status.py's CPU time under perf), 182 -> 101 s on top of level 0.
    flags = os.environ.get("XLA_FLAGS", "")
    for flag, value in TEST_XLA_FLAGS.items():
        if flag not in flags:
            flags = f"{flags} {flag}={value}".strip()
    os.environ["XLA_FLAGS"] = flags
    # subprocesses read these at import; this process is configured below
    os.environ.update(
        GEOMROBUST_CACHE_DIR=folder,
        JAX_COMPILATION_CACHE_DIR=xla,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    jax.config.update("jax_compilation_cache_dir", xla)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # Python's cyclic garbage collector, tuned for tracing: JAX builds many short-lived
    # objects per traced program, and with the default thresholds a full collection walks
    # every imported module's objects again and again (3.5 % of a test module's CPU time in
    # gc_collect_main under perf). Objects alive now are frozen out of the collections, and
    # the youngest generation is collected every 100,000 allocations instead of 700: 11 % less
    # CPU time for test_status + test_search_battery (69.4 -> 61.1 s, 65.7 -> 58.2 s).
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def pytest_unconfigure(config):
    folder = getattr(config, "_geomrobust_remove_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a numerical test in both precisions."""
    return jnp.dtype(request.param)


@pytest.fixture(params=[0, 1])
def seed(request):
    return request.param


@pytest.fixture
def key(seed):
    """A fresh PRNG key per seed (tests are repeated over several seeds)."""
    return jax.random.key(seed)


def rtol_for(dtype) -> float:
    """The relative tolerance of the contract: 1e-4 in float32, 1e-9 in float64."""
    return RTOL[np.dtype(dtype)]


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Programs are cached per
    architecture for the whole process (by design: a second call compiles nothing); over the
    ~1,000 tests of a worker the caches held several GB, and one CI run saw XLA abort while
    compiling late in a worker. Tests that count compilations run within one module. A
    program needed again later is loaded from the persistent cache, not compiled again."""
    yield
    jax.clear_caches()


CHECKPOINT_META = {"model": "mlp", "input_shape": [8, 8, 1], "num_classes": 10, "dataset": "digits"}
"""The metadata of the :func:`checkpoint` fixture (an 8x8 digits MLP with 10 classes)."""


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """One quick checkpoint for the command-line tests of the whole session: an untrained MLP
    on 8x8x1 digits (``create_model("mlp", (8, 8, 1), 10, key=key(0))``, ReLU), saved once.
    Tests read it and never change it; a module that needs another model (a smooth LeNet,
    softplus) defines its own ``checkpoint`` fixture, which takes precedence."""
    from geomrobust.models import create_model
    from geomrobust.train import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mlp"
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(0))
    save_checkpoint(path, model, CHECKPOINT_META)
    return path
