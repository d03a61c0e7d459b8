"""The pages through Flask's test client: signing in, CSRF, roles, validation, headers, and
that each page says what the API says."""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.archive import verify_bundle
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.pages._security import SECRET_KEY_FILE
from explainer.service import ExplainerService
from tests.conftest import KEYS, auth
from tests.pages._html import accessibility_problems
from tests.pages.conftest import CRM_ORIGIN, csrf, drivers_on, sign_in

STYLESHEET = Path(__file__).resolve().parents[2] / "explainer" / "pages" / "static" / "pages.css"


def why_url(features: dict[str, Any], customer_id: str = "C-1001", model: str = "churn") -> str:
    from urllib.parse import urlencode

    return f"/ui/why/{model}?" + urlencode({"customer_id": customer_id, **features})


def api_explanation(client: FlaskClient, features: dict[str, Any], customer_id: str) -> Any:
    body = {"instances": [{"customer_id": customer_id, "features": features}]}
    response = client.post("/v1/models/churn/explain", json=body, headers=auth("crm"))
    assert response.status_code == 200, response.text
    return response.get_json()["explanations"][0]


# -- signing in -------------------------------------------------------------------------------
def test_the_sign_in_page_is_labelled_and_sets_a_strict_cookie(web: FlaskClient) -> None:
    response = web.get("/ui/login")
    assert response.status_code == 200
    assert accessibility_problems(response.text) == []
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here (tests); see the https test below


@pytest.mark.parametrize(
    "how",
    [{"base_url": "https://localhost"}, {"headers": {"X-Forwarded-Proto": "https"}}],
    ids=["https", "behind-a-tls-proxy"],
)
def test_the_cookie_is_secure_when_served_over_https(web: FlaskClient, how: Any) -> None:
    assert "; Secure" in web.get("/ui/login", **how).headers["Set-Cookie"]


def test_the_cookie_can_be_forced_secure_and_strict(web_app: Flask) -> None:
    web_app.config.update(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_SAMESITE="Strict")
    cookie = web_app.test_client().get("/ui/login").headers["Set-Cookie"]
    assert "; Secure" in cookie and "SameSite=Strict" in cookie


def test_a_valid_key_signs_in_and_sign_out_ends_the_session(web: FlaskClient) -> None:
    sign_in(web, "auditor")
    assert web.get("/ui/audit").status_code == 200
    with web.session_transaction("/ui/") as session:
        assert "auditor-key" not in str(dict(session))  # the key is sealed, never in clear
    response = web.post("/ui/logout", data={"csrf_token": csrf(web)})
    assert response.status_code == 302
    assert web.get("/ui/audit").status_code == 302


def test_a_wrong_key_is_refused_with_a_message(web: FlaskClient) -> None:
    web.get("/ui/login")
    response = web.post("/ui/login", data={"csrf_token": csrf(web), "api_key": "nope"})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert web.get("/ui/audit").status_code == 302


def test_a_signed_out_visitor_signs_in_and_comes_back(web: FlaskClient) -> None:
    response = web.get("/ui/audit?model=churn")
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/login?next=/ui/audit?model%3Dchurn"
    form = web.get(response.headers["Location"]).text
    assert 'name="next" value="/ui/audit?model=churn"' in form
    data = {"csrf_token": csrf(web), "api_key": "auditor-key", "next": "/ui/audit?model=churn"}
    assert web.post("/ui/login", data=data).headers["Location"] == "/ui/audit?model=churn"


@pytest.mark.parametrize(
    "target", ["https://evil.example/ui/", "//evil.example/ui/", "/v1/audit/verify", "/\\evil"]
)
def test_signing_in_never_redirects_off_the_pages(web: FlaskClient, target: str) -> None:
    web.get("/ui/login")
    data = {"csrf_token": csrf(web), "api_key": "crm-key", "next": target}
    assert web.post("/ui/login", data=data).headers["Location"] == "/ui/"


def test_a_revoked_key_ends_its_sessions(web: FlaskClient, web_app: Flask) -> None:
    sign_in(web, "auditor")
    web_app.extensions["crm_explain"].keys = KeyRing.from_plain({"other-key": "auditor"})
    assert web.get("/ui/audit").status_code == 302


