"""The execution engine: chunking, devices, progress and resume for dataset-level programs.

Every dataset-level entry point is a module-level ``jax.jit`` program of the classifier (a
pytree argument, see :class:`geomrobust.Classifier`) and one chunk of examples, run over the
data by :func:`map_chunks`; the options ``chunk_size=``, ``devices=`` and ``progress=`` mean
the same everywhere. With several JAX processes (``jax.distributed``) :func:`map_chunks`
also deals the chunks out over the processes and gathers the results through collectives
(docs/performance.md, "Several hosts").
"""

from ._compilation_cache import cache_root as cache_root
from ._compilation_cache import compilation_cache_enabled as compilation_cache_enabled
from ._compilation_cache import enable_compilation_cache as enable_compilation_cache
from ._defaults import CHUNK_SIZE as CHUNK_SIZE
from ._devices import CPUDevicesWarning as CPUDevicesWarning
from ._devices import resolve_devices as resolve_devices
from ._executor import Chunk as Chunk
from ._executor import ChunkBounds as ChunkBounds
from ._executor import chunk_bounds as chunk_bounds
from ._executor import home_device as home_device
from ._executor import map_chunks as map_chunks
from ._executor import put_rows as put_rows
from ._executor import run_program as run_program
from ._processes import ProcessFailure as ProcessFailure
from ._processes import ProcessLayout as ProcessLayout
from ._processes import process_chunks as process_chunks
from ._processes import process_layout as process_layout
from ._progress import progress_bar as progress_bar
from ._progress import track as track
