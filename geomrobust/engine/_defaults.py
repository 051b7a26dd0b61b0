"""Defaults shared by every dataset-level entry point (docs/api.md)."""

CHUNK_SIZE = 256
"""Examples per compiled chunk: the default ``chunk_size`` of every dataset-level entry
point. The last chunk is padded, so one compilation serves any ``N``; memory beyond the
inputs and outputs is that of one chunk."""
