"""Multi-host: each process measures its shard of the dataset, results gather into one file.

The end-to-end test starts 2 local CPU processes that call ``jax.distributed.initialize``
(coordinator on 127.0.0.1, a free local port, hard timeouts so nothing hangs), run
``deepfool_dataset`` on ``process_shard(n, align=chunk_size)`` and ``gather_to_file``; the
merged file must equal, bit for bit, the single-process run of this test.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geomrobust.parallel import gather_to_file, process_shard

N, CHUNK = 22, 4

WORKER = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    pid, port, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=60)
    sys.path.insert(0, "tests")
    from test_multihost import CHUNK, N, data
    from geomrobust.parallel import gather_to_file, process_shard
    from geomrobust.search import deepfool_dataset

    f, x = data()
    rows = process_shard(N, align=CHUNK)
    assert jax.process_count() == 2 and jax.process_index() == pid
    res = deepfool_dataset(f, x[rows], chunk_size=CHUNK, slots=4)
    gather_to_file(path, res, rows, n=N, timeout=120)
    print("rows", rows.start, rows.stop, flush=True)
    jax.distributed.shutdown()
    """
)


def data():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _nets import convnet

    f = convnet(jax.random.key(0), (8, 8, 1), 4)
    x = 0.5 + 0.3 * jax.random.normal(jax.random.key(1), (N, 8, 8, 1), jnp.float32)
    return f, x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_gather_identical_to_one(tmp_path):
    from geomrobust.search import deepfool_dataset

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "margins.npz"
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), port, str(path)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            logs.append((p.returncode, out, err[-3000:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rc, _, err in logs:
        assert rc == 0, err
    assert "rows 0 12" in logs[0][1] and "rows 12 22" in logs[1][1]
    f, x = data()
    ref = deepfool_dataset(f, x, chunk_size=CHUNK, slots=4)
    with np.load(path) as z:
        assert sorted(z.files) == sorted(ref._fields)
        for name in ref._fields:
            np.testing.assert_array_equal(z[name], np.asarray(getattr(ref, name)), err_msg=name)
    assert not list(tmp_path.glob("*.part*"))  # parts removed after the merge


@pytest.mark.parametrize("n", [0, 1, 7, 22, 100])
@pytest.mark.parametrize("p", [1, 2, 3, 8])
@pytest.mark.parametrize("align", [1, 4])
def test_process_shard_tiles_the_range(n, p, align):
    shards = [process_shard(n, align=align, process_index=i, process_count=p) for i in range(p)]
    covered = np.concatenate([np.arange(n)[s] for s in shards])
    np.testing.assert_array_equal(covered, np.arange(n))  # contiguous, ordered, disjoint
    sizes = [s.stop - s.start for s in shards]
    for s in shards[:-1]:
        assert s.start % align == 0 or s.start == n  # empty shards sit at the end
        assert s.stop % align == 0 or s.stop == n
    blocks = [-(-sz // align) for sz in sizes]
    assert max(blocks) - min(blocks) <= 1  # balanced in chunks


def test_process_shard_defaults_and_errors():
    assert process_shard(10) == slice(0, 10)  # one process: everything
    with pytest.raises(ValueError, match="process_index"):
        process_shard(10, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="align"):
        process_shard(10, align=0)
    with pytest.raises(ValueError, match="n must be"):
        process_shard(-1)


def test_gather_to_file_merges_in_row_order(tmp_path):
    path = tmp_path / "out" / "res.npz"
    n, p = 10, 3
    full = {
        "margin": np.arange(n, dtype=np.float32),
        "perturbation": np.arange(2 * n).reshape(n, 2),
    }
    # processes finish in any order; process 0 merges once every part is there
    for i in (2, 1, 0):
        rows = process_shard(n, process_index=i, process_count=p)
        part = {k: v[rows] for k, v in full.items()}
        got = gather_to_file(path, part, rows, n=n, process_index=i, process_count=p)
        assert (got == path) if i == 0 else got is None
    with np.load(path) as z:
        for k, v in full.items():
            np.testing.assert_array_equal(z[k], v)
    assert sorted(q.name for q in path.parent.iterdir()) == ["res.npz"]


def test_gather_to_file_errors(tmp_path):
    path = tmp_path / "res.npz"
    with pytest.raises(TimeoutError, match="part00001"):
        gather_to_file(path, {"m": np.zeros(5)}, slice(0, 5), n=10, process_index=0,
                       process_count=2, timeout=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="leading axis 5"):
        gather_to_file(path, {"m": np.zeros(4)}, slice(0, 5), n=10, process_index=1,
                       process_count=2)  # fmt: skip
    with pytest.raises(TypeError, match="NamedTuple or a dict"):
        gather_to_file(path, [np.zeros(5)], slice(0, 5), n=5, process_index=0, process_count=1)
