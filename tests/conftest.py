"""Shared fixtures: the demo models (trained once per session), services and apps on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from model_store import FileSystemStore, MemoryStore
from model_store.demo import DemoModel, build_demo_models, demo_frame, seed_demo

KEYS = {"crm-key": "crm", "analyst-key": "analyst", "auditor-key": "auditor", "admin-key": "admin"}
DEMO_NAMES = ("churn", "case_priority", "lead_score")


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {role}-key"}


@pytest.fixture(scope="session")
def demo_models() -> dict[str, DemoModel]:
    return {m.name: m for m in build_demo_models()}


def register_demo(store: FileSystemStore, demo_models: dict[str, DemoModel]) -> None:
    seed_demo(store, demo_models.values())


@pytest.fixture(scope="session")
def demo_store(demo_models: dict[str, DemoModel]) -> FileSystemStore:
    """A read-only registry holding the three demo models (tests must not write to it)."""
    store = MemoryStore()
    register_demo(store, demo_models)
    return store


@pytest.fixture(scope="session")
def demo_service(demo_store: FileSystemStore) -> ExplainerService:
    return ExplainerService(demo_store)


@pytest.fixture
def store(demo_models: dict[str, DemoModel]) -> FileSystemStore:
    """A fresh registry with the demo models that a test may change."""
    fresh = MemoryStore()
    register_demo(fresh, demo_models)
    return fresh


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"CRM_EXPLAIN_HOME": str(tmp_path / "home")}, api_keys=KEYS, archive_enabled=False
    )


@pytest.fixture
def app(settings: Settings, demo_service: ExplainerService) -> Flask:
    return create_app(settings, service=demo_service, keys=KeyRing.from_plain(KEYS))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def customers(name: str, n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` synthetic customers of a demo model, not seen in training."""
    return demo_frame(name, n, seed=seed)


def features_of(frame: pd.DataFrame, names: list[str], i: int) -> dict[str, object]:
    row = frame.iloc[i]
    return {n: (row[n].item() if hasattr(row[n], "item") else row[n]) for n in names}


@pytest.fixture
def archive_service(demo_service: ExplainerService, tmp_path: Path) -> Iterator[ExplainerService]:
    """The demo models (already loaded) with a fresh SQLite archive of the test's own."""
    from explainer.archive import Secrets, open_archive

    archive = open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate())
    service = ExplainerService(demo_service.store, archive=archive)
    service._models = demo_service._models  # share the verified, loaded models
    yield service
    archive.close()


@pytest.fixture
def archived_client(settings: Settings, archive_service: ExplainerService) -> Iterator[FlaskClient]:
    app = create_app(settings, service=archive_service, keys=KeyRing.from_plain(KEYS))
    with app.test_client() as client:
        yield client
