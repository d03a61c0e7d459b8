"""The results crm-explain hands out: frozen, typed, and convertible to JSON, pandas and shap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pandas and shap load only when a conversion asks for them
    import pandas as pd
    import shap

Method = Literal["shap", "lime"]
OutputSpace = Literal["probability", "log_odds"]
Band = Literal["low", "medium", "high"]

METHODS: tuple[Method, ...] = ("shap", "lime")
OUTPUT_SPACES: tuple[OutputSpace, ...] = ("probability", "log_odds")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelRef:
        return cls(name=raw["name"], version=int(raw["version"]), sha256=raw["sha256"])


@dataclass(frozen=True)
class Attribution:
    """How much one RAW feature moved the explained score away from the base value."""

    feature: str
    label: str
    value: Any
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "label": self.label,
            "value": self.value,
            "contribution": self.contribution,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Attribution:
        return cls(raw["feature"], raw["label"], raw["value"], float(raw["contribution"]))


@dataclass(frozen=True)
class Prediction:
    score: float
    class_: str
    band: Band

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "class": self.class_, "band": self.band}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Prediction:
        return cls(float(raw["score"]), str(raw["class"]), raw["band"])


@dataclass(frozen=True)
class Reason:
    """One principal reason for a customer, in plain words: a code stable across model
    versions and a sentence without model internals (see ``explainer.reasons``)."""

    code: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Reason:
        return cls(str(raw["code"]), str(raw["text"]))


@dataclass(frozen=True)
class Explanation:
    """One decision explained. ``base_value + sum(contributions)`` is the explained score
    in ``output`` space (exactly for SHAP; for LIME, the local surrogate's prediction)."""

    id: str
    customer_id: str | None
    model: ModelRef
    prediction: Prediction
    explained_class: str
    base_value: float
    method: Method
    output: OutputSpace
    attributions: tuple[Attribution, ...]
    rationale: str
    quality: Mapping[str, float | None]
    archived: bool = False
    #: Provenance an auditor can replay: explainer, parameters, seed, library versions.
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: ``{"reasons": [...], "signals": [...]}`` when a quality signal crossed its bound
    #: (``explainer.quality``); None otherwise.
    needs_review: Mapping[str, Any] | None = None
    #: The review case opened automatically for it in the archive, if any.
    review_case_id: str | None = None
    #: Principal reasons for the customer audience (``explainer.reasons``); None otherwise.
    reasons: tuple[Reason, ...] | None = None

    @property
    def explained_score(self) -> float:
        return self.base_value + sum(a.contribution for a in self.attributions)

    def top(self, k: int) -> tuple[Attribution, ...]:
        return self.attributions[:k]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        attributions = self.attributions if top_k is None else self.attributions[:top_k]
        out: dict[str, Any] = {
            "id": self.id,
            "customer_id": self.customer_id,
            "model": self.model.to_dict(),
            "prediction": self.prediction.to_dict(),
            "explained_class": self.explained_class,
            "base_value": self.base_value,
            "method": self.method,
            "output": self.output,
            "attributions": [a.to_dict() for a in attributions],
            "rationale": self.rationale,
            "quality": dict(self.quality),
            "archived": self.archived,
            "meta": dict(self.meta),
            "needs_review": None if self.needs_review is None else dict(self.needs_review),
        }
        if self.review_case_id is not None:
            out["review_case_id"] = self.review_case_id
        if self.reasons is not None:
            out["reasons"] = [r.to_dict() for r in self.reasons]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Explanation:
        return cls(
            id=raw["id"],
            customer_id=raw.get("customer_id"),
            model=ModelRef.from_dict(raw["model"]),
            prediction=Prediction.from_dict(raw["prediction"]),
            explained_class=raw.get("explained_class", raw["prediction"]["class"]),
            base_value=float(raw["base_value"]),
            method=raw["method"],
            output=raw["output"],
            attributions=tuple(Attribution.from_dict(a) for a in raw["attributions"]),
            rationale=raw["rationale"],
            quality=dict(raw.get("quality", {})),
            archived=bool(raw.get("archived", False)),
            meta=dict(raw.get("meta", {})),
            needs_review=None if raw.get("needs_review") is None else dict(raw["needs_review"]),
            review_case_id=raw.get("review_case_id"),
            reasons=None
            if raw.get("reasons") is None
            else tuple(Reason.from_dict(r) for r in raw["reasons"]),
        )

    def replace(self, **changes: Any) -> Explanation:
        from dataclasses import replace

        return replace(self, **changes)


def to_frame(explanations: Sequence[Explanation]) -> pd.DataFrame:
    """One row per explanation, one ``contribution`` column per raw feature (schema order)."""
    import pandas as pd

    rows = []
    for explanation in explanations:
        row: dict[str, Any] = {
            "id": explanation.id,
            "customer_id": explanation.customer_id,
            "score": explanation.prediction.score,
            "class": explanation.explained_class,
            "base_value": explanation.base_value,
        }
        row.update({a.feature: a.contribution for a in explanation.attributions})
        rows.append(row)
    return pd.DataFrame(rows)


def to_shap(explanations: Sequence[Explanation], feature_order: Sequence[str]) -> shap.Explanation:
    """A ``shap.Explanation`` (values, base_values, data, feature_names) so shap's plots work."""
    import shap

    values = np.array(
        [[_contribution(e, name) for name in feature_order] for e in explanations], dtype=float
    )
    data = np.array(
        [[_value(e, name) for name in feature_order] for e in explanations], dtype=object
    )
    base = np.array([e.base_value for e in explanations], dtype=float)
    return shap.Explanation(
        values=values, base_values=base, data=data, feature_names=list(feature_order)
    )


def _contribution(explanation: Explanation, feature: str) -> float:
    return next(a.contribution for a in explanation.attributions if a.feature == feature)


def _value(explanation: Explanation, feature: str) -> Any:
    return next(a.value for a in explanation.attributions if a.feature == feature)
