"""Prometheus metrics at /metrics and one JSON access-log line per request: per URL rule,
method and status, explanations per model and method, and never a customer's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from explainer.api import create_app
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.logs import REQUEST_FIELDS
from explainer.service import ExplainerService
from tests.conftest import KEYS, auth, customers, features_of

ROOT = Path(__file__).resolve().parents[2]
EXPLAIN_RULE = "/v1/models/<name>/explain"
SECRET = "C-SECRET-4711"


def samples(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain" and "version=" in response.headers["Content-Type"]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def explain_churn(client: FlaskClient, n: int, customer_id: str = SECRET, **options: Any) -> Any:
    card = client.get("/v1/models/churn", headers=auth("crm")).get_json()
    names = [f["name"] for f in card["schema"]["features"]]
    frame = customers("churn", n)
    body = {
        "instances": [
            {"customer_id": customer_id, "features": features_of(frame, names, i)} for i in range(n)
        ],
        **options,
    }
    response = client.post("/v1/models/churn/explain", json=body, headers=auth("crm"))
    assert response.status_code == 200, response.get_json()
    return response


def test_requests_are_counted_per_rule_method_and_status(client: FlaskClient) -> None:
    explain_churn(client, 2)
    explain_churn(client, 1, method="lime", output="log_odds")
    client.post("/v1/models/churn/explain", json={}, headers=auth("crm"))
    client.get("/v1/models/no_such_model", headers=auth("crm"))
    client.get("/no/such/page")
    client.open("/healthz", method="BREW")
    found = samples(client)
    requests = "crm_explain_http_requests_total"
    assert value(found, requests, method="POST", endpoint=EXPLAIN_RULE, status="200") == 2
    assert value(found, requests, method="POST", endpoint=EXPLAIN_RULE, status="422") == 1
    assert value(found, requests, method="GET", endpoint="/v1/models/<name>", status="404") == 1
    assert value(found, requests, method="GET", endpoint="<unmatched>", status="404") == 1
    assert value(found, requests, method="OTHER", endpoint="<unmatched>", status="405") == 1
    latency = "crm_explain_http_request_duration_seconds_count"
    assert value(found, latency, method="POST", endpoint=EXPLAIN_RULE, status="200") == 2
    explained = "crm_explain_explanations_total"
    assert value(found, explained, model="churn", method="shap", output="probability") == 2
    assert value(found, explained, model="churn", method="lime", output="log_odds") == 1
    per_request = "crm_explain_explain_request_duration_seconds_count"
    assert value(found, per_request, model="churn", method="shap") == 1
    assert value(found, per_request, model="churn", method="lime") == 1


def test_no_customer_data_and_no_made_up_values_reach_the_labels(client: FlaskClient) -> None:
    response = explain_churn(client, 1)
    tenure = str(response.get_json()["explanations"][0]["attributions"][0]["value"])
    client.delete(f"/v1/subjects/{SECRET}", headers=auth("admin"))
    client.post("/v1/models/customer_c_secret/explain", json={}, headers=auth("crm"))
    client.get(f"/v1/audit/explanations?customer_id={SECRET}", headers=auth("auditor"))
    client.get(f"/ui/{SECRET}")
    text = client.get("/metrics").get_data(as_text=True)
    assert SECRET not in text and "customer_c_secret" not in text
    labels = {
        label
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for label in sample.labels.values()
    }
    assert tenure not in labels
    assert "/v1/subjects/<customer_id>" in labels  # the rule, not the path


def test_every_app_counts_in_a_registry_of_its_own(
    settings: Settings, demo_service: ExplainerService
) -> None:
    apps = [
        create_app(settings, service=demo_service, keys=KeyRing.from_plain(KEYS)) for _ in range(3)
    ]
    for i, app in enumerate(apps):
        client = app.test_client()
        for _ in range(i + 1):
            client.get("/healthz")
        found = samples(client)
        assert (
            value(
                found,
                "crm_explain_http_requests_total",
                method="GET",
                endpoint="/healthz",
                status="200",
            )
            == i + 1
        )


def test_each_request_logs_one_json_line_without_customer_data(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = explain_churn(client, 1)
    client.get("/v1/models/churn/importance?version=x", headers=auth("analyst"))
    client.delete(f"/v1/subjects/{SECRET}", headers=auth("admin"))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    access = [line for line in lines if line["logger"] == "crm_explain.access"]
    explain = next(line for line in access if line["rule"] == EXPLAIN_RULE)
    assert explain["request_id"] == response.headers["X-Request-ID"]
    assert (explain["method"], explain["status"], explain["model"]) == ("POST", 200, "churn")
    assert (explain["role"], explain["level"]) == ("crm", "info")
    assert isinstance(explain["duration_ms"], float) and explain["duration_ms"] > 0
    assert {"ts", "message", "key_id"} <= set(explain)
    assert any(line["status"] == 422 for line in access)
    assert any(line["rule"] == "/v1/subjects/<customer_id>" for line in access)
    assert SECRET not in json.dumps(lines)
    allowed = {"ts", "level", "logger", "message", *REQUEST_FIELDS}
    assert all(set(line) <= allowed for line in access)  # no room for bodies or feature values


MULTIPROCESS_WORKER = textwrap.dedent(
    """
    import sys, tempfile
    from explainer.api import create_app
    from explainer.config import Settings
    from explainer.keys import KeyRing
    from explainer.service import ExplainerService
    from model_store import MemoryStore

    keys = {"k": "crm"}
    home = tempfile.mkdtemp()
    settings = Settings.from_env({"CRM_EXPLAIN_HOME": home}, api_keys=keys, archive_enabled=False)
    ring = KeyRing.from_plain(keys)
    app = create_app(settings, service=ExplainerService(MemoryStore()), keys=ring)
    client = app.test_client()
    for _ in range(int(sys.argv[1])):
        client.get("/healthz")
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
    """
)


def test_gunicorn_workers_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, each process writes its samples to the shared folder and
    /metrics in any of them reports the sum over all."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_WORKER, str(n)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for n in (3, 4)
    ]
    totals = [
        sample.value
        for family in text_string_to_metric_families(outputs[-1])
        for sample in family.samples
        if sample.name == "crm_explain_http_requests_total"
        and sample.labels.get("endpoint") == "/healthz"
    ]
    assert totals == [7.0]


def test_metrics_need_no_key(app: Flask) -> None:
    assert app.test_client().get("/metrics").status_code == 200
