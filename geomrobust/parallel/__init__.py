"""Scale: the example axis over local devices (one chunk per device, through the engine's
executor) and several processes / hosts each measuring a shard of the dataset
(``jax.distributed``)."""

from ._multihost import gather_to_file as gather_to_file
from ._multihost import process_shard as process_shard
from ._sharding import BATCH_AXIS as BATCH_AXIS
from ._sharding import batch_mesh as batch_mesh
from ._sharding import batch_sharding as batch_sharding
from ._sharding import map_sharded as map_sharded
from ._sharding import resolve_devices as resolve_devices
