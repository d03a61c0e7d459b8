"""Who may call what: every route that requires a role, against no key, a wrong key and each
role's key. Roles rank crm < analyst < auditor < admin; a key is refused (403) exactly when its
role ranks below the one required. New endpoints are covered as soon as they exist."""

from __future__ import annotations

import re
import tempfile
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from explainer.api import create_app
from explainer.api.openapi import is_page, operation_methods
from explainer.config import Settings
from explainer.keys import ROLES, KeyRing
from explainer.service import ExplainerService
from model_store import MemoryStore
from tests.conftest import KEYS, auth

UNAUTHENTICATED = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


def _rules() -> list[tuple[str, str, str]]:
    """(rule, method, required role) of every protected route, from an app on an empty store."""
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.from_env(
            {"CRM_EXPLAIN_HOME": home}, api_keys=KEYS, archive_enabled=False
        )
        app = create_app(
            settings, service=ExplainerService(MemoryStore()), keys=KeyRing.from_plain(KEYS)
        )
    return sorted(
        (rule.rule, method, role)
        for rule in app.url_map.iter_rules()
        if (role := getattr(app.view_functions[rule.endpoint], "required_role", None))
        for method in operation_methods(rule)
    )


PROTECTED = _rules()


def url_for_rule(rule: str) -> str:
    """A URL the rule matches. Models are named but unknown, so nothing is computed or changed
    once a key has passed: the answer is a 404 or 422, never a 401 or 403."""
    return re.sub(
        r"<(?:[^:>]+:)?([^>]+)>",
        lambda m: "no_such_model" if m.group(1) == "name" else "no-such-id",
        rule,
    )


def call(client: FlaskClient, method: str, url: str, headers: dict[str, str]) -> tuple[int, str]:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    response = client.open(url, method=method, headers=headers, json=body)
    return response.status_code, response.mimetype or ""


def test_the_matrix_covers_the_contracts_endpoints() -> None:
    covered = {(rule, method) for rule, method, _ in PROTECTED}
    assert {
        ("/v1/models", "GET"),
        ("/v1/models/<name>", "GET"),
        ("/v1/models/<name>/explain", "POST"),
        ("/v1/models/<name>:explain", "POST"),
        ("/v1/models/<name>/importance", "GET"),
        ("/v1/importance/compare", "GET"),
        ("/v1/models/<name>/promote", "POST"),
    } <= covered


@pytest.mark.parametrize(
    ("rule", "method", "required"), PROTECTED, ids=[f"{m} {r}" for r, m, _ in PROTECTED]
)
def test_each_role_is_refused_exactly_below_the_required_one(
    client: FlaskClient, rule: str, method: str, required: str
) -> None:
    url = url_for_rule(rule)
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic eDp5"}):
        status, mimetype = call(client, method, url, headers)
        assert (status, mimetype) == (401, "application/problem+json"), headers
    for role in ROLES:
        status, mimetype = call(client, method, url, auth(role))
        if ROLES.index(role) < ROLES.index(required):
            assert (status, mimetype) == (403, "application/problem+json"), role
        else:
            assert status not in (401, 403), role
            assert status < 500 or status == 503, (role, status)  # 503: no archive in this app


def test_every_api_route_requires_a_role(app: Flask) -> None:
    """Only the service's own endpoints, the pages (they sign in with a session) and static
    files answer without a key."""
    open_routes = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if not getattr(app.view_functions[rule.endpoint], "required_role", None)
        and not rule.endpoint.endswith("static")
        and not is_page(rule)
    ]
    assert sorted(open_routes) == sorted(UNAUTHENTICATED)


@pytest.mark.parametrize("path", UNAUTHENTICATED)
def test_the_service_endpoints_answer_without_a_key(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, path
    assert client.get(path, headers={"Authorization": "Bearer not-a-key"}).status_code == 200


def test_a_rule_url_is_built_for_every_parameter() -> None:
    assert url_for_rule(Rule("/v1/x/<name>/<int:n>").rule) == "/v1/x/no_such_model/no-such-id"
