"""Customer-facing reasons: few, plain, adverse-action style, never a protected attribute, and
with codes that stay the same from one model version to the next."""

from __future__ import annotations

import io
import re
from typing import Any

import joblib
import pytest
from flask.testing import FlaskClient

from explainer.methods import plan_for
from explainer.reasons import (
    JARGON,
    MAX_REASONS,
    customer_reasons,
    customer_view,
    jargon_in,
    reason_code,
)
from explainer.service import Decision, ExplainerService
from explainer.types import Attribution, OutputSpace
from model_store import FileSystemStore
from model_store.demo._models import build_demo_model
from model_store.types import FeatureSchema, FeatureSpec
from tests.conftest import DEMO_NAMES, auth, customers, features_of

CODE = re.compile(r"^[A-Z0-9_]+\.[A-Z0-9_]+$")
SCHEMA = FeatureSchema(
    task="binary",
    target="churn",
    positive_class="Yes",
    features=(
        FeatureSpec("tenure", "numeric", "Months as a customer", unit="months"),
        FeatureSpec("contract", "categorical", "Contract type", categories=("Monthly", "Yearly")),
        FeatureSpec("band_hint", "numeric", "Estimated age band of the household"),
        FeatureSpec("charges", "numeric", "Monthly charges", unit="USD"),
        FeatureSpec("tickets", "numeric", "Support tickets"),
        FeatureSpec("logins", "numeric", "Logins last month"),
    ),
    protected_attributes=("age_band", "gender"),
)


def attributions(**contributions: float) -> list[Attribution]:
    values = {
        "tenure": 3,
        "contract": "Monthly",
        "band_hint": 2,
        "charges": 80.5,
        "tickets": 4,
        "logins": 1,
    }
    out = [Attribution(f, SCHEMA.feature(f).label, values[f], c) for f, c in contributions.items()]
    return sorted(out, key=lambda a: -abs(a.contribution))


class TestTheRules:
    def test_at_most_four_reasons_all_of_which_raised_the_score(self) -> None:
        reasons = customer_reasons(
            model_name="churn",
            schema=SCHEMA,
            card={},
            attributions=attributions(
                tenure=0.3, contract=0.25, charges=0.2, tickets=0.1, logins=0.05, band_hint=-0.4
            ),
        )
        assert len(reasons) == MAX_REASONS
        assert [r.code for r in reasons] == [
            "CHURN.TENURE",
            "CHURN.CONTRACT",
            "CHURN.CHARGES",
            "CHURN.TICKETS",
        ]

    def test_when_nothing_raised_it_the_largest_factors_are_given(self) -> None:
        reasons, text = customer_view(
            model_name="churn",
            schema=SCHEMA,
            card={"score_label": "Churn risk"},
            attributions=attributions(tenure=-0.3, contract=-0.1),
            band="low",
            explained_class="Yes",
            predicted_class="No",
        )
        assert [r.code for r in reasons] == ["CHURN.TENURE", "CHURN.CONTRACT"]
        assert text.startswith("Churn risk is low. Nothing raised it; what lowered it most:")

    def test_negligible_factors_are_not_principal_reasons(self) -> None:
        reasons = customer_reasons(
            model_name="churn",
            schema=SCHEMA,
            card={},
            attributions=attributions(tenure=0.5, contract=0.01),
        )
        assert [r.code for r in reasons] == ["CHURN.TENURE"]

    def test_a_factor_naming_a_protected_attribute_is_never_given(self) -> None:
        reasons = customer_reasons(
            model_name="churn",
            schema=SCHEMA,
            card={},
            attributions=attributions(band_hint=0.9, tenure=0.2),
        )
        assert [r.code for r in reasons] == ["CHURN.TENURE"]
        assert all("age" not in r.text.lower() for r in reasons)

    def test_a_known_proxy_is_named_in_its_own_words_never_by_what_it_stands_for(self) -> None:
        card = {"known_proxy": {"protected": "age_band", "feature": "contract"}}
        reasons = customer_reasons(
            model_name="churn", schema=SCHEMA, card=card, attributions=attributions(contract=0.5)
        )
        assert [(r.code, r.text) for r in reasons] == [("CHURN.CONTRACT", "Contract type: Monthly")]

    def test_the_card_may_set_codes_and_wording(self) -> None:
        card = {
            "reason_codes": {"tenure": "R01"},
            "reason_texts": {"tenure": "You joined us {value} ago"},
        }
        [reason] = customer_reasons(
            model_name="churn", schema=SCHEMA, card=card, attributions=attributions(tenure=0.5)
        )
        assert (reason.code, reason.text) == ("R01", "You joined us 3 months ago")

    def test_codes_depend_only_on_model_and_feature(self) -> None:
        assert reason_code("case_priority", "sla_hours_left") == "CASE_PRIORITY.SLA_HOURS_LEFT"
        assert reason_code("lead-score", "job level") == "LEAD_SCORE.JOB_LEVEL"

    def test_jargon_is_detected_as_whole_words(self) -> None:
        assert jargon_in("The SHAP log-odds contribution") == ["log-odds", "shap", "contribution"]
        assert jargon_in("Sublime, remodelled and featureless") == []  # only whole words count
        assert jargon_in("Churn risk is high. What raised it most: Contract type: Monthly.") == []


