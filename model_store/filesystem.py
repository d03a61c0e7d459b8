"""A versioned registry on a folder or any fsspec URL.

Layout::

    <root>/<name>/stage.json                  {"production": 3}
    <root>/<name>/v<version>/model.joblib     the artifact, exactly as registered
    <root>/<name>/v<version>/background.parquet
    <root>/<name>/v<version>/record.json      sha256s, schema, card, environment

Only files whose SHA-256 matches the one recorded at registration are ever unpickled:
``load`` hashes the bytes it read and refuses them on any difference.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import fsspec
import joblib
import numpy as np
import pandas as pd

from model_store.base import LoadedModel
from model_store.errors import ArtifactIntegrityError, InvalidModel, ModelNotFound
from model_store.types import FeatureSchema, ModelRecord, Stage

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
PROVENANCE_PACKAGES = ("scikit-learn", "xgboost", "numpy", "pandas")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidModel(
            f"model name {name!r} is not valid: use lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return name


class FileSystemStore:
    """The registry on ``url``: a local folder or an fsspec URL (``s3://bucket/models``...)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, self._root = fsspec.core.url_to_fs(url)
        self._fs.makedirs(self._root, exist_ok=True)
        #: Each version's record.json, parsed: written once, last, at registration, and never
        #: changed, so it is read once per process. Stages (stage.json) are read every time.
        self._records: dict[tuple[str, int], ModelRecord] = {}

    # -- writing -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        artifact: bytes,
        *,
        background: pd.DataFrame,
        schema: FeatureSchema | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        check_name(name)
        estimator = _unpickle(artifact, f"the artifact for {name!r}")
        schema = _complete_schema(estimator, schema or FeatureSchema.infer(background))
        background = _check_background(estimator, schema, background)
        version = self._next_version(name)
        folder = self._version_dir(name, version)
        self._fs.makedirs(folder, exist_ok=False)
        background_bytes = _parquet_bytes(background)
        record = ModelRecord(
            name=name,
            version=version,
            sha256=sha256_hex(artifact),
            schema=schema,
            stage="none",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            card=dict(card or {}),
            environment=_environment(),
        )
        self._write(f"{folder}/model.joblib", artifact)
        self._write(f"{folder}/background.parquet", background_bytes)
        meta = _record_to_json(record) | {"background_sha256": sha256_hex(background_bytes)}
        # record.json last: a version without it was never completely registered
        self._write(f"{folder}/record.json", json.dumps(meta, indent=2).encode())
        return record

    def promote(self, name: str, version: int) -> ModelRecord:
        self.get(name, version)
        self._write(
            f"{self._model_dir(name)}/stage.json", json.dumps({"production": version}).encode()
        )
        return self.get(name, version)

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self._fs.exists(self._root):
            return []
        return sorted(
            path.rstrip("/").rsplit("/", 1)[-1]
            for path in self._fs.ls(self._root, detail=False)
            if self._fs.isdir(path) and self._versions_on_disk(path.rstrip("/").rsplit("/", 1)[-1])
        )

    def versions(self, name: str) -> list[ModelRecord]:
        numbers = self._versions_on_disk(name)
        if not numbers:
            raise ModelNotFound(f"model {name!r} is not registered")
        production = self._production_version(name)
        return [self._read_record(name, v, production) for v in numbers]

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        records = self.versions(name)
        if version is None:
            production = [r for r in records if r.stage == "production"]
            return production[0] if production else records[-1]
        for record in records:
            if record.version == version:
                return record
        raise ModelNotFound(f"model {name!r} has no version {version}")

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        record = self.get(name, version)
        folder = self._version_dir(name, record.version)
        artifact = self._read_verified(f"{folder}/model.joblib", record.sha256, record.ref)
        meta = json.loads(self._fs.cat_file(f"{folder}/record.json"))
        background_bytes = self._read_verified(
            f"{folder}/background.parquet", meta["background_sha256"], record.ref
        )
        estimator = _unpickle(artifact, f"the artifact of {record.ref}")
        background = pd.read_parquet(io.BytesIO(background_bytes))
        return LoadedModel(record=record, estimator=estimator, background=background)

    # -- internals -----------------------------------------------------------------------
    def _model_dir(self, name: str) -> str:
        return f"{self._root}/{name}"

    def _version_dir(self, name: str, version: int) -> str:
        return f"{self._model_dir(name)}/v{version}"

    def _versions_on_disk(self, name: str) -> list[int]:
        folder = self._model_dir(name)
        if not self._fs.exists(folder):
            return []
        numbers = []
        for path in self._fs.ls(folder, detail=False):
            leaf = path.rstrip("/").rsplit("/", 1)[-1]
            if re.fullmatch(r"v\d+", leaf) and self._fs.exists(f"{path}/record.json"):
                numbers.append(int(leaf[1:]))
        return sorted(numbers)

    def _next_version(self, name: str) -> int:
        folder = self._model_dir(name)
        if not self._fs.exists(folder):
            return 1
        leaves = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(folder, detail=False)]
        taken = [int(leaf[1:]) for leaf in leaves if re.fullmatch(r"v\d+", leaf)]
        return max(taken, default=0) + 1

    def _production_version(self, name: str) -> int | None:
        path = f"{self._model_dir(name)}/stage.json"
        if not self._fs.exists(path):
            return None
        return int(json.loads(self._fs.cat_file(path))["production"])

    def _read_record(self, name: str, version: int, production: int | None) -> ModelRecord:
        stage: Stage
        if version == production:
            stage = "production"
        elif production is not None and version < production:
            stage = "archived"
        else:
            stage = "none"
        return replace(self._registered_record(name, version), stage=stage)

    def _registered_record(self, name: str, version: int) -> ModelRecord:
        cached = self._records.get((name, version))
        if cached is not None:
            return cached
        meta = json.loads(self._fs.cat_file(f"{self._version_dir(name, version)}/record.json"))
        record = ModelRecord(
            name=name,
            version=version,
            sha256=meta["sha256"],
            schema=FeatureSchema.from_dict(meta["schema"]),
            stage="none",
            created_at=meta["created_at"],
            card=meta.get("card", {}),
            environment=meta.get("environment", {}),
        )
        self._records[(name, version)] = record
        return record

    def _read_verified(self, path: str, expected: str, ref: str) -> bytes:
        try:
            data: bytes = self._fs.cat_file(path)
        except FileNotFoundError:
            raise ArtifactIntegrityError(
                f"{ref} cannot be loaded: {path.rsplit('/', 1)[-1]} is missing"
            ) from None
        if sha256_hex(data) != expected:
            raise ArtifactIntegrityError(
                f"{ref} is refused: {path.rsplit('/', 1)[-1]} does not match the SHA-256 "
                "recorded at registration (tampered or corrupted)"
            )
        return data

    def _write(self, path: str, data: bytes) -> None:
        with self._fs.open(path, "wb") as handle:
            handle.write(data)


