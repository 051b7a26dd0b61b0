"""The executor (geomrobust.engine): chunks, padding, devices, progress, resume, errors."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.engine import Chunk, chunk_bounds, home_device, map_chunks, track
from geomrobust.io import open_chunk_store


@jax.jit
def _affine(w, x, z):
    return {"a": x @ w, "b": z * 2.0}


def test_chunks_padding_and_assembly():
    x = np.arange(30.0).reshape(10, 3)
    z = jnp.arange(10.0)
    w = jnp.ones((3, 2))
    seen = []

    def fn(w, xc, zc):
        seen.append((xc.shape, np.asarray(xc[-1])))
        return _affine(w, xc, zc)

    out = map_chunks(fn, (x, z), (w,), chunk_size=4)
    assert [s[0] for s in seen] == [(4, 3)] * 3  # one shape: one compilation
    np.testing.assert_array_equal(seen[-1][1], x[-1])  # the last chunk padded with its last row
    np.testing.assert_array_equal(out["a"], x @ np.ones((3, 2)))
    np.testing.assert_array_equal(out["b"], 2 * np.arange(10.0))
    assert isinstance(out["a"], np.ndarray) and out["a"].shape == (10, 2)
    assert chunk_bounds(10, 4) == (4, [(0, 4), (4, 8), (8, 10)])
    assert chunk_bounds(3, None) == (3, [(0, 3)])
    assert chunk_bounds(3, 100) == (3, [(0, 3)])


def test_progress_counts_examples_and_within_chunk_reports():
    calls = []
    x = np.ones((10, 2))

    def fn(xc, *, chunk: Chunk):
        chunk.report(1)  # a runner reporting part of its chunk
        chunk.report(100)  # over-reporting is capped at the chunk's examples
        return {"v": xc[:, 0]}

    map_chunks(fn, (x,), chunk_size=4, progress=calls.append, with_chunk=True)
    assert sum(calls) == 10
    assert calls[:2] == [1, 3]


def test_progress_true_bar_ticks_while_a_chunk_runs(monkeypatch):
    """``progress=True``: a bar that says "compiling" until the first examples finish and
    whose clock moves while a long chunk runs (the ticker refreshes it)."""
    import geomrobust.engine._progress as prog

    class Bar:
        def __init__(self, total, desc, force):
            self.total, self.n, self.refreshes, self.postfix, self.closed = total, 0, 0, [], False
            self.disable = False

        def set_postfix_str(self, s, refresh=True):
            self.postfix.append(s)

        def refresh(self):
            self.refreshes += 1

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    bars = []
    monkeypatch.setattr(prog, "progress_bar", lambda t, d, force: bars.append(Bar(t, d, force))
                        or bars[-1])  # fmt: skip

    def slow(xc):
        time.sleep(1.2)
        return {"v": xc}

    with track(True, 5, "slow") as report:
        map_chunks(slow, (np.ones(5),), chunk_size=5, progress=report)
    (bar,) = bars
    assert bar.total == 5 and bar.n == 5 and bar.closed
    assert bar.postfix[0] == "compiling"
    assert bar.refreshes >= 2  # refreshed twice a second during the 1.2 s chunk
    with pytest.raises(TypeError, match="progress must be"), track("yes", 1, "x"):
        pass


def test_progress_true_on_entry_points(capsys):
    f = lambda x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1)  # noqa: E731
    x = jax.random.normal(jax.random.key(0), (5, 2, 2, 1))
    gr.deepfool(f, x, progress=True)
    gr.margin_along(f, x, jnp.ones((1, 2, 2, 1)) / 2, max_dist=10.0, progress=True)
    err = capsys.readouterr().err
    assert "deepfool" in err and "margins along directions" in err
    seen = []
    gr.deepfool(f, x, progress=seen.append, chunk_size=2)
    assert sum(seen) == 5


def test_resume_from_store(tmp_path):
    x = np.arange(10.0)
    store = open_chunk_store(tmp_path / "s", {"n": 10, "chunk": 4})
    calls = []

    def fn(xc):
        calls.append(float(xc[0]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted during the second chunk
        return {"sq": xc**2}

    with pytest.raises(KeyboardInterrupt):
        map_chunks(fn, (x,), chunk_size=4, store=store)
    assert store.completed() == [0]
    calls.clear()
    out = map_chunks(lambda xc: {"sq": xc**2}, (x,), chunk_size=4, store=store)
    np.testing.assert_array_equal(out["sq"], x**2)
    assert store.completed() == [0, 1, 2]
    with pytest.raises(TypeError, match="dict of arrays"):
        map_chunks(lambda xc: xc, (x,), chunk_size=4, store=open_chunk_store(tmp_path / "t", {}))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="share the leading axis"):
        map_chunks(lambda a, b: a, (np.ones(3), np.ones(4)), chunk_size=2)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        map_chunks(lambda a: a, (np.ones(3),), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be a positive integer or None"):
        map_chunks(lambda a: a, (np.ones(3),), chunk_size=2.5)
    with pytest.raises(ValueError, match="at least one example"):
        map_chunks(lambda a: a, (np.ones((0, 2)),), chunk_size=2)
    with pytest.raises(ValueError, match="leading axis of examples"):
        map_chunks(lambda a: a.sum(), (np.ones(3),), chunk_size=2)
    with pytest.raises(ValueError, match="devices must lie in"):
        map_chunks(lambda a: a, (np.ones(3),), chunk_size=2, devices=99)


def test_home_device_and_explicit_placement():
    dev = jax.local_devices()[0]
    assert home_device(np.ones(3)) == dev
    committed = jax.device_put(jnp.ones(3), dev)
    assert home_device((np.ones(2),), (committed,)) == dev
    # workers never read the default-device setting: results come back from explicit devices
    seen = []

    def fn(xc):
        seen.append((threading.current_thread().name, xc.devices()))
        return {"v": xc}

    map_chunks(fn, (np.ones(4),), chunk_size=2, devices=[dev])
    assert all(d == {dev} for _, d in seen)


@pytest.mark.parametrize("shape", [(5, 3), (0, 7), (1,), (4, 2, 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bool", "int32"])
def test_result_buffers_become_arrays_without_a_copy(shape, dtype):
    """The host buffers of results are 64-byte aligned, which XLA's CPU client aliases: the
    final device_put of a dataset-sized result costs no second copy (flat memory in N)."""
    from geomrobust.engine._buffers import ALIGNMENT, aligned_empty, aligned_zeros

    buf = aligned_empty(shape, dtype)
    assert buf.shape == shape and buf.dtype == np.dtype(dtype) and buf.flags.c_contiguous
    z = aligned_zeros(shape, dtype)
    assert not z.any()
    if buf.size == 0:
        return
    assert buf.ctypes.data % ALIGNMENT == 0 and z.ctypes.data % ALIGNMENT == 0
    if jax.default_backend() == "cpu" and jax.config.jax_enable_x64:
        arr = jax.device_put(z)
        assert arr.unsafe_buffer_pointer() == z.ctypes.data  # aliased, not copied
