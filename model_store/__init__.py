"""The model registry: versioned, checksummed CRM models with their schemas and cards."""

from model_store.base import LoadedModel, ModelStore
from model_store.errors import ArtifactIntegrityError, InvalidModel, ModelNotFound, StoreError
from model_store.filesystem import FileSystemStore
from model_store.memory import MemoryStore
from model_store.types import FeatureSchema, FeatureSpec, ModelRecord

__all__ = [
    "ArtifactIntegrityError",
    "FeatureSchema",
    "FeatureSpec",
    "FileSystemStore",
    "InvalidModel",
    "LoadedModel",
    "MemoryStore",
    "ModelNotFound",
    "ModelRecord",
    "ModelStore",
    "StoreError",
    "open_store",
]


def open_store(url: str) -> FileSystemStore:
    return FileSystemStore(url)
