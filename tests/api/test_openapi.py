"""/openapi.json describes every route of the app, from the code that checks the requests;
/docs renders it from the service's own assets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from openapi_spec_validator import validate
from werkzeug.routing import Rule

from explainer.api.openapi import (
    OPERATIONS,
    Problem,
    documented_rules,
    is_page,
    openapi_path,
    operation_methods,
)
from explainer.validation import (
    MAX_JSON_DEPTH,
    CompareQuery,
    ExplainRequest,
    ImportanceQuery,
)
from tests.conftest import auth

ERROR_STATUSES = {"401", "403", "404", "413", "422", "503"}


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()  # type: ignore[no-any-return]


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method.upper(), op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }


def test_every_route_of_the_app_is_documented_and_nothing_else(
    app: Flask, spec: dict[str, Any]
) -> None:
    routes = {
        (openapi_path(rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.endswith(".static")
        for method in operation_methods(rule)
    }
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert routes == documented
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v1/models",
        "/v1/models/{name}/explain",
        "/v1/models/{name}:explain",
        "/v1/models/{name}/importance",
        "/v1/importance/compare",
        "/v1/models/{name}",
    } <= set(spec["paths"])


def test_every_api_route_has_a_declared_operation(app: Flask) -> None:
    """The table says what code cannot (summary, response shape); pages are described loosely."""
    undeclared = [
        (rule.rule, method)
        for rule in documented_rules(app)
        if not is_page(rule)
        for method in operation_methods(rule)
        if (rule.rule, method) not in OPERATIONS
    ]
    assert not undeclared, f"add these to explainer.api.openapi.OPERATIONS: {undeclared}"


def test_security_follows_the_role_each_view_requires(app: Flask, spec: dict[str, Any]) -> None:
    for rule in documented_rules(app):
        role = getattr(app.view_functions[rule.endpoint], "required_role", None)
        for method in operation_methods(rule):
            op = spec["paths"][openapi_path(rule)][method.lower()]
            if role is None:
                assert op["security"] == [], rule
                continue
            assert op["security"] == [{"bearer": []}], rule
            assert op["x-required-role"] == role, rule
            assert {"401", "403", "503"} <= set(op["responses"]), rule
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_errors_are_documented_as_problem_json(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert problem["properties"]["errors"]["items"]["$ref"].endswith("/FieldProblem")
    seen: set[str] = set()
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if status in ERROR_STATUSES and (path, status) != ("/readyz", "503"):
                seen.add(status)
                assert response["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
            assert response["headers"]["X-Request-ID"]["required"] is True
    assert seen == ERROR_STATUSES
    assert set(Problem.model_fields) >= {"type", "title", "status", "detail", "errors"}


def test_bodies_and_parameters_come_from_the_validating_models(
    app: Flask, spec: dict[str, Any]
) -> None:
    schemas = spec["components"]["schemas"]
    explain = schemas["ExplainRequest"]
    pydantic_schema = ExplainRequest.model_json_schema()
    assert set(explain["properties"]) == set(pydantic_schema["properties"]) >= {"class", "top_k"}
    assert explain["additionalProperties"] is False
    limit = app.extensions["crm_explain"].settings.max_instances
    assert explain["properties"]["instances"]["maxItems"] == limit
    for path in ("/v1/models/{name}/explain", "/v1/models/{name}:explain"):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ExplainRequest")
        assert {"413", "422"} <= set(spec["paths"][path]["post"]["responses"])
    importance = spec["paths"]["/v1/models/{name}/importance"]["get"]["parameters"]
    assert [p["name"] for p in importance if p["in"] == "query"] == list(
        ImportanceQuery.model_fields
    )
    compare = spec["paths"]["/v1/importance/compare"]["get"]["parameters"]
    assert [(p["name"], p["required"]) for p in compare] == [
        (name, field.is_required()) for name, field in CompareQuery.model_fields.items()
    ]
    name = spec["paths"]["/v1/models/{name}"]["get"]["parameters"][0]
    assert name["in"] == "path" and name["schema"]["pattern"]


def test_what_the_document_declares_is_enforced(client: FlaskClient) -> None:
    bad = {
        "/v1/models/churn/importance?version=%C2%B2": "version",  # a superscript two
        "/v1/models/churn/importance?method=magic": "method",
        "/v1/importance/compare?models=churn@%C2%B2,churn@1": "models",
        "/v1/importance/compare?models=churn@1": "models",
        "/v1/importance/compare": "models",
    }
    for url, field in bad.items():
        response = client.get(url, headers=auth("analyst"))
        assert response.status_code == 422, url
        assert field in [e["field"] for e in response.get_json()["errors"]], url
    empty_is_absent = client.get("/v1/models/churn/importance?version=", headers=auth("crm"))
    assert empty_is_absent.status_code == 403  # the role is checked before the parameters
    assert client.get("/v1/models/Not%20A%20Name", headers=auth("crm")).status_code == 404


def test_the_limits_are_documented(spec: dict[str, Any]) -> None:
    description = spec["info"]["description"]
    assert "100 instances" in description and "1000000 bytes" in description
    assert f"{MAX_JSON_DEPTH} levels" in description and "60 s" in description


def test_the_docs_page_loads_from_local_assets_only(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", page.replace("</", "")), "external URL"
    assert "<script" not in page.lower()
    links = re.findall(r'(?:href|src)="([^"#][^"]*)"', page)
    assert links, "the page links its stylesheet"
    for link in links:
        assert link.startswith("/"), link
        with client.get(link) as asset:
            assert asset.status_code == 200, link
    for path, _, op in operations(spec):
        assert op["operationId"] in page
        assert str(escape(path)) in page


def test_unknown_rules_are_described_from_their_docstring() -> None:
    from explainer.api.openapi import _operation

    rule = Rule("/v1/things/<thing_id>", methods=["POST"], endpoint="things.make")
    op = _operation(rule, "POST", None, "analyst", "Make a thing.\n\nMore.", "things")
    assert op["summary"] == "Make a thing"
    assert op["parameters"][0]["name"] == "thing_id"
    assert {"401", "403", "404", "413", "422", "503", "default"} <= set(op["responses"])
