"""The demo models: deterministic synthetic CRM data, complete schemas and cards, a real proxy."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Mapping
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from model_store.base import LoadedModel
from model_store.demo import DemoModel, build_demo_models, demo_frame, seed_demo
from model_store.errors import ModelNotFound
from model_store.types import FeatureSchema, ModelRecord

NAMES = ["churn", "case_priority", "lead_score"]
PROTECTED = ("gender", "age_band")
#: Held-out AUC floors (binary ROC AUC; macro one-vs-rest for case_priority).
AUC_FLOOR = {"churn": 0.80, "case_priority": 0.80, "lead_score": 0.78}
CARD_FIELDS = {
    "owner",
    "intended_use",
    "out_of_scope",
    "limitations",
    "training_data",
    "metrics",
    "ethical_considerations",
    "how_to_contest",
    "known_proxy",
}


class FakeStore:
    """Just enough of the ModelStore protocol to watch ``seed_demo`` at work."""

    def __init__(self) -> None:
        self.records: dict[str, list[ModelRecord]] = {}
        self.artifacts: dict[tuple[str, int], bytes] = {}
        self.backgrounds: dict[tuple[str, int], pd.DataFrame] = {}

    def register(
        self,
        name: str,
        artifact: bytes,
        *,
        background: pd.DataFrame,
        schema: FeatureSchema | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        assert schema is not None
        version = len(self.records.get(name, [])) + 1
        record = ModelRecord(
            name, version, hashlib.sha256(artifact).hexdigest(), schema, card=dict(card or {})
        )
        self.records.setdefault(name, []).append(record)
        self.artifacts[name, version] = artifact
        self.backgrounds[name, version] = background
        return record

    def promote(self, name: str, version: int) -> ModelRecord:
        """The version becomes production; the previous production version is archived."""
        versions = self.records[name]
        if not any(r.version == version for r in versions):
            raise ModelNotFound(f"{name}@{version}")
        for i, record in enumerate(versions):
            if record.version == version:
                versions[i] = dataclasses.replace(record, stage="production")
            elif record.stage == "production":
                versions[i] = dataclasses.replace(record, stage="archived")
        return self.get(name, version)

    def names(self) -> list[str]:
        return sorted(self.records)

    def versions(self, name: str) -> list[ModelRecord]:
        return list(self.records[name])

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        for record in self.records[name]:
            if record.version == version or (version is None and record.stage == "production"):
                return record
        raise ModelNotFound(name)

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        record = self.get(name, version)
        artifact = self.artifacts[name, record.version]
        return LoadedModel(
            record, joblib.load(io.BytesIO(artifact)), self.backgrounds[name, record.version]
        )


@pytest.fixture(scope="module")
def models() -> dict[str, DemoModel]:
    return {m.name: m for m in build_demo_models()}


@pytest.fixture(scope="module")
def seeded() -> tuple[FakeStore, list[ModelRecord]]:
    store = FakeStore()
    return store, seed_demo(store)


def artifact_bytes(estimator: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def predict(model: DemoModel, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.estimator.predict_proba(frame[model.schema.feature_names]))


def scores(model: DemoModel, proba: np.ndarray) -> np.ndarray:
    """P(positive class); for case_priority P(high) + P(urgent)."""
    classes = model.schema.classes
    if model.schema.task == "binary":
        return np.asarray(proba[:, classes.index(model.schema.positive_class or "")])
    return np.asarray(proba[:, classes.index("high")] + proba[:, classes.index("urgent")])


def assert_respects_schema(frame: pd.DataFrame, schema: FeatureSchema) -> None:
    for spec in schema.features:
        column = frame[spec.name]
        assert not column.isna().any(), spec.name
        if spec.is_categorical:
            assert set(column) <= set(spec.categories or ()), spec.name
        else:
            assert pd.api.types.is_numeric_dtype(column), spec.name
            assert np.isfinite(column).all(), spec.name
            assert spec.min is not None and spec.max is not None, spec.name
            assert column.min() >= spec.min and column.max() <= spec.max, spec.name


def test_builds_the_three_models(models: dict[str, DemoModel]) -> None:
    assert list(models) == NAMES
    assert [m.schema.task for m in models.values()] == ["binary", "multiclass", "binary"]
    assert [m.schema.target for m in models.values()] == ["churn", "priority", "converted"]


def test_same_seed_gives_identical_data_and_predictions(models: dict[str, DemoModel]) -> None:
    again = {m.name: m for m in build_demo_models()}
    for name, model in models.items():
        pd.testing.assert_frame_equal(model.audit_frame, again[name].audit_frame)
        pd.testing.assert_frame_equal(model.background, again[name].background)
        first = predict(model, model.audit_frame)
        assert first.tobytes() == predict(again[name], model.audit_frame).tobytes()
        assert model.card == again[name].card


@pytest.mark.parametrize("name", NAMES)
def test_demo_frame_is_deterministic_and_seed_dependent(name: str) -> None:
    pd.testing.assert_frame_equal(demo_frame(name, 300), demo_frame(name, 300))
    assert not demo_frame(name, 300).equals(demo_frame(name, 300, seed=7))


@pytest.mark.parametrize("name", NAMES)
def test_demo_frame_has_ids_features_protected_and_label(
    models: dict[str, DemoModel], name: str
) -> None:
    schema = models[name].schema
    frame = demo_frame(name, 25)
    assert list(frame.columns) == [
        "customer_id",
        *schema.feature_names,
        *PROTECTED,
        schema.target,
    ]
    assert frame["customer_id"].iloc[0] == "C-000001"
    assert all(re.fullmatch(r"C-\d{6}", c) for c in frame["customer_id"])
    assert frame["customer_id"].is_unique
    assert set(frame[schema.target]) <= set(schema.classes)


def test_demo_frame_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown demo model"):
        demo_frame("fraud", 10)


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_complete_and_covers_exactly_the_background(
    models: dict[str, DemoModel], name: str
) -> None:
    model = models[name]
    schema = model.schema
    assert list(model.background.columns) == schema.feature_names
    assert len(model.background) == 200
    assert schema.description and schema.protected_attributes == PROTECTED
    for spec in schema.features:
        assert spec.label and spec.label != spec.name
        if spec.is_categorical:
            assert spec.categories and len(set(spec.categories)) == len(spec.categories)
        else:
            assert spec.unit and spec.min is not None and spec.max is not None
            assert spec.min < spec.max
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


@pytest.mark.parametrize("name", NAMES)
def test_every_value_respects_the_schema(models: dict[str, DemoModel], name: str) -> None:
    model = models[name]
    assert_respects_schema(model.background, model.schema)
    assert_respects_schema(model.audit_frame, model.schema)
    # A large sample reaches the tails; the bounds are the generator's, not the sample's.
    assert_respects_schema(demo_frame(name, 50_000, seed=1), model.schema)


@pytest.mark.parametrize("name", NAMES)
def test_protected_attributes_are_in_the_data_but_not_features(
    models: dict[str, DemoModel], name: str
) -> None:
    model = models[name]
    assert not set(PROTECTED) & set(model.schema.feature_names)
    audit = model.audit_frame
    assert len(audit) == 2000
    assert list(audit.columns) == [*model.schema.feature_names, *PROTECTED, model.schema.target]
    assert set(audit["gender"]) == {"F", "M", "X"}
    assert set(audit["age_band"]) == {"18-29", "30-44", "45-64", "65+"}
    assert not audit.isna().any().any()


def test_schema_classes_follow_the_predict_proba_columns(models: dict[str, DemoModel]) -> None:
    churn = models["churn"]
    # XGBoost was fitted on 0/1 labels: column 1 is churn == "Yes".
    assert list(churn.estimator.classes_) == [0, 1]
    assert churn.schema.classes == ("No", "Yes") and churn.schema.positive_class == "Yes"
    lead = models["lead_score"]
    assert lead.schema.classes == tuple(lead.estimator.classes_)
    assert lead.schema.positive_class == "converted"
    case = models["case_priority"]
    assert case.schema.classes == tuple(case.estimator.classes_)
    assert set(case.schema.classes) == {"low", "normal", "high", "urgent"}
    assert case.schema.positive_class is None


@pytest.mark.parametrize("name", NAMES)
def test_predict_proba_takes_raw_features(models: dict[str, DemoModel], name: str) -> None:
    model = models[name]
    proba = predict(model, model.background)
    assert proba.shape == (200, len(model.schema.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    encoded = model.estimator.named_steps["prep"].transform(model.background)
    assert isinstance(encoded, np.ndarray) and encoded.dtype == np.float64


@pytest.mark.parametrize("name", NAMES)
def test_held_out_metrics_clear_a_floor_and_match_the_card(
    models: dict[str, DemoModel], name: str
) -> None:
    model = models[name]
    audit, schema = model.audit_frame, model.schema
    proba = predict(model, audit)
    y = audit[schema.target].map({c: i for i, c in enumerate(schema.classes)}).to_numpy()
    if schema.task == "binary":
        pos = schema.classes.index(schema.positive_class or "")
        auc = roc_auc_score(y == pos, proba[:, pos])
    else:
        auc = roc_auc_score(y, proba, multi_class="ovr")
    assert auc >= AUC_FLOOR[name]
    assert auc < 0.97, "the synthetic task should not be trivially separable"
    metrics = model.card["metrics"]
    assert metrics["auc"] == pytest.approx(auc, abs=1e-4)
    assert metrics["n"] == 2000 and 0 < metrics["log_loss"] < 1.5
    assert metrics["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y), abs=1e-4)


def test_churn_selects_the_65_plus_band_disproportionately(models: dict[str, DemoModel]) -> None:
    churn = models["churn"]
    audit = churn.audit_frame
    selected = pd.Series(scores(churn, predict(churn, audit)) >= 0.5)
    rates = selected.groupby(audit["age_band"]).mean()
    assert rates.min() / rates.max() < 0.8
    assert rates.idxmax() == "65+"
    assert churn.card["fairness"]["age_band"]["disparate_impact_ratio"] == pytest.approx(
        rates.min() / rates.max(), abs=1e-4
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_known_proxy_is_a_feature_that_tracks_age(
    models: dict[str, DemoModel], name: str
) -> None:
    model = models[name]
    proxy = model.card["known_proxy"]
    assert proxy["protected"] == "age_band"
    assert proxy["feature"] in model.schema.feature_names
    frame = demo_frame(name, 20_000, seed=3)
    shares = pd.crosstab(frame["age_band"], frame[proxy["feature"]], normalize="index")
    assert (shares.max() - shares.min()).max() > 0.25  # some category's share moves with age
    selected = pd.Series(scores(model, predict(model, model.audit_frame)) >= 0.5)
    rates = selected.groupby(model.audit_frame["age_band"]).mean()
    assert rates.min() / rates.max() < 0.8


@pytest.mark.parametrize("name", NAMES)
def test_card_is_complete_and_json_ready(models: dict[str, DemoModel], name: str) -> None:
    card = models[name].card
    assert set(card) >= CARD_FIELDS
    assert all(card[field] for field in CARD_FIELDS)
    assert json.loads(json.dumps(card)) == card


def test_seed_demo_registers_and_promotes_the_three_models(
    models: dict[str, DemoModel], seeded: tuple[FakeStore, list[ModelRecord]]
) -> None:
    store, records = seeded
    assert [r.name for r in records] == NAMES
    assert all(r.version == 1 and r.stage == "production" for r in records)
    for record in records:
        model = models[record.name]
        assert record.schema == model.schema and dict(record.card) == model.card
        pd.testing.assert_frame_equal(store.backgrounds[record.name, 1], model.background)
        loaded = store.load(record.name)
        assert loaded.record == record
        proba = np.asarray(loaded.estimator.predict_proba(model.background))
        assert proba.tobytes() == predict(model, model.background).tobytes()
        # Same seed, same pickle: re-seeding an unchanged store registers identical bytes.
        assert record.sha256 == hashlib.sha256(artifact_bytes(model.estimator)).hexdigest()
