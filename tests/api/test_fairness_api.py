"""POST /v1/models/{name}/fairness and GET /v1/models/{name}/report(.html), as the contract says."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from explainer.validation import MAX_AUDIT_RECORDS
from tests.conftest import KEYS, auth
from tests.fairness.test_fairness_service import GROUPS, LABELS, PLANS, X, tiny_store

TOLERANCE = 1e-9
#: The generic body limit of the app under test: far below what an audit may carry.
SMALL_BODY = 3_000
TINY_BOUNDS = {"min_group_size": 1}


@pytest.fixture(scope="module")
def tiny_service() -> ExplainerService:
    return ExplainerService(tiny_store())


@pytest.fixture
def audit_client(settings: Settings, tiny_service: ExplainerService) -> Iterator[FlaskClient]:
    small = dataclasses.replace(settings, max_body_bytes=SMALL_BODY)
    app = create_app(small, service=tiny_service, keys=KeyRing.from_plain(KEYS))
    with app.test_client() as client:
        yield client


def records(labels: list[Any] | None = None) -> list[dict[str, Any]]:
    given = LABELS if labels is None else labels
    return [
        {
            "features": {"x": X[i], "plan": PLANS[i]},
            "protected": {"segment": GROUPS[i]},
            "label": given[i],
        }
        for i in range(len(X))
    ]


def post(client: FlaskClient, body: Any, name: str = "tiny", role: str = "analyst") -> Any:
    return client.post(f"/v1/models/{name}/fairness", json=body, headers=auth(role))


def test_the_response_has_the_contract_shape_and_the_hand_numbers(
    audit_client: FlaskClient,
) -> None:
    response = post(audit_client, {"records": records(), "threshold": 0.5, "bounds": TINY_BOUNDS})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) >= {"model", "threshold", "n_records", "attributes"}
    assert body["model"]["name"] == "tiny" and len(body["model"]["sha256"]) == 64
    assert (body["threshold"], body["n_records"]) == (0.5, 10)
    segment = body["attributes"]["segment"]
    assert set(segment) >= {
        "groups",
        "disparate_impact_ratio",
        "demographic_parity_difference",
        "equalized_odds_difference",
        "flags",
    }
    group = segment["groups"][0]
    assert set(group) >= {"group", "size", "selection_rate", "tpr", "fpr", "mean_abs_attribution"}
    assert segment["disparate_impact_ratio"] == pytest.approx(2 / 3, abs=TOLERANCE)
    assert segment["demographic_parity_difference"] == pytest.approx(0.2, abs=TOLERANCE)
    assert segment["equalized_odds_difference"] == pytest.approx(1 / 3, abs=TOLERANCE)
    assert [(g["group"], g["tpr"]) for g in segment["groups"]] == [
        ("A", pytest.approx(2 / 3, abs=TOLERANCE)),
        ("B", pytest.approx(1 / 3, abs=TOLERANCE)),
    ]


def test_the_api_gives_what_the_service_gives(
    audit_client: FlaskClient, tiny_service: ExplainerService
) -> None:
    from explainer.fairness import FairnessBounds
    from explainer.service import AuditRecord

    api = post(audit_client, {"records": records(), "bounds": TINY_BOUNDS}).get_json()
    direct = tiny_service.fairness(
        "tiny",
        [AuditRecord(r["features"], r["protected"], r["label"]) for r in records()],
        bounds=FairnessBounds(min_group_size=1),
    )
    assert api["attributes"] == direct["attributes"]


@pytest.mark.parametrize(
    ("bounds", "flagged"),
    [
        ({"min_disparate_impact": 0.67}, True),  # 2/3 is below 0.67
        ({"min_disparate_impact": 0.66}, False),
        ({"max_demographic_parity_difference": 0.19}, True),  # 0.2 is above 0.19
        ({"max_demographic_parity_difference": 0.2}, False),  # exactly at the bound
        ({"max_equalized_odds_difference": 0.33}, True),  # 1/3 is above 0.33
        ({"max_equalized_odds_difference": 0.34}, False),
    ],
)
def test_a_flag_is_raised_exactly_when_a_bound_is_breached(
    audit_client: FlaskClient, bounds: dict[str, float], flagged: bool
) -> None:
    relaxed = {
        "min_disparate_impact": 0.0,
        "max_demographic_parity_difference": 1.0,
        "max_equalized_odds_difference": 1.0,
        "min_group_size": 1,
    }
    body = post(audit_client, {"records": records(), "bounds": {**relaxed, **bounds}}).get_json()
    assert bool(body["attributes"]["segment"]["flags"]) is flagged


def test_labels_are_optional_and_may_be_class_names(audit_client: FlaskClient) -> None:
    named = post(
        audit_client,
        {"records": records(["yes" if v else "no" for v in LABELS]), "bounds": TINY_BOUNDS},
    ).get_json()
    plain = post(audit_client, {"records": records(), "bounds": TINY_BOUNDS}).get_json()
    assert named["attributes"] == plain["attributes"]
    unlabelled = [{k: v for k, v in r.items() if k != "label"} for r in records()]
    body = post(audit_client, {"records": unlabelled, "bounds": TINY_BOUNDS}).get_json()
    assert body["attributes"]["segment"]["equalized_odds_difference"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda rs: rs[3]["features"].update(x="high"), "records[3].features.x"),
        (lambda rs: rs[3]["features"].update(tenure=3), "records[3].features.tenure"),
        (lambda rs: rs[0].update(label=2), "records[0].label"),
        (lambda rs: rs[0].update(label="maybe"), "records[0].label"),
        (lambda rs: rs[0]["protected"].update(segment=None), "records[0].protected.segment"),
        (lambda rs: rs[0]["protected"].update(segment=["A"]), "records[0].protected.segment"),
        (lambda rs: rs[4].pop("label"), "records[4].label"),
        (lambda rs: rs[2].update(extra=1), "records[2].extra"),
    ],
)
def test_bad_records_are_422_problems_naming_the_field(
    audit_client: FlaskClient, change: Any, field: str
) -> None:
    body = records()
    change(body)
    response = post(audit_client, {"records": body})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert problem["detail"].startswith(field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": []}, "records"),
        ({"records": records(), "threshold": 1.5}, "threshold"),
        ({"records": records(), "threshold": "half"}, "threshold"),
        (
            {"records": records(), "bounds": {"min_disparate_impact": 2}},
            "bounds.min_disparate_impact",
        ),
        ({"records": records(), "positive_classes": ["maybe"]}, "positive_classes"),
        ({"records": records(), "version": 0}, "version"),
    ],
)
def test_bad_settings_are_named(audit_client: FlaskClient, body: Any, field: str) -> None:
    response = post(audit_client, body)
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


def test_an_audit_may_carry_more_bytes_than_other_requests(audit_client: FlaskClient) -> None:
    many = records() * 20  # ~ 20 kB, well above the app's 3 kB body limit
    assert post(audit_client, {"records": many, "bounds": TINY_BOUNDS}).status_code == 200
    explain = audit_client.post(
        "/v1/models/tiny/explain",
        headers=auth("analyst"),
        json={"instances": [{"features": {"x": 1, "plan": "basic"}}] * 80},
    )
    assert explain.status_code == 413


def test_more_records_than_the_limit_is_413(audit_client: FlaskClient) -> None:
    record = {"features": {"x": 1, "plan": "basic"}, "protected": {"segment": "A"}}
    response = post(audit_client, {"records": [record] * (MAX_AUDIT_RECORDS + 1)})
    assert response.status_code == 413
    assert response.get_json()["errors"][0]["field"] == "records"


def test_roles_and_unknown_models(audit_client: FlaskClient) -> None:
    body = {"records": records()}
    assert post(audit_client, body, role="crm").status_code == 403
    assert audit_client.post("/v1/models/tiny/fairness", json=body).status_code == 401
    assert post(audit_client, body, name="nosuch").status_code == 404
    assert post(audit_client, body, role="auditor").status_code == 200


class TestTheReportEndpoints:
    def test_json_report_of_the_serving_and_of_a_named_version(
        self, audit_client: FlaskClient
    ) -> None:
        response = audit_client.get("/v1/models/tiny/report", headers=auth("analyst"))
        assert response.status_code == 200, response.get_json()
        report = response.get_json()
        assert report["kind"] == "transparency_report"
        assert report["model"]["name"] == "tiny" and report["model"]["version"] == 1
        named = audit_client.get("/v1/models/tiny/report?version=1", headers=auth("analyst"))
        assert named.get_json()["model"] == report["model"]
        missing = audit_client.get("/v1/models/tiny/report?version=9", headers=auth("analyst"))
        assert missing.status_code == 404
        bad = audit_client.get("/v1/models/tiny/report?version=x", headers=auth("analyst"))
        assert bad.status_code == 422

    def test_the_last_audit_feeds_the_reports_fairness_section(
        self, audit_client: FlaskClient
    ) -> None:
        post(audit_client, {"records": records(), "bounds": TINY_BOUNDS})
        fairness = audit_client.get("/v1/models/tiny/report", headers=auth("analyst")).get_json()[
            "fairness"
        ]
        assert fairness["source"] == "fairness_audit"
        assert fairness["attributes"]["segment"]["disparate_impact_ratio"] == pytest.approx(2 / 3)

    def test_html_report_is_a_self_contained_page(self, audit_client: FlaskClient) -> None:
        response = audit_client.get("/v1/models/tiny/report.html", headers=auth("analyst"))
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        text = response.get_data(as_text=True)
        assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text

    def test_reports_need_the_analyst_role(self, audit_client: FlaskClient) -> None:
        for path in ("/v1/models/tiny/report", "/v1/models/tiny/report.html"):
            assert audit_client.get(path, headers=auth("crm")).status_code == 403
            assert audit_client.get(path).status_code == 401
        assert (
            audit_client.get("/v1/models/nosuch/report", headers=auth("analyst")).status_code == 404
        )


def test_the_demo_churn_audit_through_the_api(client: FlaskClient) -> None:
    """The demo app: a small churn audit by age band flags the four-fifths rule."""
    from tests.conftest import customers

    frame = customers("churn", 240, seed=11)
    names = [
        m
        for m in client.get("/v1/models/churn", headers=auth("analyst")).get_json()["schema"][
            "features"
        ]
    ]
    feature_names = [f["name"] for f in names]
    body = {
        "records": [
            {
                "features": {
                    n: (row[n].item() if hasattr(row[n], "item") else row[n]) for n in feature_names
                },
                "protected": {"age_band": row["age_band"]},
                "label": row["churn"],
            }
            for _, row in frame.iterrows()
        ]
    }
    response = post(client, body, name="churn")
    assert response.status_code == 200, response.get_json()
    age = response.get_json()["attributes"]["age_band"]
    assert age["disparate_impact_ratio"] < 0.8
    assert any("four-fifths" in flag for flag in age["flags"])
