"""Models, cards, importance and comparison over HTTP."""

from __future__ import annotations

import io

import joblib
import pytest
from flask.testing import FlaskClient

from explainer.service import ExplainerService
from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests.conftest import DEMO_NAMES, auth


def test_models_lists_every_serving_model(client: FlaskClient) -> None:
    models = client.get("/v1/models", headers=auth("crm")).get_json()["models"]
    assert sorted(m["name"] for m in models) == sorted(DEMO_NAMES)
    churn = next(m for m in models if m["name"] == "churn")
    assert churn["stage"] == "production" and churn["task"] == "binary"
    assert "tenure" in churn["features"]


def test_a_model_card_has_schema_versions_owner_use_limits_and_metrics(client: FlaskClient) -> None:
    card = client.get("/v1/models/churn", headers=auth("crm")).get_json()
    for key in ("schema", "versions", "owner", "intended_use", "limitations", "metrics"):
        assert card[key], key
    assert client.get("/v1/models/nope", headers=auth("crm")).status_code == 404


def test_importance_ranks_every_raw_feature(client: FlaskClient) -> None:
    body = client.get("/v1/models/lead_score/importance", headers=auth("analyst")).get_json()
    assert body["method"] == "shap" and body["n_rows"] == 200
    ranks = [row["rank"] for row in body["importances"]]
    assert ranks == list(range(1, len(ranks) + 1))
    values = [row["mean_abs"] for row in body["importances"]]
    assert values == sorted(values, reverse=True)


def test_compare_sets_versions_side_by_side(client: FlaskClient) -> None:
    response = client.get(
        "/v1/importance/compare?models=lead_score@1,churn@1", headers=auth("analyst")
    )
    body = response.get_json()
    assert body["models"] == ["lead_score@1", "churn@1"]
    assert body["rank_correlation"] is None  # no features in common
    for bad in ("lead_score@x", "lead_score@1,lead_score@1", "lead_score@1"):
        response = client.get(f"/v1/importance/compare?models={bad}", headers=auth("analyst"))
        assert response.status_code == 422, bad
        assert response.get_json()["errors"][0]["field"] == "models"


def test_two_versions_of_one_model_compare_feature_by_feature(
    store: FileSystemStore, demo_models: dict[str, DemoModel]
) -> None:
    lead = demo_models["lead_score"]
    buffer = io.BytesIO()
    joblib.dump(lead.estimator, buffer)
    store.register("lead_score", buffer.getvalue(), background=lead.background, schema=lead.schema)
    result = ExplainerService(store).compare(["lead_score@1", "lead_score@2"])
    assert result["rank_correlation"] == pytest.approx(1.0)
    assert all(f["rank_change"] == 0 for f in result["features"])
    assert all(set(f["values"]) == {"lead_score@1", "lead_score@2"} for f in result["features"])


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert sorted(ready.get_json()["models"]) == sorted(DEMO_NAMES)
