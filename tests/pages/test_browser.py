"""End to end in headless Chromium against a real HTTP server: sign in, read the why card
(and check it against the API), contest it, find the case as an auditor, export a bundle that
verifies, compare importances, and embed the card in a CRM page. Every page is screenshotted
to test-output/screenshots/, and no page may log a console error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, make_server

from explainer.api import create_app
from explainer.archive import verify_bundle
from explainer.config import Settings
from explainer.service import ExplainerService
from model_store.demo import DemoModel
from tests.conftest import KEYS
from tests.pages.conftest import pages_service

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

if CHROMIUM.exists():
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright


def serve(app: Any) -> tuple[BaseWSGIServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@dataclass
class Site:
    url: str  # the service
    crm: str  # a CRM page allowed to embed the card
    stranger: str  # a page on another origin, which may not


@pytest.fixture(scope="module")
def site(
    demo_models: dict[str, DemoModel],
    demo_service: ExplainerService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    """The service on a free port, keys from CRM_EXPLAIN_API_KEYS, a SQLite archive of its
    own; and a second server playing the CRM that embeds the card in an iframe."""
    frames: dict[str, str] = {}

    def crm_page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = frames.get(environ.get("PATH_INFO", ""), "").encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    crm, crm_thread = serve(crm_page)
    home = tmp_path_factory.mktemp("pages-e2e")
    service = pages_service(demo_models, demo_service, home / "archive.db")
    environ = {
        "CRM_EXPLAIN_HOME": str(home / "home"),
        "CRM_EXPLAIN_API_KEYS": ",".join(f"{role}:{key}" for key, role in KEYS.items()),
        "CRM_EXPLAIN_EMBED_ORIGINS": f"http://127.0.0.1:{crm.server_port}",
    }
    app = create_app(Settings.from_env(environ), service=service)
    server, thread = serve(app)
    site = Site(
        f"http://127.0.0.1:{server.server_port}",
        f"http://127.0.0.1:{crm.server_port}/crm",
        f"http://localhost:{crm.server_port}/crm",
    )
    site_frames = frames

    def embed(src: str) -> None:
        site_frames["/crm"] = (
            '<!doctype html><html lang="en"><head><title>CRM</title></head><body>'
            "<h1>Customer C-1001</h1>"
            f'<iframe title="Why this score" src="{src}" width="375" height="760"></iframe>'
            "</body></html>"
        )

    site.embed = embed  # type: ignore[attr-defined]
    try:
        yield site
    finally:
        for running, worker in ((server, thread), (crm, crm_thread)):
            running.shutdown()
            running.server_close()
            worker.join(timeout=10)
        service.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Console:
    """What the pages logged as errors, and the scripts' uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"page error: {error}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    context.on("console", console.on_console)
    opened.on("pageerror", console.on_page_error)
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    """On the sign-in page: type the key and press Enter, as a keyboard user would."""
    field = page.get_by_label("API key")
    field.fill(key)
    field.press("Enter")
    page.wait_for_load_state()


def go_signed_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    assert "/ui/login" in page.url  # signed out: sent to sign in first, then back
    sign_in(page, key)
    assert page.url == url, page.url


def why_path(customer: dict[str, Any], customer_id: str) -> str:
    return "/ui/why/churn?" + urlencode({"customer_id": customer_id, **customer})


