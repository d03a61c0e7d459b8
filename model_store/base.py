"""The registry's one protocol, implemented by ``FileSystemStore`` and ``MemoryStore``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from model_store.types import FeatureSchema, ModelRecord


@dataclass(frozen=True)
class LoadedModel:
    """A verified artifact, unpickled, with what explaining it needs."""

    record: ModelRecord
    estimator: Any
    background: pd.DataFrame


class ModelStore(Protocol):
    def register(
        self,
        name: str,
        artifact: bytes,
        *,
        background: pd.DataFrame,
        schema: FeatureSchema | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Record a new version (1, 2, 3...) of ``name``; the artifact is joblib bytes."""
        ...

    def promote(self, name: str, version: int) -> ModelRecord:
        """Make ``version`` the production version of ``name``; the previous one is archived."""
        ...

    def names(self) -> list[str]: ...

    def versions(self, name: str) -> list[ModelRecord]: ...

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        """A version, or with ``version=None`` the production one (else the latest)."""
        ...

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        """Verify the artifact's SHA-256 against the registered one, then unpickle it."""
        ...
