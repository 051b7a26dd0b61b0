"""Shared fixtures: PRNG keys, and float32/float64 parametrization with matching tolerances."""

import jax

# float64 must be possible for the float64 half of the numerical tests. With x64 on, library
# code must take its dtype from its inputs, never from JAX's default; the float32 tests check it.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

RTOL = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-9}


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
    compiling late in a worker. Tests that count compilations run within one module."""
    yield
    jax.clear_caches()