def api_explanation(site: Site, customer: dict[str, Any], customer_id: str) -> Any:
    response = requests.post(
        f"{site.url}/v1/models/churn/explain",
        json={"instances": [{"customer_id": customer_id, "features": customer}]},
        headers={"Authorization": "Bearer crm-key"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["explanations"][0]


def test_the_why_card_shows_the_apis_drivers_and_rationale(
    site: Site, page: Page, console: Console, customer: dict[str, Any]
) -> None:
    shot_login = site.url + "/ui/login"
    page.goto(shot_login)
    shot(page, "login")
    go_signed_in(page, site.url + why_path(customer, "C-1001"), "crm-key")
    served = api_explanation(site, customer, "C-1001")

    drivers = page.locator("li.driver").evaluate_all(
        "rows => rows.map(r => [r.dataset.feature, Number(r.dataset.contribution)])"
    )
    assert [feature for feature, _ in drivers] == [a["feature"] for a in served["attributions"]]
    for (_, shown), attribution in zip(drivers, served["attributions"], strict=True):
        assert shown == pytest.approx(attribution["contribution"], abs=1e-12)
    top = served["attributions"][0]
    first = page.locator("li.driver").first.inner_text()
    assert top["label"] in first and ("▲" in first) == (top["contribution"] > 0)
    assert f"{abs(top['contribution']) * 100:.1f} pts" in first
    assert page.locator("#rationale").inner_text() == served["rationale"]
    heading = page.get_by_role("heading", level=1).inner_text()
    assert f"{served['prediction']['score'] * 100:.0f}%" in heading
    assert served["prediction"]["band"] in heading.lower()
    shot(page, "why-card")

    page.set_viewport_size({"width": 375, "height": 812})  # a CRM's side panel
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    box = page.locator("li.driver svg").first.bounding_box()
    assert box is not None and box["width"] > 250  # the bars use the panel's width
    shot(page, "why-card-375")
    assert console.errors == []


def test_a_contest_made_by_keyboard_reaches_the_auditor(
    site: Site, page: Page, console: Console, customer: dict[str, Any]
) -> None:
    go_signed_in(page, site.url + why_path(customer, "C-2002"), "crm-key")
    reason = page.get_by_label("Why should it be reviewed?")
    for _ in range(12):  # Tab through the page to the form
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "reason":
            break
    assert page.evaluate("document.activeElement.id") == "reason"
    page.keyboard.type("The customer renewed for two years last week.")
    page.keyboard.press("Tab")
    button = page.get_by_role("button", name="Contest this decision")
    assert button.evaluate("b => b === document.activeElement")
    assert button.evaluate("b => getComputedStyle(b).outlineStyle") != "none"  # focus is visible
    assert reason.input_value().startswith("The customer renewed")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    case_id = page.locator("#case-id").inner_text()
    assert len(case_id) >= 8
    shot(page, "contest")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login?signed_out=1")
    sign_in(page, "auditor-key")
    assert page.url.endswith("/ui/audit")
    cases = page.get_by_role("table", name="Contested decisions waiting for a reviewer")
    row = cases.get_by_role("row").filter(has_text=case_id)
    assert "renewed for two years" in row.inner_text()
    shot(page, "audit")
    row.get_by_role("link").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text().endswith("explanation")
    assert "C-2002" in page.locator("table.facts").inner_text()
    shot(page, "audit-record")
    assert console.errors == []


def test_an_exported_bundle_verifies_and_so_does_the_archive(
    site: Site, page: Page, console: Console, customer: dict[str, Any], tmp_path: Path
) -> None:
    api_explanation(site, customer, "C-3003")
    go_signed_in(page, site.url + "/ui/audit?model=churn", "auditor-key")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export a bundle").click()
    bundle = tmp_path / "bundle.zip"
    download.value.save_as(bundle)
    assert download.value.suggested_filename.startswith("crm-explain-audit-")
    report = verify_bundle(bundle)
    assert report.ok and report.records >= 1, report
    page.get_by_role("button", name="Verify the archive").click()
    page.wait_for_load_state()
    result = page.locator("#verify-result").inner_text()
    assert "The archive is intact." in result
    shot(page, "audit-verified")
    assert console.errors == []


def test_importances_compare_side_by_side_with_rank_changes(
    site: Site, page: Page, console: Console
) -> None:
    go_signed_in(page, site.url + "/ui/importance", "analyst-key")
    page.get_by_label("churn@1").check()
    page.get_by_label("churn@2").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_load_state()
    assert "models=churn%401&models=churn%402" in page.url
    table = page.get_by_role("table", name="Feature importance of churn@1, churn@2")
    assert table.locator("tbody tr").count() == 15
    moved = table.locator("tr.moved")
    assert moved.count() >= 1
    assert any(sign in moved.first.inner_text() for sign in ("▲ up", "▼ down"))
    assert table.locator("svg.bar").count() == 30
    shot(page, "importance")
    assert console.errors == []


def test_the_card_can_be_embedded_by_the_crm_only(
    site: Site, page: Page, console: Console, customer: dict[str, Any]
) -> None:
    card = site.url + why_path(customer, "C-4004")
    go_signed_in(page, card, "crm-key")
    site.embed(card)  # type: ignore[attr-defined]

    page.goto(site.crm)
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", level=1).wait_for()
    assert "%" in frame.get_by_role("heading", level=1).inner_text()
    assert frame.locator("li.driver:visible").count() == 6  # the rest behind "All factors"
    shot(page, "why-card-embedded")
    assert console.errors == []

    page.goto(site.stranger)
    page.wait_for_timeout(500)
    [_, blocked] = page.frames
    assert blocked.url.startswith("chrome-error:")  # Chromium's "is blocked" page, not ours
    assert blocked.locator("li.driver").count() == 0
    assert console.errors and all("frame-ancestors" in e for e in console.errors), console.errors


def test_bad_values_come_back_in_a_form_to_correct(
    site: Site, page: Page, console: Console, customer: dict[str, Any]
) -> None:
    go_signed_in(page, site.url + "/ui/", "crm-key")
    shot(page, "models")
    page.set_viewport_size({"width": 375, "height": 812})
    bad = {**customer, "tenure": "three", "contract": "Weekly"}
    response = page.goto(site.url + why_path(bad, "C-5005"))
    assert response is not None and response.status == 422
    problems = page.get_by_role("alert").inner_text()
    assert "Months as a customer" in problems and "Contract type" in problems
    tenure = page.get_by_label("Months as a customer")
    assert tenure.get_attribute("aria-invalid") == "true" and tenure.input_value() == ""
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "why-card-invalid-375")
    tenure.fill("3")
    page.get_by_label("Contract type").select_option("Month-to-month")
    page.get_by_role("button", name="Explain the score").click()
    page.wait_for_load_state()
    assert page.locator("#rationale").is_visible()
    assert "customer_id=C-5005" in page.url and "tenure=3" in page.url
    # Chromium reports the intended 422 of the document itself; nothing else may appear
    [status] = console.errors
    assert status.startswith("Failed to load resource: the server responded with a status of 422")