def test_the_secret_key_is_made_once_in_the_home_with_mode_0600(
    settings: Settings, web_service: ExplainerService
) -> None:
    first = create_app(settings, service=web_service, keys=KeyRing.from_plain(KEYS))
    path = settings.home / SECRET_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = create_app(settings, service=web_service, keys=KeyRing.from_plain(KEYS))
    assert isinstance(first.secret_key, bytes) and len(first.secret_key) == 32
    assert first.secret_key == second.secret_key
    with first.test_client() as one:  # a session made by one worker holds in another
        sign_in(one, "auditor")
        cookie = one.get_cookie("crm_explain_ui", path="/ui")
        assert cookie is not None
        with second.test_client() as two:
            two.set_cookie("crm_explain_ui", cookie.value, path="/ui")
            assert two.get("/ui/audit").status_code == 200


# -- CSRF ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/ui/login",
        "/ui/logout",
        "/ui/audit/export",
        "/ui/audit/verify",
        "/ui/explanations/x/contest",
        "/ui/audit/cases/x/decision",
    ],
)
@pytest.mark.parametrize("token", [None, "forged"])
def test_every_form_post_needs_the_session_token(
    web: FlaskClient, path: str, token: str | None
) -> None:
    sign_in(web, "admin")
    data = {"api_key": "admin-key", "reason": "r"} | ({"csrf_token": token} if token else {})
    response = web.post(path, data=data)
    assert response.status_code == 400
    assert "expired" in response.text and response.mimetype == "text/html"


def test_a_token_from_another_session_is_refused(web_app: Flask) -> None:
    with web_app.test_client() as attacker, web_app.test_client() as victim:
        attacker.get("/ui/login")
        sign_in(victim, "auditor")
        response = victim.post("/ui/audit/verify", data={"csrf_token": csrf(attacker)})
        assert response.status_code == 400


