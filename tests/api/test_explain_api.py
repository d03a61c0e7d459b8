"""POST /v1/models/{name}/explain as the contract describes it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import auth, customers, features_of

CHURN_FEATURES = None


def churn_features(client: FlaskClient, i: int = 0) -> dict[str, Any]:
    names = client.get("/v1/models", headers=auth("crm")).get_json()["models"]
    schema = next(m for m in names if m["name"] == "churn")["features"]
    return features_of(customers("churn", 5), schema, i)


def explain(
    client: FlaskClient,
    body: dict[str, Any],
    path: str = "/v1/models/churn/explain",
    role: str = "crm",
) -> Any:
    return client.post(path, json=body, headers=auth(role))


def test_an_explanation_has_the_contract_fields(client: FlaskClient) -> None:
    features = churn_features(client)
    response = explain(client, {"instances": [{"customer_id": "C-1001", "features": features}]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model"]["name"] == "churn" and body["model"]["version"] == 1
    assert len(body["model"]["sha256"]) == 64
    [e] = body["explanations"]
    assert e["customer_id"] == "C-1001"
    assert set(e) >= {
        "id",
        "prediction",
        "base_value",
        "method",
        "output",
        "attributions",
        "rationale",
        "quality",
        "archived",
    }
    assert e["prediction"]["class"] in ("Yes", "No")
    assert e["prediction"]["band"] in ("low", "medium", "high")
    assert (e["method"], e["output"]) == ("shap", "probability")
    assert len(e["attributions"]) == len(features)
    assert e["base_value"] + sum(a["contribution"] for a in e["attributions"]) == pytest.approx(
        e["prediction"]["score"], abs=1e-6
    )
    assert e["attributions"][0]["label"] in e["rationale"]


def test_the_kserve_verb_gives_the_same_answer(client: FlaskClient) -> None:
    body = {"instances": [{"features": churn_features(client)}], "output": "log_odds"}
    plain = explain(client, body).get_json()["explanations"][0]
    kserve = explain(client, body, path="/v1/models/churn:explain").get_json()["explanations"][0]
    assert plain["attributions"] == kserve["attributions"]


def test_lime_and_multiclass_requests(client: FlaskClient) -> None:
    names = client.get("/v1/models/case_priority", headers=auth("crm")).get_json()
    feature_names = [f["name"] for f in names["schema"]["features"]]
    features = features_of(customers("case_priority", 2), feature_names, 0)
    body = {"instances": [{"features": features}], "method": "lime", "class": "urgent"}
    response = explain(client, body, path="/v1/models/case_priority/explain")
    e = response.get_json()["explanations"][0]
    assert e["method"] == "lime" and e["explained_class"] == "urgent"
    assert "r2" in e["quality"]


def test_top_k_bounds_the_drivers_named_but_never_the_attributions(client: FlaskClient) -> None:
    features = churn_features(client)
    e = explain(client, {"instances": [{"features": features}], "top_k": 1}).get_json()
    [explanation] = e["explanations"]
    assert len(explanation["attributions"]) == len(features)
    assert explanation["rationale"].count(" is ") <= 3


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/models/nope/explain", {"instances": [{"features": {}}]}, 404, None),
        ("/v1/models/churn/explain", {"instances": []}, 422, "instances"),
        (
            "/v1/models/churn/explain",
            {"instances": [{"features": {}}], "method": "magic"},
            422,
            "method",
        ),
        (
            "/v1/models/churn/explain",
            {"instances": [{"features": {}}], "output": "odds"},
            422,
            "output",
        ),
        ("/v1/models/churn/explain", {"instances": [{"features": {}}], "top_k": 0}, 422, "top_k"),
        (
            "/v1/models/churn/explain",
            {"instances": [{"features": {}}], "surprise": 1},
            422,
            "surprise",
        ),
        (
            "/v1/models/churn/explain",
            {"instances": [{"features": {}}], "version": "x"},
            422,
            "version",
        ),
    ],
)
def test_bad_requests_get_problem_json_naming_the_field(
    client: FlaskClient, path: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    response = client.post(path, json=body, headers=auth("crm"))
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["detail"]
    if field:
        assert field in [e["field"] for e in problem["errors"]]


def test_unknown_version_is_404(client: FlaskClient) -> None:
    body = {"instances": [{"features": churn_features(client)}], "version": 42}
    response = explain(client, body)
    assert response.status_code == 404
    assert "no version 42" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"tenure": "three"}, "instances[0].features.tenure", "valid number"),
        ({"tenure": -5}, "instances[0].features.tenure", "greater than or equal"),
        ({"contract": "Forever"}, "instances[0].features.contract", "Input should be"),
        ({"favourite_colour": "blue"}, "instances[0].features.favourite_colour", "not a field"),
        ({"tenure": True}, "instances[0].features.tenure", "valid number"),
    ],
)
def test_features_the_schema_rejects_are_named(
    client: FlaskClient, change: dict[str, Any], field: str, message: str
) -> None:
    features = churn_features(client) | change
    response = explain(client, {"instances": [{"features": features}]})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors


def test_a_missing_feature_and_nan_are_named(client: FlaskClient) -> None:
    features = churn_features(client)
    del features["tenure"]
    raw = json.dumps({"instances": [{"features": features | {"nps_score": float("nan")}}]})
    response = client.post(
        "/v1/models/churn/explain", data=raw, content_type="application/json", headers=auth("crm")
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"instances[0].features.tenure", "instances[0].features.nps_score"}


def test_too_many_instances_is_413(client: FlaskClient) -> None:
    features = churn_features(client)
    response = explain(client, {"instances": [{"features": features}] * 101})
    assert response.status_code == 413
    assert response.get_json()["errors"][0]["field"] == "instances"


def test_not_json_is_a_clear_4xx(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/churn/explain",
        data="{nope",
        content_type="application/json",
        headers=auth("crm"),
    )
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "body"


def test_keys_and_roles_are_checked(client: FlaskClient) -> None:
    body = {"instances": [{"features": churn_features(client)}]}
    assert client.post("/v1/models/churn/explain", json=body).status_code == 401
    wrong = client.post(
        "/v1/models/churn/explain", json=body, headers={"Authorization": "Bearer x"}
    )
    assert wrong.status_code == 401 and wrong.mimetype == "application/problem+json"
    assert client.get("/v1/models/churn/importance", headers=auth("crm")).status_code == 403
    assert client.get("/healthz").status_code == 200


def test_every_response_carries_a_request_id(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32
