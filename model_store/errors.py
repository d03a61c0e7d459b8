"""Errors of the model registry.

    StoreError
    ├── ModelNotFound           no such model, version or production stage
    ├── ArtifactIntegrityError  the artifact differs from the one registered, or it is gone
    └── InvalidModel            a schema, artifact or card that cannot be registered

The registry sits below ``explainer`` and so has its own small tree; the API's error
table and the CLI map these alongside ``explainer.exceptions``.
"""

from __future__ import annotations


class StoreError(Exception):
    code = "store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(StoreError):
    code = "model_not_found"


class ArtifactIntegrityError(StoreError):
    code = "artifact_integrity_error"


class InvalidModel(StoreError):
    code = "invalid_model"