# -- roles --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "needs"),
    [
        ("/ui/", "crm"),
        ("/ui/why/churn", "crm"),
        ("/ui/importance", "analyst"),
        ("/ui/audit", "auditor"),
    ],
)
@pytest.mark.parametrize("role", ["crm", "analyst", "auditor", "admin"])
def test_each_page_needs_the_role_the_api_asks(
    web: FlaskClient, path: str, needs: str, role: str
) -> None:
    order = ["crm", "analyst", "auditor", "admin"]
    sign_in(web, role)
    response = web.get(path)
    if order.index(role) >= order.index(needs):
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert f"needs the {needs} role" in response.text
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# -- the why card ----------------------------------------------------------------------------
def test_the_why_card_shows_what_the_api_answers(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    page = web.get(why_url(customer, "C-1001"))
    assert page.status_code == 200, page.text
    served = api_explanation(web, customer, "C-1001")
    shown = drivers_on(page.text)
    assert [feature for feature, _ in shown] == [a["feature"] for a in served["attributions"]]
    for (_, contribution), attribution in zip(shown, served["attributions"], strict=True):
        assert contribution == pytest.approx(attribution["contribution"], abs=1e-12)
    assert f'<p class="rationale" id="rationale">{served["rationale"]}</p>' in page.text.replace(
        "&#39;", "'"
    )
    assert f"{served['prediction']['score'] * 100:.0f}%" in page.text
    assert accessibility_problems(page.text) == []


def test_the_why_card_is_archived_with_the_request_id(
    web: FlaskClient, web_service: ExplainerService, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    web.get(why_url(customer, "C-7"), headers={"X-Request-ID": "crm-req-7"})
    [record], _ = web_service.oversight.records(customer_id="C-7")
    assert record["request_id"] == "crm-req-7"
    assert record["payload"]["inputs"] == customer


def test_numbers_in_the_query_are_read_as_the_schema_says(
    web: FlaskClient, web_service: ExplainerService, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    query = {**customer, "tenure": "12", "monthly_charges": "70.25"}
    assert web.get(why_url(query, "C-8")).status_code == 200
    [record], _ = web_service.oversight.records(customer_id="C-8")
    assert record["payload"]["inputs"]["tenure"] == 12
    assert record["payload"]["inputs"]["monthly_charges"] == 70.25


def test_bad_values_get_a_friendly_page_naming_each_field(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    query = {k: v for k, v in customer.items() if k != "nps_score"}
    query |= {"tenure": "three", "contract": "Weekly", "monthly_charges": "nan", "shoe_size": 9}
    page = web.get(why_url(query))
    assert page.status_code == 422
    text = page.text
    for label in (
        "Months as a customer",
        "Contract type",
        "Monthly charges",
        "Net Promoter survey score",
        "shoe_size",
    ):
        assert f"<strong>{label}</strong>" in text
    assert "is required" in text and "is not a field" in text
    # the form comes back filled in as sent, each bad field marked and described
    assert 'value="three"' in text and text.count('aria-invalid="true"') == 4
    assert 'aria-describedby="e-tenure"' in text and 'href="#f-contract"' in text
    assert accessibility_problems(text) == []


def test_a_value_given_twice_is_named(web: FlaskClient, customer: dict[str, Any]) -> None:
    sign_in(web, "crm")
    page = web.get(why_url(customer) + "&tenure=4")
    assert page.status_code == 422 and "given more than once" in page.text


def test_without_values_the_card_offers_a_labelled_form(web: FlaskClient) -> None:
    sign_in(web, "crm")
    page = web.get("/ui/why/lead_score?customer_id=L-1")
    assert page.status_code == 200
    assert 'name="pages_viewed" type="number"' in page.text and 'value="L-1"' in page.text
    assert accessibility_problems(page.text) == []


def test_an_unknown_model_is_a_404_page(web: FlaskClient) -> None:
    sign_in(web, "crm")
    page = web.get("/ui/why/nope?x=1")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_the_card_fits_a_multiclass_model(web: FlaskClient, demo_models: Any) -> None:
    from tests.conftest import customers, features_of

    sign_in(web, "crm")
    names = demo_models["case_priority"].schema.feature_names
    features = features_of(customers("case_priority", 3), names, 0)
    page = web.get(why_url(features, "K-1", model="case_priority"))
    assert page.status_code == 200 and "Priority" in page.text


# -- headers ------------------------------------------------------------------------------------
def test_only_the_card_may_be_framed_and_only_by_the_crm(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "admin")
    card = web.get(why_url(customer))
    policy = card.headers["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {CRM_ORIGIN}" in policy
    assert "X-Frame-Options" not in card.headers
    for path in ("/ui/", "/ui/importance", "/ui/audit"):
        response = web.get(path)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY"
    for response in (card, web.get("/ui/audit")):
        assert "script-src" not in response.headers["Content-Security-Policy"]  # default 'none'
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_a_malformed_embed_origin_cannot_inject_a_policy(
    settings: Settings, web_service: ExplainerService
) -> None:
    bad = replace(settings, embed_origins=("https://ok.example", "x; script-src *"))
    app = create_app(bad, service=web_service, keys=KeyRing.from_plain(KEYS))
    policy = app.test_client().get("/ui/login").headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://ok.example" in policy and "script-src" not in policy


def test_the_pages_load_nothing_from_elsewhere(web: FlaskClient) -> None:
    sign_in(web, "admin")
    for path in ("/ui/login", "/ui/", "/ui/audit", "/ui/importance", "/ui/why/churn"):
        text = web.get(path).text
        assert not re.search(r'(src|href)="(https?:)?//', text), path
    with web.get("/ui/static/pages.css") as stylesheet:  # closes the file it streams
        assert stylesheet.status_code == 200 and stylesheet.mimetype == "text/css"


# -- contest, audit, export, verify ----------------------------------------------------------
def contest(
    web: FlaskClient, customer: dict[str, Any], reason: str = "I never had a late payment"
) -> Any:
    page = web.get(why_url(customer, "C-42")).text
    explanation_id = re.search(r"/ui/explanations/(\w+)/contest", page)
    assert explanation_id
    return explanation_id.group(1), web.post(
        f"/ui/explanations/{explanation_id.group(1)}/contest",
        data={"csrf_token": csrf(web), "reason": reason, "back": why_url(customer, "C-42")},
    )


def test_contesting_opens_a_case_the_auditor_sees(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    explanation_id, response = contest(web, customer)
    assert response.status_code == 201
    case_id = re.search(r'id="case-id">(\w+)<', response.text)
    assert case_id
    assert (
        "frame-ancestors 'self' https://crm.example.com"
        in response.headers["Content-Security-Policy"]
    )
    again = web.post(
        f"/ui/explanations/{explanation_id}/contest",
        data={"csrf_token": csrf(web), "reason": "again"},
    )
    assert again.status_code == 409 and "already has an open case" in again.text
    sign_in(web, "auditor")
    audit = web.get("/ui/audit").text
    assert case_id.group(1) in audit and "I never had a late payment" in audit
    cases = web.get("/v1/reviews?status=open", headers=auth("auditor")).get_json()["cases"]
    assert [c["case_id"] for c in cases] == [case_id.group(1)]


def test_the_auditor_decides_a_case_on_the_audit_page_and_the_decision_is_archived(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "crm")
    _, contested = contest(web, customer)
    case_id = re.search(r'id="case-id">(\w+)<', contested.text)
    assert case_id
    decide = f"/ui/audit/cases/{case_id.group(1)}/decision"
    assert web.post(decide, data={"csrf_token": csrf(web), "decision": "upheld"}).status_code == 403

    sign_in(web, "auditor")
    assert f'action="{decide}"' in web.get("/ui/audit").text
    unclear = web.post(decide, data={"csrf_token": csrf(web), "decision": "maybe"})
    assert unclear.status_code == 422 and "decision" in unclear.text
    note = "Late payment confirmed by the bank"
    decided = web.post(decide, data={"csrf_token": csrf(web), "decision": "upheld", "note": note})

    assert decided.status_code == 200 and "decided: upheld" in decided.text
    assert web.get("/v1/reviews?status=open", headers=auth("auditor")).get_json()["cases"] == []
    [case] = web.get("/v1/reviews", headers=auth("auditor")).get_json()["cases"]
    assert (case["decision"], case["note"]) == ("upheld", note)
    events = web.get("/v1/audit/explanations?kind=review_decision", headers=auth("auditor"))
    assert len(events.get_json()["items"]) == 1
    again = web.post(decide, data={"csrf_token": csrf(web), "decision": "overturned"})
    assert again.status_code == 409


def test_an_empty_reason_is_asked_for_again(web: FlaskClient, customer: dict[str, Any]) -> None:
    sign_in(web, "crm")
    _, response = contest(web, customer, reason="   ")
    assert response.status_code == 422 and "Please say" in response.text


def test_the_audit_page_filters_and_pages_through_the_archive(
    web: FlaskClient, web_service: ExplainerService, customer: dict[str, Any]
) -> None:
    sign_in(web, "auditor")
    for i in range(27):
        web.get(why_url(customer, f"P-{i}"))
    first = web.get("/ui/audit?model=churn&kind=explanation")
    assert first.status_code == 200
    assert first.text.count('scope="row">') >= 25
    next_page = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_page
    rest = web.get(next_page.group(1).replace("&amp;", "&")).text
    assert "P-26" in rest and "P-0<" not in rest
    one = web.get("/ui/audit?customer_id=P-3").text
    assert "P-3<" in one and "P-4<" not in one
    assert "No records match" in web.get("/ui/audit?model=lead_score").text
    assert accessibility_problems(first.text) == []


@pytest.mark.parametrize(
    "query", ["since=yesterday", "since=2030-01-02&until=2030-01-01", "kind=gossip"]
)
def test_a_bad_filter_is_named(web: FlaskClient, query: str) -> None:
    sign_in(web, "auditor")
    page = web.get(f"/ui/audit?{query}")
    assert page.status_code == 422 and "Check the filter" in page.text


def test_a_record_opens_with_its_drivers_and_rationale(
    web: FlaskClient, customer: dict[str, Any]
) -> None:
    sign_in(web, "auditor")
    card = web.get(why_url(customer, "C-5")).text
    record_id = re.search(r"/ui/explanations/(\w+)/contest", card)
    assert record_id
    page = web.get(f"/ui/audit/records/{record_id.group(1)}")
    assert page.status_code == 200
    assert drivers_on(page.text) == drivers_on(card)
    assert accessibility_problems(page.text) == []
    assert web.get("/ui/audit/records/nope").status_code == 404


def test_the_exported_bundle_verifies(web: FlaskClient, customer: dict[str, Any]) -> None:
    sign_in(web, "auditor")
    web.get(why_url(customer, "C-9"))
    response = web.post("/ui/audit/export", data={"csrf_token": csrf(web), "model": "churn"})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    report = verify_bundle(io.BytesIO(response.data))
    assert report.ok and report.records == 1


def test_verify_shows_the_archive_intact(web: FlaskClient, customer: dict[str, Any]) -> None:
    sign_in(web, "auditor")
    web.get(why_url(customer))
    page = web.post("/ui/audit/verify", data={"csrf_token": csrf(web)})
    assert page.status_code == 200
    assert "The archive is intact." in page.text and "1 records checked" in page.text


# -- importance -------------------------------------------------------------------------------
def test_importance_shows_versions_side_by_side_with_rank_changes(
    web: FlaskClient, web_service: ExplainerService
) -> None:
    sign_in(web, "analyst")
    page = web.get("/ui/importance?models=churn@1,churn@2")
    assert page.status_code == 200
    compared = web_service.compare(["churn@1", "churn@2"])
    rows = re.findall(r'<tr class="([^"]*)" data-feature="([^"]+)"', page.text)
    assert [feature for _, feature in rows] == [f["feature"] for f in compared["features"]]
    for (classes, _), feature in zip(rows, compared["features"], strict=True):
        assert ("moved" in classes) == (feature["rank_change"] != 0)
    assert any(f["rank_change"] for f in compared["features"]), "the fixture should move a rank"
    assert "▲" in page.text and "▼" in page.text and re.search(r"(up|down) \d+ place", page.text)
    assert accessibility_problems(page.text) == []


def test_importance_takes_the_checkboxes_parameters(web: FlaskClient) -> None:
    sign_in(web, "analyst")
    page = web.get("/ui/importance?models=churn@1&models=lead_score@1")
    assert page.status_code == 200 and "not ranked in lead_score@1" in page.text


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("models=churn@1", 422, "at least two"),
        ("models=churn@1,churn@1", 422, "twice"),
        ("models=churn@1,churn@x", 422, "NAME@VERSION"),
        ("models=churn@1,churn@9", 404, "not"),
    ],
)
def test_a_bad_comparison_is_explained(
    web: FlaskClient, query: str, status: int, says: str
) -> None:
    sign_in(web, "analyst")
    page = web.get(f"/ui/importance?{query}")
    assert page.status_code == status and says in page.text


# -- accessibility and style ------------------------------------------------------------------
def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(
    ("fg", "bg", "least"),
    [
        ("text", "bg", 4.5),
        ("text", "surface", 4.5),
        ("muted", "bg", 4.5),
        ("muted", "surface", 4.5),
        ("link", "bg", 4.5),
        ("link", "surface", 4.5),
        ("up", "bg", 4.5),
        ("down", "bg", 4.5),
        ("text", "moved", 4.5),
        ("up", "moved", 4.5),
        ("down", "moved", 4.5),
        ("ok-text", "ok-bg", 4.5),
        ("error-text", "error-bg", 4.5),
        ("high-text", "high-bg", 4.5),
        ("medium-text", "medium-bg", 4.5),
        ("low-text", "low-bg", 4.5),
        ("button-text", "button", 4.5),
        # graphics and controls: 3:1 (WCAG 1.4.11)
        ("up", "track", 3),
        ("down", "track", 3),
        ("importance", "track", 3),
        ("border", "bg", 3),
        ("focus", "bg", 3),
        ("focus", "surface", 3),
    ],
)
def test_the_palette_has_sufficient_contrast(fg: str, bg: str, least: float) -> None:
    palette = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6});", STYLESHEET.read_text()))
    assert contrast(palette[fg], palette[bg]) >= least, (fg, bg)


def test_the_templates_and_stylesheet_ship_in_the_package() -> None:
    from importlib.resources import files

    pages = files("explainer.pages")
    for name in ("templates/pages/why.html", "templates/pages/audit.html", "static/pages.css"):
        assert pages.joinpath(name).is_file(), name
    setup = (Path(__file__).resolve().parents[2] / "setup.cfg").read_text()
    assert "pages/templates/pages/*.html" in setup and "pages/static/*" in setup
