"""Several processes or hosts on JAX's own multi-controller runtime.

Start every process with :func:`initialize` (``jax.distributed.initialize``), then call the
library exactly as in one process::

    import geomrobust as gr
    from geomrobust.parallel import initialize

    initialize()              # SLURM, Open MPI, cloud TPU: detected; else pass the coordinator
    res = gr.deepfool_dataset(logits_fn, x, chunk_size=256, devices="all")
    if jax.process_index() == 0:
        np.savez("margins.npz", **res._asdict())

Every dataset-level entry point runs its chunks through :func:`geomrobust.engine.map_chunks`,
which, when ``jax.process_count() > 1``, gives each process a contiguous block of the chunks
(:func:`geomrobust.engine.process_chunks`), computes it on the local devices and gathers the
blocks through JAX collectives, so every process returns the whole result, bit-for-bit that
of one process. No shared filesystem is needed. Every process must make the same calls with
the same data (the collectives pair them up). docs/performance.md, "Several hosts".
"""

from __future__ import annotations

import jax

from ..engine import ProcessFailure, ProcessLayout, process_chunks, process_layout

__all__ = ["ProcessFailure", "ProcessLayout", "initialize", "process_chunks", "process_layout"]


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> ProcessLayout:
    """Join a multi-process run: ``jax.distributed.initialize`` with clear errors.

    Parameters
    ----------
    coordinator : ``HOST:PORT`` of process 0's coordination service; None: detected from
        the environment (SLURM, Open MPI, cloud TPU, ``$JAX_COORDINATOR_ADDRESS``).
    num_processes, process_id : the layout; None: detected (give both or neither).
    timeout : seconds to wait for every process to join.
    heartbeat_timeout : seconds after which a silent process is declared dead and every
        other process is ended by JAX's coordination service (a lost host never hangs the
        run).

    Returns
    -------
    ProcessLayout ``(index, count)`` of this process.

    Raises
    ------
    ValueError
        Only one of ``num_processes`` / ``process_id`` given, values out of range, or no
        cluster environment detected and no ``coordinator`` given; the message says what to
        pass.
    """
    if (num_processes is None) != (process_id is None):
        raise ValueError(
            "give both --num-processes and --process-id (or neither, to detect them from "
            "SLURM, Open MPI or a cloud TPU environment)"
        )
    if num_processes is not None:
        if int(num_processes) < 1 or not 0 <= int(process_id) < int(num_processes):
            raise ValueError(
                f"--process-id must lie in [0, --num-processes={num_processes}), got {process_id}"
            )
        if coordinator is None:
            raise ValueError(
                "with --num-processes and --process-id, give --coordinator HOST:PORT (process "
                "0's address, the same on every process)"
            )
    if jax.distributed.is_initialized():  # joined already (a second command, same process)
        i, p = process_layout()
        if num_processes is not None and (i, p) != (int(process_id), int(num_processes)):
            raise ValueError(
                f"this process joined a run as process {i} of {p} already; it cannot join "
                f"another as {process_id} of {num_processes}"
            )
        return ProcessLayout(i, p)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=None if num_processes is None else int(num_processes),
            process_id=None if process_id is None else int(process_id),
            initialization_timeout=int(timeout),
            heartbeat_timeout_seconds=int(heartbeat_timeout),
        )
    except (ValueError, RuntimeError) as e:
        text = " ".join(str(e).split())
        if "coordinator_address should be defined" in text or "must be defined" in text:
            raise ValueError(
                "no cluster environment detected (SLURM, Open MPI, cloud TPU): pass --coordinator "
                "HOST:PORT --num-processes P --process-id I"
            ) from e
        raise ValueError(f"jax.distributed.initialize failed: {text[:300]}") from e
    return process_layout()
