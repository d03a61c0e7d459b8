"""Fixtures of the page tests: an app with an archive, a second churn version to compare, and
a signed-in test client per role."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import pytest
from flask import Flask
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.archive import Secrets, open_archive
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from model_store import MemoryStore
from model_store.demo import DemoModel
from tests.conftest import KEYS, customers, features_of, register_demo

#: The CRM origin allowed to embed the why card in these tests.
CRM_ORIGIN = "https://crm.example.com"


def demo_store_with_churn_v2(demo_models: dict[str, DemoModel]) -> MemoryStore:
    """The three demo models, and churn@2: the same trees described over another background
    sample, so global importances (and some ranks) differ between the versions."""
    store = MemoryStore()
    register_demo(store, demo_models)
    churn = demo_models["churn"]
    buffer = io.BytesIO()
    joblib.dump(churn.estimator, buffer)
    other = customers("churn", 200, seed=2024)[churn.schema.feature_names]
    store.register(
        "churn", buffer.getvalue(), background=other, schema=churn.schema, card=churn.card
    )
    return store


def pages_service(
    demo_models: dict[str, DemoModel], demo_service: ExplainerService, archive_path: Path
) -> ExplainerService:
    archive = open_archive(f"sqlite:///{archive_path}", Secrets.generate())
    service = ExplainerService(demo_store_with_churn_v2(demo_models), archive=archive)
    service._models = dict(demo_service._models)  # the demo artifacts, already verified and loaded
    return service


@pytest.fixture
def web_service(
    demo_models: dict[str, DemoModel], demo_service: ExplainerService, tmp_path: Path
) -> Iterator[ExplainerService]:
    service = pages_service(demo_models, demo_service, tmp_path / "archive.db")
    yield service
    service.close()


@pytest.fixture
def web_app(settings: Settings, web_service: ExplainerService) -> Flask:
    settings = replace(settings, embed_origins=(CRM_ORIGIN,))
    return create_app(settings, service=web_service, keys=KeyRing.from_plain(KEYS))


@pytest.fixture
def web(web_app: Flask) -> Iterator[FlaskClient]:
    """A browser-like client, signed out."""
    with web_app.test_client() as client:
        yield client


def csrf(client: FlaskClient) -> str:
    """The session's CSRF token (a page with a form made it)."""
    with client.session_transaction("/ui/") as session:
        token = session.get("csrf")
    if token is None:
        client.get("/ui/login")
        return csrf(client)
    return str(token)


def sign_in(client: FlaskClient, role: str) -> None:
    client.get("/ui/login")
    response = client.post("/ui/login", data={"csrf_token": csrf(client), "api_key": f"{role}-key"})
    assert response.status_code == 302, response.text


@pytest.fixture
def customer(demo_models: dict[str, DemoModel]) -> dict[str, Any]:
    """A churn customer the models were not trained on, as the API takes the features."""
    return features_of(
        customers("churn", 10, seed=11), demo_models["churn"].schema.feature_names, 0
    )


def drivers_on(page: str) -> list[tuple[str, float]]:
    """``(feature, contribution)`` of every driver the page shows, in its order."""
    return [
        (feature, float(value))
        for feature, value in re.findall(
            r'data-feature="([^"]+)" data-contribution="([^"]+)"', page
        )
    ]
