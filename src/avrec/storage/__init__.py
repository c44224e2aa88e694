"""Storage: the store interface, its backends (opened by URL) and file artifacts."""

from avrec.storage.artifacts import ArtifactStore
from avrec.storage.base import (
    EventWriteResult,
    IngestRecord,
    ModelRecord,
    Store,
    open_store,
    register_backend,
    registered_schemes,
)

__all__ = [
    "ArtifactStore",
    "EventWriteResult",
    "IngestRecord",
    "ModelRecord",
    "Store",
    "open_store",
    "register_backend",
    "registered_schemes",
]