def customer_explanations(service: ExplainerService, name: str, n: int = 3, **kw: Any) -> list[Any]:
    names = service.model(name).schema.feature_names
    frame = customers(name, n)
    decisions = [Decision(features_of(frame, names, i)) for i in range(n)]
    return service.explain(name, decisions, audience="customer", **kw)


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_demo_customers_get_plain_reasons_without_protected_attributes(
    demo_service: ExplainerService, name: str
) -> None:
    model = demo_service.model(name)
    protected = {p.replace("_", " ") for p in model.schema.protected_attributes} | set(
        model.schema.protected_attributes
    )
    # only the output spaces where SHAP is exact and fast for this model (keeps the test quick)
    spaces: tuple[OutputSpace, ...] = ("probability", "log_odds")
    for output in [o for o in spaces if plan_for(model, o) != "model_agnostic"]:
        for e in customer_explanations(demo_service, name, output=output):
            assert e.reasons is not None and 1 <= len(e.reasons) <= MAX_REASONS
            texts = [r.text for r in e.reasons] + [e.rationale]
            for text in texts:
                assert jargon_in(text) == [], text
                assert not any(p in text.lower() for p in protected), text
                assert not re.search(r"[+-]\d+(\.\d+)? (points|log)", text), text
            raised = [a.feature for a in e.attributions if a.contribution > 0]
            if raised:
                codes = {reason_code(name, f) for f in raised}
                assert {r.code for r in e.reasons} <= codes
            assert all(CODE.match(r.code) for r in e.reasons)


def test_reason_codes_are_identical_across_two_versions_of_a_model(
    store: FileSystemStore, demo_service: ExplainerService
) -> None:
    retrained = build_demo_model("churn", seed=99)
    buffer = io.BytesIO()
    joblib.dump(retrained.estimator, buffer)
    second = store.register(
        "churn",
        buffer.getvalue(),
        background=retrained.background,
        schema=retrained.schema,
        card=retrained.card,
    )
    assert second.version == 2
    service = ExplainerService(store)
    names = service.model("churn").schema.feature_names
    frame = customers("churn", 6)
    decisions = [Decision(features_of(frame, names, i)) for i in range(6)]
    codes: dict[int, dict[str, str]] = {}
    for version in (1, 2):
        by_feature = {}
        for e in service.explain("churn", decisions, version=version, audience="customer"):
            labels = {a.label: a.feature for a in e.attributions}
            for reason in e.reasons or ():
                by_feature[labels[reason.text.split(":")[0]]] = reason.code
        codes[version] = by_feature
    common = set(codes[1]) & set(codes[2])
    assert common  # the two versions share principal reasons for these customers
    assert all(codes[1][f] == codes[2][f] == reason_code("churn", f) for f in common)


def test_the_api_gives_reasons_only_to_the_customer_audience(client: FlaskClient) -> None:
    schema = client.get("/v1/models/churn", headers=auth("crm")).get_json()["schema"]
    features = features_of(customers("churn", 1), [f["name"] for f in schema["features"]], 0)
    agent = client.post(
        "/v1/models/churn/explain",
        headers=auth("crm"),
        json={"instances": [{"features": features}]},
    ).get_json()
    assert "reasons" not in agent["explanations"][0]
    customer = client.post(
        "/v1/models/churn/explain",
        headers=auth("crm"),
        json={"instances": [{"features": features}], "audience": "customer", "output": "log_odds"},
    ).get_json()["explanations"][0]
    assert 1 <= len(customer["reasons"]) <= 4
    assert all(set(r) == {"code", "text"} for r in customer["reasons"])
    for word in ("log-odds", "SHAP", "LIME"):
        assert word.lower() not in customer["rationale"].lower()
    assert len(customer["attributions"]) == len(schema["features"])  # for the agent's records
    bad = client.post(
        "/v1/models/churn/explain",
        headers=auth("crm"),
        json={"instances": [{"features": features}], "audience": "public"},
    )
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "audience"


def test_jargon_list_is_lower_case() -> None:
    assert all(word == word.lower() for word in JARGON)
