"""What the registry knows about a model: its feature schema and its registered versions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from model_store.errors import InvalidModel

Task = Literal["binary", "multiclass"]
FeatureType = Literal["numeric", "categorical"]
Stage = Literal["none", "production", "archived"]

#: A column with at most this many distinct non-numeric values is inferred as categorical.
MAX_INFERRED_CATEGORIES = 50


@dataclass(frozen=True)
class FeatureSpec:
    """One RAW feature the model takes, as the CRM knows it."""

    name: str
    type: FeatureType
    label: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    description: str | None = None

    @property
    def is_categorical(self) -> bool:
        return self.type == "categorical"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "label": self.label}
        for key in ("unit", "min", "max", "description"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> FeatureSpec:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidModel(f"{where}.name must be a non-empty string")
        kind = raw.get("type")
        if kind not in ("numeric", "categorical"):
            raise InvalidModel(f"{where}.type must be 'numeric' or 'categorical'")
        categories = raw.get("categories")
        if kind == "categorical":
            if not isinstance(categories, list) or not categories:
                raise InvalidModel(f"{where}.categories must list the categories of {name!r}")
            categories = tuple(str(c) for c in categories)
        elif categories is not None:
            raise InvalidModel(f"{where}.categories is only for categorical features")
        bounds = {k: raw.get(k) for k in ("min", "max")}
        for key, value in bounds.items():
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidModel(f"{where}.{key} must be a finite number")
        return cls(
            name=name,
            type=kind,
            label=str(raw.get("label") or name.replace("_", " ").capitalize()),
            unit=raw.get("unit"),
            min=bounds["min"],
            max=bounds["max"],
            categories=categories,
            description=raw.get("description"),
        )


@dataclass(frozen=True)
class FeatureSchema:
    """The contract's schema: task, target, the raw features and the protected attributes."""

    task: Task
    features: tuple[FeatureSpec, ...]
    target: str = "target"
    positive_class: str | None = None
    description: str = ""
    protected_attributes: tuple[str, ...] = ()
    #: Class names in the order of the model's predict_proba columns (filled at registration).
    classes: tuple[str, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "target": self.target,
            "description": self.description,
            "features": [f.to_dict() for f in self.features],
            "protected_attributes": list(self.protected_attributes),
            "classes": list(self.classes),
        }
        if self.positive_class is not None:
            out["positive_class"] = self.positive_class
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSchema:
        task = raw.get("task")
        if task not in ("binary", "multiclass"):
            raise InvalidModel("schema.task must be 'binary' or 'multiclass'")
        features_raw = raw.get("features")
        if not isinstance(features_raw, list) or not features_raw:
            raise InvalidModel("schema.features must be a non-empty list")
        features = tuple(
            FeatureSpec.from_dict(f, f"schema.features[{i}]") for i, f in enumerate(features_raw)
        )
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise InvalidModel("schema.features has duplicate names")
        protected = tuple(str(p) for p in raw.get("protected_attributes") or ())
        clash = sorted(set(protected) & set(names))
        if clash:
            raise InvalidModel(f"protected attributes must not be model inputs: {clash}")
        positive = raw.get("positive_class")
        return cls(
            task=task,
            features=features,
            target=str(raw.get("target") or "target"),
            positive_class=None if positive is None else str(positive),
            description=str(raw.get("description") or ""),
            protected_attributes=protected,
            classes=tuple(str(c) for c in raw.get("classes") or ()),
        )

    def with_classes(self, classes: Sequence[Any]) -> FeatureSchema:
        names = tuple(str(c) for c in classes)
        positive = self.positive_class
        if self.task == "binary":
            if len(names) != 2:
                raise InvalidModel(f"a binary model must have 2 classes, it has {len(names)}")
            if positive is None:
                positive = names[1]
            if positive not in names:
                raise InvalidModel(f"positive_class {positive!r} is not one of {list(names)}")
        return FeatureSchema(
            task=self.task,
            features=self.features,
            target=self.target,
            positive_class=positive,
            description=self.description,
            protected_attributes=self.protected_attributes,
            classes=names,
        )

    @classmethod
    def infer(cls, frame: pd.DataFrame, task: Task = "binary") -> FeatureSchema:
        """A schema from a background sample: numeric columns keep their range,
        other columns become categorical with the values seen."""
        features: list[FeatureSpec] = []
        for name in frame.columns:
            column = frame[name]
            label = str(name).replace("_", " ").capitalize()
            if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
                features.append(
                    FeatureSpec(
                        name=str(name),
                        type="numeric",
                        label=label,
                        min=float(column.min()),
                        max=float(column.max()),
                    )
                )
                continue
            values = sorted({str(v) for v in column.dropna().unique()})
            if len(values) > MAX_INFERRED_CATEGORIES:
                raise InvalidModel(
                    f"cannot infer a schema: column {name!r} has {len(values)} distinct values; "
                    "pass --schema"
                )
            features.append(
                FeatureSpec(
                    name=str(name), type="categorical", label=label, categories=tuple(values)
                )
            )
        return cls(task=task, features=tuple(features))


@dataclass(frozen=True)
class ModelRecord:
    """One registered version of a model."""

    name: str
    version: int
    sha256: str
    schema: FeatureSchema
    stage: Stage = "none"
    created_at: str = ""
    card: Mapping[str, Any] = field(default_factory=dict)
    #: Library versions at registration (sklearn, xgboost...), for provenance.
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "task": self.schema.task,
            "features": self.schema.feature_names,
            "sha256": self.sha256,
        }
