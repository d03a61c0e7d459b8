"""An in-memory registry for tests and notebooks: the filesystem store on fsspec's memory://."""

from __future__ import annotations

import uuid

from model_store.filesystem import FileSystemStore


class MemoryStore(FileSystemStore):
    def __init__(self) -> None:
        super().__init__(f"memory://crm-explain-{uuid.uuid4().hex}")
