"""Safe files: atomic writes, pickle-free loads, clear errors for damaged or foreign files."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geomrobust.io import (
    CorruptFileError,
    SettingsMismatchError,
    atomic_write,
    load_json,
    load_npz,
    open_chunk_store,
    save_json,
    save_npz,
    settings_hash,
)

ARRAYS = {"margin": np.array([0.5, np.inf, 1.25]), "label": np.array([1, 2, 3], np.int32)}


def test_npz_round_trip_is_bit_identical(tmp_path):
    p = save_npz(tmp_path / "r.npz", ARRAYS)
    back = load_npz(p, keys=["margin", "label"])
    for k, v in ARRAYS.items():
        assert back[k].dtype == v.dtype
        assert back[k].tobytes() == v.tobytes()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def _truncated(p):
    os.truncate(p, p.stat().st_size // 2)


def _garbage(p):
    p.write_bytes(b"\x00\x01 not a zip archive at all")


def _flipped(p):
    b = bytearray(p.read_bytes())
    for i in range(40, 80):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))


def _bare_npy(p):
    with open(p, "wb") as f:
        np.save(f, np.arange(3))


def _pickled(p):
    np.savez(p, obj=np.array([{"a": 1}], dtype=object))


def _empty(p):
    p.write_bytes(b"")


DAMAGE = {
    "truncated": (_truncated, r"cannot be read|truncated"),
    "garbage": (_garbage, r"not an \.npz archive"),
    "flipped-bytes": (_flipped, r"truncated, corrupted"),
    "bare-npy": (_bare_npy, r"bare \.npy array"),
    "pickled-object-array": (_pickled, r"need pickle to load; geomrobust never unpickles"),
    "empty": (_empty, r"cannot be read|truncated"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_npz_gives_one_clear_error(case, tmp_path):
    p = save_npz(tmp_path / "r.npz", ARRAYS)
    damage, pattern = DAMAGE[case]
    damage(p)
    with pytest.raises(CorruptFileError, match=pattern) as info:
        load_npz(p, keys=["margin"])
    msg = str(info.value)
    assert str(p) in msg and "\n" not in msg and len(msg) < 600


def test_missing_keys_missing_file_and_object_arrays(tmp_path):
    p = save_npz(tmp_path / "r.npz", ARRAYS)
    with pytest.raises(CorruptFileError, match=r"lacks the arrays \['curvature'\]"):
        load_npz(p, keys=["curvature"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match=r"arrays\['obj'\] has dtype object"):
        save_npz(tmp_path / "o.npz", {"obj": np.array([None, 1], dtype=object)})


def test_json_round_trip_and_damage(tmp_path):
    rec = {"a": np.float32(1.5), "inf": float("inf"), "arr": np.arange(3), "t": (1, 2)}
    p = save_json(tmp_path / "s.json", rec)
    assert load_json(p) == {"a": 1.5, "inf": "inf", "arr": [0, 1, 2], "t": [1, 2]}
    p.write_text(p.read_text()[:10])
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_json(p)
    p.write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="should hold a JSON object, got list"):
        load_json(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_json(p)


def test_atomic_write_never_exposes_a_partial_file(tmp_path):
    target = tmp_path / "big.bin"
    atomic_write(target, b"old")
    # A writer killed mid-write leaves only a temporary file; the target keeps its old content.
    code = (
        "import os, sys, tempfile\n"
        f"fd, tmp = tempfile.mkstemp(dir={str(tmp_path)!r}, prefix='.big.bin.', suffix='.tmp')\n"
        "os.write(fd, b'half'); os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert target.read_bytes() == b"old"
    assert len(list(tmp_path.glob(".big.bin.*.tmp"))) == 1
    with pytest.raises(TypeError, match="bytes or str"):
        atomic_write(target, 3)


def test_chunk_store_resumes_and_refuses_other_settings(tmp_path):
    settings = {"method": "deepfool", "chunk_size": 2, "checkpoint_sha256": "ab" * 32}
    calls = []

    def fn(i, sl):
        calls.append(i)
        if i == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # interrupted while computing chunk 2
        return {"v": np.arange(sl.start, sl.stop, dtype=np.float32) * 0.1}

    store = open_chunk_store(tmp_path / "run", settings)
    with pytest.raises(KeyboardInterrupt):
        store.map(fn, n=7, chunk_size=2)
    assert store.completed() == [0, 1]
    # a stale temporary file from a killed write is cleaned when the store is reopened
    (tmp_path / "run" / ".chunk-00002.npz.x.tmp").write_bytes(b"half")
    store = open_chunk_store(tmp_path / "run", dict(reversed(settings.items())))
    calls.clear()
    out = store.map(fn, n=7, chunk_size=2)
    assert calls == [2, 3]  # only the missing chunks are computed
    expected = np.arange(7, dtype=np.float32) * 0.1
    assert out["v"].tobytes() == expected.tobytes()
    assert not list((tmp_path / "run").glob(".*.tmp"))

    other = dict(settings, chunk_size=3)
    with pytest.raises(SettingsMismatchError, match=r"chunk_size: 2 -> 3.*--restart"):
        open_chunk_store(tmp_path / "run", other)
    store = open_chunk_store(tmp_path / "run", other, overwrite=True)
    assert store.completed() == []
    meta = json.loads((tmp_path / "run" / "store.json").read_text())
    assert meta["settings_sha256"] == settings_hash(other) and meta["settings"] == other


def test_chunk_store_groups_missing_chunks(tmp_path):
    """``group=g`` hands fn runs of up to g consecutive missing chunks (one per device) and
    writes the same per-chunk files as ``group=1``."""
    calls = []

    def fn(i, sl):
        calls.append((i, sl.start, sl.stop))
        return {"v": np.arange(sl.start, sl.stop) ** 2, "w": np.ones((sl.stop - sl.start, 2))}

    ref = open_chunk_store(tmp_path / "ref", {"a": 1}).map(fn, n=11, chunk_size=3)
    store = open_chunk_store(tmp_path / "g", {"a": 1})
    store.save(1, {"v": np.arange(3, 6) ** 2, "w": np.ones((3, 2))})  # chunk 1 already done
    calls.clear()
    seen = []
    out = store.map(fn, n=11, chunk_size=3, group=2, progress=seen.append)
    assert calls == [(0, 0, 3), (2, 6, 11)]  # chunk 0 alone (1 is done), then chunks 2-3
    assert sum(seen) == 11 and store.completed() == [0, 1, 2, 3]
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    for j in range(4):
        a, b = store.load(j), load_npz(tmp_path / "ref" / f"chunk-{j:05d}.npz")
        b.pop("__settings_sha256__")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="leading axis of 6"):
        open_chunk_store(tmp_path / "bad", {"a": 1}).map(
            lambda i, sl: {"v": np.zeros(2)}, n=6, chunk_size=3, group=2
        )
    with pytest.raises(ValueError, match="group"):
        store.map(fn, n=11, chunk_size=3, group=0)


def test_chunk_store_damage(tmp_path):
    store = open_chunk_store(tmp_path / "run", {"a": 1})
    store.map(lambda i, sl: {"v": np.zeros(sl.stop - sl.start)}, n=4, chunk_size=2)
    _truncated(store.path(1))
    with pytest.raises(CorruptFileError, match=re.escape(str(store.path(1)))):
        store.map(lambda i, sl: {"v": np.zeros(sl.stop - sl.start)}, n=4, chunk_size=2)
    (tmp_path / "run" / "store.json").write_text("{broken")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        open_chunk_store(tmp_path / "run", {"a": 1})
    (tmp_path / "run" / "store.json").unlink()
    with pytest.raises(SettingsMismatchError, match=r"no store\.json"):
        open_chunk_store(tmp_path / "run", {"a": 1})
    assert open_chunk_store(tmp_path / "run", {"a": 1}, overwrite=True).completed() == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_chunk_store(tmp_path / "file", {"a": 1})
    with pytest.raises(TypeError, match="settings must be a dict"):
        open_chunk_store(tmp_path / "r2", [1, 2])


def test_no_pickle_anywhere_in_the_package():
    """Every ``np.load`` in the library passes ``allow_pickle=False``."""
    root = Path(__file__).resolve().parents[1] / "geomrobust"
    offenders = []
    for f in root.rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"\bnp\.load\(", line) and "allow_pickle=False" not in line:
                offenders.append(f"{f.relative_to(root)}:{i}")
            if re.search(r"^\s*import pickle|allow_pickle=True", line):
                offenders.append(f"{f.relative_to(root)}:{i}")
    assert not offenders, offenders


def test_save_npz_streams_to_the_file(tmp_path):
    """A results file is written straight into its temporary file: saving a 40 MB array
    allocates at most NumPy's 16 MiB write buffer (an in-memory archive held it twice more:
    the BytesIO and its getvalue() copy, the peak memory at the end of a margins run)."""
    import tracemalloc

    from geomrobust.io import load_npz, save_npz

    a = np.arange(10 * 2**20, dtype=np.float32).reshape(-1, 1024)  # 40 MiB
    tracemalloc.start()
    try:
        save_npz(tmp_path / "r.npz", {"perturbation": a, "margin": a[:, 0]})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * a.nbytes, peak
    back = load_npz(tmp_path / "r.npz")
    np.testing.assert_array_equal(back["perturbation"], a)
    np.testing.assert_array_equal(back["margin"], a[:, 0])
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]  # no temporary file left


def test_an_unreadable_npz_leaves_no_file_open(tmp_path):
    """np.load of a path leaks its file handle when the archive is truncated (closed only by a
    later garbage collection, with a ResourceWarning the command line printed mid-command):
    the results reader and the dataset loader close it themselves."""
    import gc
    import warnings

    from geomrobust.data import load_dataset

    path = tmp_path / "cut.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 1)), labels=np.arange(4))
    path.write_bytes(path.read_bytes()[:-40])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CorruptFileError, match="cannot be read"):
            load_npz(path)
        with pytest.raises(CorruptFileError, match=r"not a readable \.npz"):
            load_dataset(str(path))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
