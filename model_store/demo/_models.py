"""Train the three demo models on the synthetic CRM data and describe them."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from model_store.base import ModelStore
from model_store.demo._cards import CARDS, HOW_TO_CONTEST
from model_store.demo._data import DEFAULT_SEED, ID_COLUMN, PROTECTED, SPECS, DemoSpec, demo_frame
from model_store.types import FeatureSchema, ModelRecord

N_TRAIN = 8000
N_AUDIT = 2000
N_BACKGROUND = 200
THRESHOLD = 0.5
#: For case_priority a case is "selected" (escalated) when P(high) + P(urgent) >= THRESHOLD.
ESCALATED = ("high", "urgent")


@dataclass(frozen=True)
class DemoModel:
    """A trained demo model with everything the registry and the explainers need."""

    name: str
    estimator: Any
    schema: FeatureSchema
    background: pd.DataFrame
    card: dict[str, Any]
    audit_frame: pd.DataFrame


def _categorical(schema: FeatureSchema) -> list[str]:
    return [f.name for f in schema.features if f.is_categorical]


def _numeric(schema: FeatureSchema) -> list[str]:
    return [f.name for f in schema.features if not f.is_categorical]


def _one_hot(schema: FeatureSchema) -> OneHotEncoder:
    """Categories come from the schema, so every category has a column even if unseen."""
    categories = [list(f.categories or ()) for f in schema.features if f.is_categorical]
    return OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)


def _churn_estimator(schema: FeatureSchema, seed: int) -> Pipeline:
    prep = ColumnTransformer(
        [("cat", _one_hot(schema), _categorical(schema))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    model = XGBClassifier(
        n_estimators=300,
        max_depth=6,
        learning_rate=0.05,
        n_jobs=1,
        random_state=seed,
        tree_method="hist",
    )
    return Pipeline([("prep", prep), ("model", model)])


def _case_estimator(schema: FeatureSchema, seed: int) -> Pipeline:
    prep = ColumnTransformer(
        [("cat", _one_hot(schema), _categorical(schema))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    model = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=seed, n_jobs=1)
    return Pipeline([("prep", prep), ("model", model)])


def _lead_estimator(schema: FeatureSchema, seed: int) -> Pipeline:
    steps = [
        ("num", StandardScaler(), _numeric(schema)),
        ("cat", _one_hot(schema), _categorical(schema)),
    ]
    prep = ColumnTransformer(steps, verbose_feature_names_out=False)
    return Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])


@dataclass(frozen=True)
class _Recipe:
    build: Callable[[FeatureSchema, int], Pipeline]
    #: XGBoost wants 0..k-1 labels: fit on the index of the label in ``DemoSpec.classes``.
    integer_labels: bool


_RECIPES = {
    "churn": _Recipe(_churn_estimator, integer_labels=True),
    "case_priority": _Recipe(_case_estimator, integer_labels=False),
    "lead_score": _Recipe(_lead_estimator, integer_labels=False),
}


def _fit(spec: DemoSpec, train: pd.DataFrame, seed: int) -> tuple[Pipeline, FeatureSchema]:
    recipe = _RECIPES[spec.name]
    estimator = recipe.build(spec.schema, seed)
    labels = train[spec.schema.target]
    if recipe.integer_labels:
        # churn: "No" -> 0, "Yes" -> 1, so estimator.classes_ == [0, 1] and column 1 of
        # predict_proba is P(churn == "Yes"); the schema's classes are ("No", "Yes").
        labels = labels.map({c: i for i, c in enumerate(spec.classes)}).astype(np.int64)
    estimator.fit(train[spec.schema.feature_names], labels)
    classes = [
        spec.classes[int(c)] if recipe.integer_labels else str(c) for c in estimator.classes_
    ]
    return estimator, spec.schema.with_classes(classes)


def _true_index(schema: FeatureSchema, labels: pd.Series) -> np.ndarray:
    index = labels.map({c: i for i, c in enumerate(schema.classes)})
    return np.asarray(index.to_numpy(dtype=np.int64))


def _metrics(schema: FeatureSchema, proba: np.ndarray, labels: pd.Series) -> dict[str, Any]:
    y = _true_index(schema, labels)
    k = len(schema.classes)
    if schema.task == "binary":
        pos = schema.classes.index(schema.positive_class or schema.classes[1])
        auc = roc_auc_score(y == pos, proba[:, pos])
    else:
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(k)))
    return {
        "split": f"held-out synthetic sample of {len(y)} rows",
        "n": len(y),
        "auc": round(float(auc), 4),
        "auc_kind": "ROC AUC" if schema.task == "binary" else "macro one-vs-rest ROC AUC",
        "accuracy": round(float(np.mean(proba.argmax(axis=1) == y)), 4),
        "log_loss": round(float(log_loss(y, proba, labels=list(range(k)))), 4),
    }


def _selection_scores(schema: FeatureSchema, proba: np.ndarray) -> np.ndarray:
    """The score a fairness audit thresholds: P(positive class), or for case_priority
    P(high) + P(urgent)."""
    if schema.task == "binary":
        return np.asarray(proba[:, schema.classes.index(schema.positive_class or "")])
    return np.asarray(sum(proba[:, schema.classes.index(c)] for c in ESCALATED))


def _ratio(low: float, high: float) -> float:
    return round(low / high, 4) if high > 0 else 1.0


def _fairness(schema: FeatureSchema, proba: np.ndarray, frame: pd.DataFrame) -> dict[str, Any]:
    selected = pd.Series(_selection_scores(schema, proba) >= THRESHOLD, index=frame.index)
    out: dict[str, Any] = {
        "threshold": THRESHOLD,
        "selected_means": f"score >= {THRESHOLD}"
        + ("" if schema.task == "binary" else " where score = P(high) + P(urgent)"),
    }
    for attribute in PROTECTED:
        rates = selected.groupby(frame[attribute]).mean()
        out[attribute] = {
            "selection_rate": {str(g): round(float(r), 4) for g, r in rates.items()},
            "disparate_impact_ratio": _ratio(float(rates.min()), float(rates.max())),
        }
    return out


def _card(
    spec: DemoSpec,
    seed: int,
    train: pd.DataFrame,
    metrics: dict[str, Any],
    fairness: dict[str, Any],
) -> dict[str, Any]:
    labels = train[spec.schema.target].value_counts(normalize=True)
    training_data = {
        "source": "synthetic CRM data from model_store.demo (no real people)",
        "seed": seed,
        "rows": len(train),
        "label_distribution": {str(c): round(float(labels.get(c, 0.0)), 4) for c in spec.classes},
        "protected_attributes_in_training": False,
    }
    return {
        **CARDS[spec.name],
        "training_data": training_data,
        "metrics": metrics,
        "fairness": fairness,
        "how_to_contest": HOW_TO_CONTEST,
    }


def build_demo_model(name: str, seed: int = DEFAULT_SEED) -> DemoModel:
    spec = SPECS[name]
    frame = demo_frame(name, N_TRAIN + N_AUDIT, seed).drop(columns=ID_COLUMN)
    train = frame.iloc[:N_TRAIN].reset_index(drop=True)
    audit = frame.iloc[N_TRAIN:].reset_index(drop=True)
    estimator, schema = _fit(spec, train, seed)
    proba = estimator.predict_proba(audit[schema.feature_names])
    metrics = _metrics(schema, proba, audit[schema.target])
    card = _card(spec, seed, train, metrics, _fairness(schema, proba, audit))
    # The rows are i.i.d., so the first training rows are a random background sample.
    background = train[schema.feature_names].iloc[:N_BACKGROUND].reset_index(drop=True)
    return DemoModel(name, estimator, schema, background, card, audit)


def build_demo_models(seed: int = DEFAULT_SEED) -> list[DemoModel]:
    """Train churn, case_priority and lead_score; the same seed gives identical models."""
    return [build_demo_model(name, seed) for name in SPECS]


def artifact_bytes(estimator: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def seed_demo(store: ModelStore, models: Iterable[DemoModel] | None = None) -> list[ModelRecord]:
    """Register every demo model (``models``, already built, or trained now) as a new version
    and promote it to production."""
    records = []
    for model in build_demo_models() if models is None else models:
        record = store.register(
            model.name,
            artifact_bytes(model.estimator),
            background=model.background,
            schema=model.schema,
            card=model.card,
        )
        records.append(store.promote(model.name, record.version))
    return records