def _unpickle(artifact: bytes, what: str) -> Any:
    try:
        return joblib.load(io.BytesIO(artifact))
    except Exception as exc:  # any unpickling failure means "not a model artifact"
        raise InvalidModel(f"{what} is not a joblib model artifact ({exc})") from exc


def _complete_schema(estimator: Any, schema: FeatureSchema) -> FeatureSchema:
    if not hasattr(estimator, "predict_proba"):
        raise InvalidModel("the artifact has no predict_proba; crm-explain explains classifiers")
    classes = list(getattr(estimator, "classes_", []))
    if not classes:
        raise InvalidModel("the artifact is not fitted: it has no classes_")
    if schema.classes:
        if len(schema.classes) != len(classes):
            raise InvalidModel(
                f"schema.classes lists {len(schema.classes)} classes, the model has {len(classes)}"
            )
        classes = list(schema.classes)
    if schema.task == "binary" and len(classes) > 2:
        schema = FeatureSchema.from_dict(schema.to_dict() | {"task": "multiclass"})
    return schema.with_classes(classes)


def _check_background(
    estimator: Any, schema: FeatureSchema, background: pd.DataFrame
) -> pd.DataFrame:
    missing = [name for name in schema.feature_names if name not in background.columns]
    if missing:
        raise InvalidModel(f"the background sample lacks the schema's features {missing}")
    if len(background) < 10:
        raise InvalidModel("the background sample needs at least 10 rows")
    frame = background[schema.feature_names].reset_index(drop=True)
    try:
        proba = np.asarray(estimator.predict_proba(frame))
    except Exception as exc:  # the model must accept its own schema's raw columns
        raise InvalidModel(f"the model cannot score its background sample: {exc}") from exc
    if proba.shape != (len(frame), len(schema.classes)):
        raise InvalidModel("predict_proba does not return one column per class")
    return frame


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _record_to_json(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "schema": record.schema.to_dict(),
        "created_at": record.created_at,
        "card": dict(record.card),
        "environment": dict(record.environment),
    }


def _environment() -> dict[str, str]:
    found = {}
    for package in PROVENANCE_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found
