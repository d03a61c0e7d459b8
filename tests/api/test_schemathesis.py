"""Schemathesis against the app's own /openapi.json, in process (WSGI): every operation, with
generated valid and invalid requests under the admin key, must answer without a server error
and exactly as the document says (status, content type, headers, body schema)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings

from explainer.api import create_app
from explainer.archive import Secrets, open_archive
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from model_store import FileSystemStore, MemoryStore
from tests.conftest import KEYS, auth, customers, features_of

#: Examples per operation: small enough that the whole file runs in about a minute.
MAX_EXAMPLES = 50


@pytest.fixture
def fuzzed_app(
    settings: Settings, store: FileSystemStore, demo_service: ExplainerService, tmp_path: Path
) -> Iterator[Flask]:
    """The demo models on a store of this test's own (promotion and erasure may change it),
    with an archive, so every operation can answer."""
    archive = open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate())
    service = ExplainerService(store, archive=archive)
    service._models = demo_service._models  # the same artifacts, already verified and loaded
    yield create_app(settings, service=service, keys=KeyRing.from_plain(KEYS))
    archive.close()


def _document() -> dict[str, Any]:
    """The document, from an app on an empty store (it does not depend on the models), so
    that pytest can collect one test per operation before any fixture exists."""
    with tempfile.TemporaryDirectory() as home:
        bare = Settings.from_env({"CRM_EXPLAIN_HOME": home}, api_keys=KEYS, archive_enabled=False)
        service = ExplainerService(MemoryStore())
        app = create_app(bare, service=service, keys=KeyRing.from_plain(KEYS))
        return app.test_client().get("/openapi.json").get_json()  # type: ignore[no-any-return]


DOCUMENT = _document()
CONFIG = schemathesis.Config.from_dict(
    {
        "base-url": "http://localhost",  # requests go to the app itself (WSGI)
        "auth": {"openapi": {"bearer": {"bearer": "admin-key"}}},
        "checks": {
            # A request the document calls valid may still name an unknown model (404), or
            # features that are not the named model's (422: each model has its own schema).
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "413", "422"]
            },
            # More instances than the documented limit is a 413, as the document says.
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "422"]
            },
        },
        "operations": [
            {
                # The pages for a browser are documented only loosely (HTML, session sign-in,
                # CSRF tokens): of them, only "no server error" is checked.
                "include-tag": "pages",
                "checks": {
                    "enabled": False,
                    "not_a_server_error": {"enabled": True},
                },
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def use_app(case: schemathesis.Case[Any], app: Flask) -> None:
    """Send ``case`` (and the checks' own probes) to this test's app, with its own archive."""
    case.operation.app = app
    case.operation.schema.app = app


def test_the_fuzzed_document_is_the_apps(fuzzed_app: Flask) -> None:
    assert fuzzed_app.test_client().get("/openapi.json").get_json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_keeps_to_the_document(
    case: schemathesis.Case[Any], fuzzed_app: Flask
) -> None:
    use_app(case, fuzzed_app)
    case.call_and_validate()


def call(
    app: Flask,
    method: str,
    path: str,
    role: str = "admin",
    *,
    status: int = 200,
    **parts: Any,
) -> Any:
    """One hand-made request through schemathesis, so every check judges its answer."""
    case = schema[path][method].Case(media_type="application/json", **parts)
    use_app(case, app)
    response = case.call_and_validate(headers=auth(role))
    assert response.status_code == status, response.text
    kind = str(response.headers.get("content-type") or response.headers.get("Content-Type"))
    return response.json() if "json" in kind else None


def test_successful_answers_keep_to_the_document(fuzzed_app: Flask) -> None:
    """Generated requests rarely name a real model, features or archive record: so check a
    successful answer of each operation explicitly, in the order a CRM and an auditor would."""
    card = call(fuzzed_app, "GET", "/v1/models/{name}", path_parameters={"name": "churn"})
    names = [f["name"] for f in card["schema"]["features"]]
    features = features_of(customers("churn", 3), names, 0)
    body = {"instances": [{"customer_id": "C-1", "features": features}]}
    explained = [
        call(fuzzed_app, "POST", path, "crm", path_parameters={"name": "churn"}, body=body)
        for path in ("/v1/models/{name}/explain", "/v1/models/{name}:explain")
    ]
    explanation_id = explained[0]["explanations"][0]["id"]
    call(fuzzed_app, "GET", "/v1/models")
    call(
        fuzzed_app,
        "GET",
        "/v1/models/{name}/importance",
        path_parameters={"name": "lead_score"},
        query={"method": "shap"},
    )
    call(fuzzed_app, "GET", "/v1/importance/compare", query={"models": "lead_score@1,churn@1"})
    call(
        fuzzed_app,
        "POST",
        "/v1/models/{name}/promote",
        path_parameters={"name": "churn"},
        body={"version": 1},
    )
    page = call(fuzzed_app, "GET", "/v1/audit/explanations", query={"limit": 1})
    assert page["next_cursor"]
    call(fuzzed_app, "GET", "/v1/audit/explanations", query={"cursor": page["next_cursor"]})
    call(
        fuzzed_app,
        "GET",
        "/v1/audit/explanations/{record_id}",
        path_parameters={"record_id": explanation_id},
    )
    case = call(
        fuzzed_app,
        "POST",
        "/v1/explanations/{explanation_id}/contest",
        "crm",
        status=201,
        path_parameters={"explanation_id": explanation_id},
        body={"reason": "The tenure is wrong."},
    )
    call(fuzzed_app, "GET", "/v1/reviews", query={"status": "open"})
    call(
        fuzzed_app,
        "POST",
        "/v1/reviews/{case_id}",
        "auditor",
        path_parameters={"case_id": case["case_id"]},
        body={"decision": "upheld", "note": "Checked."},
    )
    call(fuzzed_app, "GET", "/v1/audit/verify", "auditor")
    call(fuzzed_app, "POST", "/v1/audit/exports", "auditor", body={"model": "churn"})
    call(fuzzed_app, "DELETE", "/v1/subjects/{customer_id}", path_parameters={"customer_id": "C-1"})
    assert call(fuzzed_app, "GET", "/v1/audit/verify", "auditor")["ok"]
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics", "/docs"):
        call(fuzzed_app, "GET", path)
