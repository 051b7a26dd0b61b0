"""geomrobust benchmark suite: ``python -m benchmarks`` (see ``benchmarks/run.py``)."""
