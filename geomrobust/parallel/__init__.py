"""Scale: the example axis over local devices (one chunk per device, through the engine's
executor) and over several processes / hosts on JAX's multi-controller runtime
(:func:`initialize`, then every entry point splits its chunks over the processes and gathers
the results through collectives)."""

from ._multihost import ProcessFailure as ProcessFailure
from ._multihost import ProcessLayout as ProcessLayout
from ._multihost import initialize as initialize
from ._multihost import process_chunks as process_chunks
from ._multihost import process_layout as process_layout
from ._sharding import BATCH_AXIS as BATCH_AXIS
from ._sharding import batch_mesh as batch_mesh
from ._sharding import batch_sharding as batch_sharding
from ._sharding import map_sharded as map_sharded
from ._sharding import resolve_devices as resolve_devices
