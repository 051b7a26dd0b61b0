"""Safe result files (atomic writes, pickle-free reads, folder locks) and the resumable chunk
store."""

from ._chunks import ChunkStore as ChunkStore
from ._chunks import SettingsMismatchError as SettingsMismatchError
from ._chunks import open_chunk_store as open_chunk_store
from ._chunks import settings_hash as settings_hash
from ._files import CorruptFileError as CorruptFileError
from ._files import FolderLockedError as FolderLockedError
from ._files import atomic_write as atomic_write
from ._files import file_sha256 as file_sha256
from ._files import load_json as load_json
from ._files import load_npz as load_npz
from ._files import lock_folder as lock_folder
from ._files import remove_stale_temps as remove_stale_temps
from ._files import save_json as save_json
from ._files import save_npz as save_npz
from ._files import to_json_text as to_json_text

__all__ = [
    "ChunkStore",
    "CorruptFileError",
    "FolderLockedError",
    "SettingsMismatchError",
    "atomic_write",
    "file_sha256",
    "load_json",
    "load_npz",
    "lock_folder",
    "open_chunk_store",
    "remove_stale_temps",
    "save_json",
    "save_npz",
    "settings_hash",
    "to_json_text",
]
