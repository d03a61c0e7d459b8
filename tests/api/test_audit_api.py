"""Every explanation served is archived; auditors list, export and verify; customers contest
and are erased; reviewers decide."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from flask.testing import FlaskClient

from explainer.archive import verify_bundle
from tests.conftest import auth, customers, features_of


def explain_churn(client: FlaskClient, customer_id: str, i: int = 0) -> dict[str, Any]:
    schema = client.get("/v1/models/churn", headers=auth("crm")).get_json()["schema"]
    names = [f["name"] for f in schema["features"]]
    body = {
        "instances": [
            {"customer_id": customer_id, "features": features_of(customers("churn", 5), names, i)}
        ]
    }
    response = client.post("/v1/models/churn/explain", json=body, headers=auth("crm"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["explanations"][0]


def test_every_served_explanation_is_archived_and_listed(archived_client: FlaskClient) -> None:
    served = [explain_churn(archived_client, f"C-{i}", i) for i in range(3)]
    assert all(e["archived"] for e in served)
    page = archived_client.get("/v1/audit/explanations?limit=2", headers=auth("auditor")).get_json()
    rest = archived_client.get(
        f"/v1/audit/explanations?cursor={page['next_cursor']}", headers=auth("auditor")
    ).get_json()
    listed = [item["id"] for item in page["items"] + rest["items"]]
    assert listed == [e["id"] for e in served]
    record = archived_client.get(
        f"/v1/audit/explanations/{served[0]['id']}", headers=auth("auditor")
    ).get_json()
    assert record["payload"]["rationale"] == served[0]["rationale"]
    assert record["model"]["name"] == "churn"
    one = archived_client.get("/v1/audit/explanations?customer_id=C-1", headers=auth("auditor"))
    assert [i["id"] for i in one.get_json()["items"]] == [served[1]["id"]]


def test_the_raw_customer_id_is_never_stored_in_clear(archived_client: FlaskClient) -> None:
    explain_churn(archived_client, "C-SECRET-77")
    items = archived_client.get("/v1/audit/explanations", headers=auth("auditor")).get_json()[
        "items"
    ]
    public = {k: v for k, v in items[0].items() if k != "payload"}
    assert "C-SECRET-77" not in str(public)


def test_an_exported_bundle_verifies_offline(archived_client: FlaskClient, tmp_path: Any) -> None:
    explain_churn(archived_client, "C-1")
    response = archived_client.post(
        "/v1/audit/exports", json={"model": "churn"}, headers=auth("auditor")
    )
    assert response.status_code == 200 and response.mimetype == "application/zip"
    path = tmp_path / "bundle.zip"
    path.write_bytes(response.data)
    assert verify_bundle(path).ok
    names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    assert {"explanations.jsonl", "manifest.json"} <= set(names)
    assert any(n.startswith("model_cards/churn@1") for n in names)


def test_verify_reports_the_live_archive(archived_client: FlaskClient) -> None:
    explain_churn(archived_client, "C-1")
    report = archived_client.get("/v1/audit/verify", headers=auth("auditor")).get_json()
    assert report["ok"] and report["records"] == 1 and report["first_bad"] is None


def test_a_contested_decision_reaches_the_review_queue_and_is_decided(
    archived_client: FlaskClient,
) -> None:
    explanation = explain_churn(archived_client, "C-9")
    opened = archived_client.post(
        f"/v1/explanations/{explanation['id']}/contest",
        json={"reason": "I never had a support ticket"},
        headers=auth("crm"),
    )
    assert opened.status_code == 201
    case = opened.get_json()
    assert case["status"] == "open" and case["case_id"]
    again = archived_client.post(
        f"/v1/explanations/{explanation['id']}/contest",
        json={"reason": "again"},
        headers=auth("crm"),
    )
    assert again.status_code == 409
    queue = archived_client.get("/v1/reviews?status=open", headers=auth("auditor")).get_json()
    assert [c["case_id"] for c in queue["cases"]] == [case["case_id"]]
    decided = archived_client.post(
        f"/v1/reviews/{case['case_id']}",
        json={"decision": "overturned", "note": "ticket was misfiled"},
        headers=auth("auditor"),
    )
    assert decided.status_code == 200 and decided.get_json()["status"] == "closed"
    assert archived_client.get("/v1/audit/verify", headers=auth("auditor")).get_json()["ok"]


def test_contesting_an_unknown_explanation_is_404(archived_client: FlaskClient) -> None:
    response = archived_client.post(
        "/v1/explanations/nope/contest", json={"reason": "x"}, headers=auth("crm")
    )
    assert response.status_code == 404


def test_erasure_removes_the_subject_and_the_archive_still_verifies(
    archived_client: FlaskClient,
) -> None:
    erased = explain_churn(archived_client, "C-ERASE-ME", 1)
    kept = explain_churn(archived_client, "C-KEEP", 2)
    response = archived_client.delete("/v1/subjects/C-ERASE-ME", headers=auth("admin"))
    assert response.get_json() == {"erased": 1}
    assert archived_client.get("/v1/audit/verify", headers=auth("auditor")).get_json()["ok"]
    gone = archived_client.get(f"/v1/audit/explanations/{erased['id']}", headers=auth("auditor"))
    assert gone.get_json()["payload"] is None
    bundle = archived_client.post("/v1/audit/exports", json={}, headers=auth("auditor")).data
    text = b"".join(
        zipfile.ZipFile(io.BytesIO(bundle)).read(n)
        for n in zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    )
    assert b"C-ERASE-ME" not in text
    assert b"C-KEEP" in text and kept["id"].encode() in text
    assert archived_client.delete("/v1/subjects/C-KEEP", headers=auth("auditor")).status_code == 403


def test_bad_audit_parameters_are_named(archived_client: FlaskClient) -> None:
    for query, field in (("since=yesterday", "since"), ("limit=0", "limit"), ("limit=x", "limit")):
        response = archived_client.get(f"/v1/audit/explanations?{query}", headers=auth("auditor"))
        assert response.status_code == 422, query
        assert response.get_json()["errors"][0]["field"] == field
    bad_review = archived_client.post(
        "/v1/reviews/nope", json={"decision": "maybe"}, headers=auth("auditor")
    )
    assert bad_review.status_code == 422
    assert bad_review.get_json()["errors"][0]["field"] == "decision"
