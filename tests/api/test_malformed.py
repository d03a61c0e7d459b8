"""A catalogue of malformed requests, across every endpoint: each gets a 4xx problem+json that
names the offending field, none a 5xx, and afterwards the service still explains correctly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import auth, customers, features_of

Features = dict[str, Any]
Body = Any  # JSON-able, raw text (str), or a function of valid churn features returning either

EXPLAIN = "/v1/models/churn/explain"


@dataclass(frozen=True)
class Bad:
    id: str
    path: str
    status: int
    field: str | None = None
    body: Body = None
    method: str = "POST"
    role: str = "crm"
    content_type: str = "application/json"


def instance(change: Features | None = None, drop: str | None = None, /, **extra: Any) -> Body:
    """An explain body of one churn instance, changed."""

    def build(valid: Features) -> Any:
        features = {k: v for k, v in valid.items() if k != drop} | (change or {})
        return {"instances": [{"features": features}], **extra}

    return build


def raw_feature(name: str, literal: str) -> Body:
    """An explain body whose feature ``name`` is a raw JSON literal (NaN, Infinity, 1e400)."""

    def build(valid: Features) -> str:
        features = {k: v for k, v in valid.items() if k != name}
        text = json.dumps({"instances": [{"features": features}]})
        return text.replace('"features": {', f'"features": {{"{name}": {literal}, ', 1)

    return build


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# One case a line, as a table: formatting it would spread each over six.
# fmt: off
CATALOGUE = [
    # -- explain: the shape of the body
    Bad("missing instances", EXPLAIN, 422, "instances", {}),
    Bad("instances not a list", EXPLAIN, 422, "instances", {"instances": {"features": {}}}),
    Bad("instances null", EXPLAIN, 422, "instances", {"instances": None}),
    Bad("no instances", EXPLAIN, 422, "instances", {"instances": []}),
    Bad("instance not an object", EXPLAIN, 422, "instances[0]", {"instances": [5]}),
    Bad("instance a string", EXPLAIN, 422, "instances[0]", {"instances": ["tenure=3"]}),
    Bad("features missing", EXPLAIN, 422, "instances[0].features", {"instances": [{}]}),
    Bad("features a list", EXPLAIN, 422, "instances[0].features",
        {"instances": [{"features": [1, 2]}]}),
    Bad("features null", EXPLAIN, 422, "instances[0].features",
        {"instances": [{"features": None}]}),
    Bad("unknown top-level field", EXPLAIN, 422, "surprise", instance(surprise=1)),
    Bad("unknown instance field", EXPLAIN, 422, "instances[0].score",
        lambda f: {"instances": [{"features": f, "score": 0.9}]}),
    # -- explain: feature values against the model's schema
    Bad("numeric as text", EXPLAIN, 422, "instances[0].features.tenure",
        instance({"tenure": "3"})),
    Bad("numeric as bool", EXPLAIN, 422, "instances[0].features.tenure",
        instance({"tenure": True})),
    Bad("numeric as object", EXPLAIN, 422, "instances[0].features.tenure",
        instance({"tenure": {"months": 3}})),
    Bad("NaN literal", EXPLAIN, 422, "instances[0].features.tenure", raw_feature("tenure", "NaN")),
    Bad("Infinity literal", EXPLAIN, 422, "instances[0].features.tenure",
        raw_feature("tenure", "Infinity")),
    Bad("-Infinity literal", EXPLAIN, 422, "instances[0].features.tenure",
        raw_feature("tenure", "-Infinity")),
    Bad("number overflowing a float", EXPLAIN, 422, "instances[0].features.tenure",
        raw_feature("tenure", "1e400")),
    Bad("integer beyond any float", EXPLAIN, 422, "instances[0].features.tenure",
        raw_feature("tenure", "9" * 400)),
    Bad("integer of 5000 digits", EXPLAIN, 422, "body", raw_feature("tenure", "9" * 5000)),
    Bad("below the minimum", EXPLAIN, 422, "instances[0].features.tenure",
        instance({"tenure": -5})),
    Bad("unknown category", EXPLAIN, 422, "instances[0].features.contract",
        instance({"contract": "Forever"})),
    Bad("category of the wrong type", EXPLAIN, 422, "instances[0].features.contract",
        instance({"contract": 1})),
    Bad("category null", EXPLAIN, 422, "instances[0].features.contract",
        instance({"contract": None})),
    Bad("unknown feature", EXPLAIN, 422, "instances[0].features.favourite_colour",
        instance({"favourite_colour": "blue"})),
    Bad("missing feature", EXPLAIN, 422, "instances[0].features.tenure", instance(None, "tenure")),
    # -- explain: options
    Bad("top_k as text", EXPLAIN, 422, "top_k", instance(top_k="5")),
    Bad("top_k zero", EXPLAIN, 422, "top_k", instance(top_k=0)),
    Bad("top_k fractional", EXPLAIN, 422, "top_k", instance(top_k=1.5)),
    Bad("top_k huge", EXPLAIN, 422, "top_k", instance(top_k=10**12)),
    Bad("unknown method", EXPLAIN, 422, "method", instance(method="magic")),
    Bad("method not a string", EXPLAIN, 422, "method", instance(method=1)),
    Bad("unknown output", EXPLAIN, 422, "output", instance(output="odds")),
    Bad("class not a string", EXPLAIN, 422, "class", instance(**{"class": 5})),
    Bad("class empty", EXPLAIN, 422, "class", instance(**{"class": ""})),
    Bad("class the model lacks", EXPLAIN, 422, "class", instance(**{"class": "Maybe"})),
    Bad("version as text", EXPLAIN, 422, "version", instance(version="x")),
    Bad("version zero", EXPLAIN, 422, "version", instance(version=0)),
    Bad("version fractional", EXPLAIN, 422, "version", instance(version=1.5)),
    Bad("version a bool", EXPLAIN, 422, "version", instance(version=True)),
    Bad("unknown version", EXPLAIN, 404, None, instance(version=42)),
    Bad("customer_id too long", EXPLAIN, 422, "instances[0].customer_id",
        lambda f: {"instances": [{"customer_id": "C" * 129, "features": f}]}),
    Bad("customer_id a number", EXPLAIN, 422, "instances[0].customer_id",
        lambda f: {"instances": [{"customer_id": 1001, "features": f}]}),
    Bad("customer_id empty", EXPLAIN, 422, "instances[0].customer_id",
        lambda f: {"instances": [{"customer_id": "", "features": f}]}),
    Bad("customer_id a lone surrogate", EXPLAIN, 422, "instances[0].customer_id",
        lambda f: '{"instances": [{"customer_id": "\\ud800", "features": ' + json.dumps(f) + "}]}"),
    # -- explain: the body as a whole
    Bad("nested 40 levels deep", EXPLAIN, 422, "body", instance({"tenure": nested(40)})),
    Bad("nested 100000 levels deep", EXPLAIN, 422, "body", "[" * 100_000 + "]" * 100_000),
    Bad("not JSON", EXPLAIN, 422, "body", "{nope"),
    Bad("truncated JSON", EXPLAIN, 422, "body", '{"instances": [{"features": {'),
    Bad("not UTF-8", EXPLAIN, 422, "body", b'{"instances": "\xff\xfe"}'),
    Bad("empty body", EXPLAIN, 422, "body", ""),
    Bad("null body", EXPLAIN, 422, "body", "null"),
    Bad("array body", EXPLAIN, 422, "body", "[]"),
    Bad("string body", EXPLAIN, 422, "body", '"explain me"'),
    Bad("text/plain", EXPLAIN, 422, "body", instance(), content_type="text/plain"),
    Bad("a form", EXPLAIN, 422, "body", "instances=1",
        content_type="application/x-www-form-urlencoded"),
    Bad("no content type", EXPLAIN, 422, "body", "{}", content_type=""),
    Bad("101 instances", EXPLAIN, 413, "instances",
        lambda f: {"instances": [{"features": f}] * 101}),
    Bad("body over 1 MB", EXPLAIN, 413, None, '{"pad": "%s"}' % ("x" * 1_000_001)),
    Bad("unknown model", "/v1/models/nope/explain", 404, None, instance()),
    Bad("invalid model name", "/v1/models/Churn!/explain", 404, None, instance()),
    Bad("the KServe verb, no instances", "/v1/models/churn:explain", 422, "instances", {}),
    Bad("the KServe verb, unknown model", "/v1/models/nope:explain", 404, None, instance()),
    Bad("explain by GET", EXPLAIN, 405, None, method="GET"),
    Bad("explain by DELETE", EXPLAIN, 405, None, method="DELETE"),
    # -- models
    Bad("model list by PUT", "/v1/models", 405, None, {}, method="PUT"),
    Bad("unknown model card", "/v1/models/nope", 404, None, method="GET"),
    Bad("promote without a version", "/v1/models/churn/promote", 422, "version", {},
        role="admin"),
    Bad("promote to a text version", "/v1/models/churn/promote", 422, "version",
        {"version": "1"}, role="admin"),
    Bad("promote an unknown version", "/v1/models/churn/promote", 404, None,
        {"version": 99}, role="admin"),
    Bad("promote, a list body", "/v1/models/churn/promote", 422, "body", "[1]", role="admin"),
    # -- importance and comparison
    Bad("importance, version as text", "/v1/models/churn/importance?version=abc", 422, "version",
        method="GET", role="analyst"),
    Bad("importance, version zero", "/v1/models/churn/importance?version=0", 422, "version",
        method="GET", role="analyst"),
    Bad("importance, a superscript version", "/v1/models/churn/importance?version=%C2%B2", 422,
        "version", method="GET", role="analyst"),
    Bad("importance, unknown method", "/v1/models/churn/importance?method=magic", 422, "method",
        method="GET", role="analyst"),
    Bad("importance, unknown output", "/v1/models/churn/importance?output=odds", 422, "output",
        method="GET", role="analyst"),
    Bad("importance, unknown model", "/v1/models/nope/importance", 404, None, method="GET",
        role="analyst"),
    Bad("importance, unknown version", "/v1/models/churn/importance?version=99", 404, None,
        method="GET", role="analyst"),
    Bad("compare nothing", "/v1/importance/compare", 422, "models", method="GET",
        role="analyst"),
    Bad("compare one model", "/v1/importance/compare?models=churn@1", 422, "models",
        method="GET", role="analyst"),
    Bad("compare a bad reference", "/v1/importance/compare?models=churn@x,churn@1", 422,
        "models", method="GET", role="analyst"),
    Bad("compare a superscript version", "/v1/importance/compare?models=churn@%C2%B2,churn@1",
        422, "models", method="GET", role="analyst"),
    Bad("compare a model twice", "/v1/importance/compare?models=churn@1,churn@1", 422, "models",
        method="GET", role="analyst"),
    Bad("compare an unknown model", "/v1/importance/compare?models=nope@1,churn@1", 404, None,
        method="GET", role="analyst"),
    Bad("compare, unknown method", "/v1/importance/compare?models=churn@1,lead_score@1&method=x",
        422, "method", method="GET", role="analyst"),
    # -- audit and oversight (the parameters are checked before the archive is reached)
    Bad("audit, limit zero", "/v1/audit/explanations?limit=0", 422, "limit", method="GET",
        role="auditor"),
    Bad("audit, limit as text", "/v1/audit/explanations?limit=many", 422, "limit", method="GET",
        role="auditor"),
    Bad("audit, since not a time", "/v1/audit/explanations?since=yesterday", 422, "since",
        method="GET", role="auditor"),
    Bad("audit, since before the calendar", "/v1/audit/explanations?since=0001-01-01T00:00%2B05:00",
        422, "since", method="GET", role="auditor"),
    Bad("audit, a forged cursor", "/v1/audit/explanations?cursor=%25%25%25", 422, "cursor",
        method="GET", role="auditor"),
    Bad("audit, a huge cursor", "/v1/audit/explanations?cursor=" + "A" * 200, 422, "cursor",
        method="GET", role="auditor"),
    Bad("audit, customer_id too long", "/v1/audit/explanations?customer_id=" + "C" * 129, 422,
        "customer_id", method="GET", role="auditor"),
    Bad("reviews, unknown status", "/v1/reviews?status=maybe", 422, "status", method="GET",
        role="auditor"),
    Bad("contest without a reason", "/v1/explanations/abc/contest", 422, "reason", {}),
    Bad("decide an unknown decision", "/v1/reviews/abc", 422, "decision",
        {"decision": "maybe"}, role="auditor"),
    Bad("export since not a time", "/v1/audit/exports", 422, "since", {"since": "soon"},
        role="auditor"),
    Bad("export since a number", "/v1/audit/exports", 422, "since", {"since": 1700000000},
        role="auditor"),
    # -- routes
    Bad("unknown route", "/v1/nothing", 404, None, method="GET"),
    Bad("unknown version of the API", "/v2/models", 404, None, method="GET"),
    Bad("a path traversal", "/v1/models/..%2F..%2Fetc", 404, None, method="GET"),
    Bad("health by POST", "/healthz", 405, None, {}),
]
# fmt: on


def test_the_catalogue_is_large_and_distinct() -> None:
    assert len(CATALOGUE) >= 40
    assert len({bad.id for bad in CATALOGUE}) == len(CATALOGUE)


def churn_features(client: FlaskClient) -> Features:
    card = client.get("/v1/models/churn", headers=auth("crm")).get_json()
    names = [f["name"] for f in card["schema"]["features"]]
    return features_of(customers("churn", 3), names, 0)


def send(client: FlaskClient, bad: Bad, valid: Features) -> Any:
    body = bad.body(valid) if callable(bad.body) else bad.body
    data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    headers = auth(bad.role)
    if bad.content_type:
        headers["Content-Type"] = bad.content_type
    return client.open(bad.path, method=bad.method, data=data, headers=headers)


def test_every_malformed_request_gets_a_problem_naming_the_field(client: FlaskClient) -> None:
    valid = churn_features(client)
    for bad in CATALOGUE:
        response = send(client, bad, valid)
        context = f"{bad.id}: {response.status_code} {response.get_data(as_text=True)[:300]}"
        assert response.status_code == bad.status, context
        assert response.mimetype == "application/problem+json", context
        problem = response.get_json()
        assert problem["status"] == bad.status, context
        assert problem["type"].startswith("https://") and problem["title"], context
        assert isinstance(problem["detail"], str) and problem["detail"], context
        if bad.field is not None:
            assert bad.field in [e["field"] for e in problem["errors"]], context
    # ... and the service still answers a valid request, correctly
    response = client.post(EXPLAIN, json={"instances": [{"features": valid}]}, headers=auth("crm"))
    assert response.status_code == 200, response.get_json()
    [explanation] = response.get_json()["explanations"]
    total = explanation["base_value"] + sum(a["contribution"] for a in explanation["attributions"])
    assert total == pytest.approx(explanation["prediction"]["score"], abs=1e-6)
    assert len(explanation["attributions"]) == len(valid)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_numbers_are_refused_wherever_they_appear(
    client: FlaskClient, literal: str
) -> None:
    features = json.dumps(churn_features(client))
    for name in ("top_k", "version"):
        text = f'{{"instances": [{{"features": {features}}}], "{name}": {literal}}}'
        response = client.post(
            EXPLAIN, data=text, content_type="application/json", headers=auth("crm")
        )
        assert response.status_code == 422, (name, literal)
        assert name in [e["field"] for e in response.get_json()["errors"]]
