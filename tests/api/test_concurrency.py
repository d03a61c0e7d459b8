"""`crm-explain serve` runs threaded workers: requests in flight together share a process, its
models, its explainers' caches and its archive writer. Answers must not depend on that."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.archive import Secrets, open_archive
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from model_store import FileSystemStore
from tests.conftest import KEYS, auth, customers, features_of

#: (model, method, output) of the requests sent together; each model in its usual spaces.
CASES = [
    ("churn", "shap", "probability"),
    ("churn", "shap", "log_odds"),
    ("churn", "lime", "probability"),
    ("case_priority", "shap", "probability"),
    ("lead_score", "shap", "probability"),
    ("lead_score", "shap", "log_odds"),
    ("lead_score", "lime", "probability"),
]
ROWS = 3


def requests_to_send(store: FileSystemStore) -> list[dict[str, Any]]:
    bodies = []
    for model, method, output in CASES:
        names = store.get(model).schema.feature_names
        frame = customers(model, ROWS, seed=11)
        for i in range(ROWS):
            instance = {"customer_id": f"{model}-{i}", "features": features_of(frame, names, i)}
            body = {"instances": [instance], "method": method, "output": output}
            bodies.append({"model": model, "body": body})
    return bodies


def answer(client: FlaskClient, request: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"/v1/models/{request['model']}/explain", json=request["body"], headers=auth("crm")
    )
    assert response.status_code == 200, response.get_json()
    explanation = response.get_json()["explanations"][0]
    return {
        key: explanation[key]
        for key in ("prediction", "base_value", "attributions", "rationale", "quality")
    }


@pytest.fixture
def fresh_client(demo_store: FileSystemStore, tmp_path: Path) -> Iterator[FlaskClient]:
    """A service that has loaded nothing yet, so the threads race to build every cache."""
    archive = open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate())
    service = ExplainerService(demo_store, archive=archive)
    settings = Settings.from_env({"CRM_EXPLAIN_HOME": str(tmp_path)})
    app = create_app(settings, service=service, keys=KeyRing.from_plain(KEYS))
    yield app.test_client()  # no `with`: that would keep each request's context on its thread
    archive.close()


def test_concurrent_requests_get_the_answers_they_get_alone(
    client: FlaskClient, fresh_client: FlaskClient, demo_store: FileSystemStore
) -> None:
    batch = requests_to_send(demo_store) * 2
    alone = [answer(client, request) for request in batch]

    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda request: answer(fresh_client, request), batch))

    assert together == alone


def test_every_concurrent_explanation_is_archived_once_and_the_chain_verifies(
    fresh_client: FlaskClient, demo_store: FileSystemStore
) -> None:
    batch = requests_to_send(demo_store)

    def explain(request: dict[str, Any]) -> str:
        response = fresh_client.post(
            f"/v1/models/{request['model']}/explain", json=request["body"], headers=auth("crm")
        )
        assert response.status_code == 200
        return str(response.get_json()["explanations"][0]["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(pool.map(explain, batch))

    listed = fresh_client.get("/v1/audit/explanations?limit=100", headers=auth("auditor"))
    archived = [item["id"] for item in listed.get_json()["items"]]
    assert sorted(archived) == sorted(served)
    verified = fresh_client.get("/v1/audit/verify", headers=auth("auditor")).get_json()
    assert verified["ok"] is True
