"""geomrobust benchmark suite: every benchmark side by side with its reference, in one run.

    python -m benchmarks                      # everything, full size (long on a small CPU)
    python -m benchmarks --quick              # scaled down (N = 200 / 2,000, fewer points)
    python -m benchmarks --only deepfool memory
    python -m benchmarks --only memory --memory-kinds deepfool   # one workload of it

Prints a table of ratios (``ours / ref`` time, and the speed-up ``ref / ours``) and writes
``benchmarks/results/benchmarks.json`` and ``benchmarks/results/benchmarks.md`` with the
machine, the load averages before and after each benchmark (``os.getloadavg()``; other jobs on
a shared machine inflate every figure), and the command line. Not part of the unit tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from ._common import load, machine

BENCHMARKS = ("deepfool", "subspace", "curvature", "training", "memory", "precision", "minimal")


MEMORY_KINDS = ("deepfool", "margins", "curvature", "curvature_all")


def _suite(name: str, quick: bool, dims=(1024, 3072), memory_kinds=MEMORY_KINDS):
    if name == "deepfool":
        from . import bench_deepfool as b

        ns = (200, 2000) if quick else (500, 5000)
        return lambda: b.run(dims=dims, ns=ns, foolbox_max_n=ns[0])
    if name == "subspace":
        from . import bench_subspace as b

        return lambda: b.run(n=50 if quick else 200)
    if name == "curvature":
        from . import bench_curvature as b

        return lambda: b.run(n=16 if quick else 32, dense_points=4 if quick else 8)
    if name == "training":
        from . import bench_training as b

        return lambda: b.run(reps=4 if quick else 10)
    if name == "minimal":
        from . import bench_minimal as b

        return lambda: b.run(n=100 if quick else 200, d=dims[0])  # N=100: --quick
    if name == "precision":
        from . import bench_precision as b

        return lambda: b.run(d=1024, n=200 if quick else 500)
    from . import bench_memory as b

    return lambda: b.run(ns=(1000, 10000), kinds=tuple(memory_kinds))


def _fmt(v, unit="s"):
    return f"{v:.3g} {unit}" if isinstance(v, float | int) else str(v)


def table(rows) -> str:
    hdr = ["benchmark", "reference", "ours", "reference", "ours/ref", "speed-up", "target", "met"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        unit = r.get("unit", "s")
        ratio = r["ours"] / r["ref"]
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        cells = [r["name"], r["reference"], _fmt(r["ours"], unit), _fmt(r["ref"], unit),
                 f"{ratio:.3f}", f"{1 / ratio:.2f}x", r["target"], met]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="benchmarks", help="stem of the result files")
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 3072], choices=[1024, 3072],
                    help="input dimensions of the DeepFool benchmark")  # fmt: skip
    ap.add_argument("--memory-kinds", nargs="+", default=["deepfool", "curvature", "curvature_all"],
                    choices=MEMORY_KINDS,
                    help="workloads of the memory benchmark")  # fmt: skip
    args = ap.parse_args(argv)

    rows, loads = [], {}
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for name in args.only:
        before = load()
        t0 = time.perf_counter()
        got = _suite(name, args.quick, tuple(args.dims), args.memory_kinds)()
        loads[name] = dict(before=before, after=load(), seconds=round(time.perf_counter() - t0, 1))
        for r in got:
            r["benchmark"] = name
            r["ratio"] = r["ours"] / r["ref"]
            print(f"[{name}] {r['name']} vs {r['reference']}: ours {r['ours']:.4g}, "
                  f"ref {r['ref']:.4g}, ours/ref {r['ratio']:.3f}", flush=True)  # fmt: skip
        rows.extend(got)
    md = table(rows)
    print("\n" + md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(started=started, command="python -m benchmarks " + " ".join(sys.argv[1:]),
                quick=args.quick, machine=machine(), load=loads)  # fmt: skip

    def clean(v):
        if isinstance(v, np.generic):
            return v.item()
        return v

    rows_json = [{k: clean(v) for k, v in r.items()} for r in rows]
    (out / f"{args.name}.json").write_text(json.dumps(dict(meta=meta, rows=rows_json), indent=1))
    load_lines = "\n".join(
        f"- {k}: load {v['before']} before, {v['after']} after, {v['seconds']} s"
        for k, v in loads.items()
    )
    (out / f"{args.name}.md").write_text(
        f"# geomrobust benchmarks\n\n`{meta['command']}` ({started}), "
        f"{meta['machine']['backend']} backend, {meta['machine']['cpu_count']} CPUs, "
        f"jax {meta['machine']['jax']}.\n\nLoad averages (1, 5, 15 min):\n\n{load_lines}\n\n"
        f"{md}\n"
    )
    print(f"\nwrote {out / args.name}.json and .md")
