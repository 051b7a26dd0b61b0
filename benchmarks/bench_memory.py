"""Peak memory (RSS) of dataset-level measurements at N = 1,000 and N = 10,000.

Each measurement runs in a fresh subprocess (``python -m benchmarks.bench_memory --child``)
that reports its own peak resident set (``VmHWM``, see below) at the end, so JAX's own
footprint is included and nothing is shared between measurements. Workloads:

* DeepFool margins: ``deepfool_dataset`` (default ``chunk_size``) with the suite's
  trained LeNet (``trained_cnn(1024)``, trained inside the child) on ``pool(1024, N)``
  digits, box [0, 1];
* the margins analysis (``margins``): what ``geomrobust margins`` runs on the same model and
  data, ``analyses.margins.compute`` with its default settings (DeepFool L2, box ``auto``,
  chunks of 128), then its arrays saved with ``save_npz``;
* principal curvatures: ``principal_curvatures(method="lanczos", num=10)`` (default
  ``chunk_size=64``) of a tanh MLP at random points (the pair y = 0, k = 1), D = 256,
  returning the top direction per point (``num_directions=1``, as ``geomrobust curvature``
  does), and, for comparison without a target, all 10 directions (an ``N × 10 × D`` output
  that by itself grows 10x faster than the input).

Inputs and outputs themselves grow with N (``N × D`` floats each); the target is the whole
process within 1.2× between N = 1,000 and N = 10,000. The peak is reset (``clear_refs``)
once the data and the model are built, so it covers the measurement with its inputs
resident, not the benchmark's own data generation (``pool`` makes several ``N × D``
temporaries).

Each (workload, N) runs ``repeats`` times (default 3, the two sizes interleaved) and the
table reports the median peak per size: the same run repeated in fresh processes varies by
a few percent (about +-30 MiB on ~700 MiB here: what the model training and data generation
leave on the heap, and how the XLA thread pool splits each step's temporaries), which is the
size of the margin to the 1.2x target. Every repeat's figures are kept in the JSON.

The peak is the child's ``VmHWM`` (``/proc/self/status``: the high-water mark of its own
address space, which starts afresh at ``exec``). ``ru_maxrss`` is NOT used on Linux: the
kernel carries the parent's high-water mark across ``fork`` + ``exec``, so every child of a
large benchmark process reported the parent's 2,978 MiB (a first run of this benchmark
measured exactly that, for all four children).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(kind: str, n: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    if kind == "deepfool":
        from geomrobust.search import deepfool_dataset

        from ._common import pool, trained_cnn

        f = trained_cnn(1024)[0]
        x = pool(1024, n)
        base = _reset_peak()
        res = deepfool_dataset(f, x, bounds=(0.0, 1.0))
        summary = float(np.mean(np.asarray(res.iterations)))
        d = 1024
    elif kind == "margins":  # what `geomrobust margins` runs: the analysis, then its file
        import tempfile

        from geomrobust.analyses import margins
        from geomrobust.io import save_npz

        from ._common import pool, trained_cnn

        f = trained_cnn(1024)[0]
        x = pool(1024, n)
        base = _reset_peak()
        arrays, _ = margins.compute(f, x, margins.MarginSettings())
        with tempfile.TemporaryDirectory() as tmp:
            save_npz(f"{tmp}/results.npz", arrays)
        summary = float(np.mean(arrays["iterations"]))
        d = 1024
    else:
        from geomrobust.measures import principal_curvatures

        d, h = 256, 64
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        w1 = jax.random.normal(k1, (d, h)) / 16.0
        w2 = jax.random.normal(k2, (h, h)) / 8.0
        w3 = jax.random.normal(k3, (h, 10)) / 8.0

        def f(x):
            return jnp.tanh(jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2) @ w3

        z = rng.normal(0, 1, (n, d)).astype(np.float32)
        y, k = np.zeros(n, np.int32), np.ones(n, np.int32)
        nd = 1 if kind == "curvature" else None  # "curvature_all": all 10 directions
        base = _reset_peak()
        res = principal_curvatures(
            f, z, y, k, num=10, key=jax.random.key(1), method="lanczos", num_directions=nd
        )
        summary = float(np.mean(np.asarray(res.converged)))
    return dict(kind=kind, N=n, D=d, peak_rss_mib=_peak_rss_mib(), rss_before_mib=base,
                seconds=time.perf_counter() - t0, summary=summary)  # fmt: skip


def _reset_peak() -> float | None:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``clear_refs`` 5), so
    the peak measures the measurement, its inputs already resident, and not the temporaries
    of building the data and the model. Returns the RSS (MiB) at that point."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def _peak_rss_mib() -> float:
    """This process's own peak resident set (``VmHWM``), MiB; ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(kind: str, n: int, timeout: float = 1800) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", kind, "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ns=(1000, 10000), kinds=("deepfool", "curvature", "curvature_all"), repeats=3):
    rows = []
    for kind in kinds:
        runs = {n: [] for n in ns}
        for _ in range(repeats):  # interleaved, so a drift in the machine hits both sizes
            for n in ns:
                runs[n].append(measure(kind, n))
        small, large = (_median_run(runs[n]) for n in ns)
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        all_dirs = kind == "curvature_all"
        label = {
            "deepfool": "DeepFool margins",
            "margins": "margins analysis + results file (geomrobust margins)",
            "curvature": "principal curvatures (top direction)",
            "curvature_all": "principal curvatures (all 10 directions: output N x 10 x D)",
        }[kind]
        peaks = {n: [round(r["peak_rss_mib"], 1) for r in runs[n]] for n in ns}
        rows.append(
            dict(name=f"peak RSS {label} D={small['D']} N={ns[0]}->{ns[1]} (median of {repeats})",
                 ours=large["peak_rss_mib"], reference=f"peak RSS at N={ns[0]} (MiB)",
                 ref=small["peak_rss_mib"], target="" if all_dirs else "ours/ref <= 1.2",
                 ok=None if all_dirs else ratio <= 1.2,
                 peaks_small=peaks[ns[0]], peaks_large=peaks[ns[1]],
                 rss_before_small=[round(r["rss_before_mib"], 1) for r in runs[ns[0]]],
                 rss_before_large=[round(r["rss_before_mib"], 1) for r in runs[ns[1]]],
                 unit="MiB", seconds_small=round(small["seconds"], 2),
                 seconds_large=round(large["seconds"], 2))
        )  # fmt: skip
    return rows


def _median_run(runs: list[dict]) -> dict:
    """The run with the median peak (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["peak_rss_mib"])[(len(runs) - 1) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["deepfool", "margins", "curvature", "curvature_all"])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.n)))
    else:
        for r in run():
            print(r)


if __name__ == "__main__":
    main()
