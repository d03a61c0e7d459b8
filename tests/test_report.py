"""Transparency reports: the JSON, the self-contained HTML page, the CLI and the audit bundle."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.report import FORMAT_VERSION, SECTIONS, render_html
from explainer.service import Decision, ExplainerService
from model_store import FileSystemStore
from tests.conftest import customers, features_of
from tests.fairness.test_fairness_service import GROUPS, LABELS, PLANS, X, tiny_store

CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """Every tag with its attributes, and the text under each heading."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[tuple[str, str | None, str]] = []  # (tag, id, text)
        self._heading: tuple[str, str | None] | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2", "h3"):
            self._heading, self._text = (tag, dict(attrs).get("id")), []

    def handle_endtag(self, tag: str) -> None:
        if self._heading and tag == self._heading[0]:
            self.headings.append((*self._heading, "".join(self._text).strip()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading:
            self._text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


@pytest.fixture
def report_service(archive_service: ExplainerService) -> ExplainerService:
    """The demo models, a fresh archive, and no fairness audit run yet."""
    return archive_service


@pytest.fixture
def churn_report(report_service: ExplainerService) -> dict[str, Any]:
    names = report_service.model("churn").schema.feature_names
    frame = customers("churn", 2)
    report_service.explain("churn", [Decision(features_of(frame, names, i)) for i in range(2)])
    return report_service.report("churn")


class TestTheJsonReport:
    def test_every_section_is_present(self, churn_report: dict[str, Any]) -> None:
        assert churn_report["kind"] == "transparency_report"
        assert churn_report["format_version"] == FORMAT_VERSION
        assert set(churn_report) >= {key for key, _ in SECTIONS}
        assert json.loads(json.dumps(churn_report)) == churn_report  # plain JSON

    def test_it_carries_the_cards_prose_and_numbers(
        self, churn_report: dict[str, Any], report_service: ExplainerService
    ) -> None:
        card = report_service.record("churn").card
        assert churn_report["intended_use"]["summary"] == card["intended_use"]
        assert churn_report["performance"] == card["metrics"]
        assert churn_report["limitations"]["limitations"] == card["limitations"]
        assert churn_report["owner"] == card["owner"]
        assert churn_report["how_to_contest"] == card["how_to_contest"]
        assert churn_report["data"]["protected_attributes"] == ["gender", "age_band"]

    def test_global_importance_is_the_services(
        self, churn_report: dict[str, Any], report_service: ExplainerService
    ) -> None:
        importance = churn_report["global_importance"]
        assert importance["available"] is True
        assert importance["importances"] == report_service.importance("churn")["importances"]

    def test_fairness_comes_from_the_card_until_an_audit_runs(
        self, churn_report: dict[str, Any]
    ) -> None:
        fairness = churn_report["fairness"]
        assert fairness["source"] == "model_card" and "not re-run" in fairness["note"]
        age = fairness["attributes"]["age_band"]
        assert age["disparate_impact_ratio"] < 0.8
        assert any("four-fifths" in flag for flag in age["flags"])
        assert fairness["known_proxy"] == {
            "protected": "age_band",
            "feature": "payment_method",
            "label": "Payment method",
        }

    def test_the_last_audit_counts_the_versions_archived_explanations(
        self, churn_report: dict[str, Any]
    ) -> None:
        last = churn_report["last_audit"]
        assert last["archived_explanations"] == 2 and last["counted_all"] is True
        assert last["open_review_cases"] == 0
        assert last["latest_explanation_at"] >= last["first_explanation_at"]

    def test_without_an_archive_there_is_no_audit_trail(
        self, demo_service: ExplainerService
    ) -> None:
        service = ExplainerService(demo_service.store)
        service._models = demo_service._models
        assert service.report("lead_score")["last_audit"] is None


class TestTheHtmlPage:
    @pytest.fixture
    def html(self, churn_report: dict[str, Any]) -> str:
        return render_html(churn_report)

    def test_it_loads_nothing_from_anywhere(self, html: str) -> None:
        page = Page(html)
        for tag, attrs in page.tags:
            for name in ("src", "href", "action", "data", "poster"):
                value = (attrs.get(name) or "").strip().lower()
                assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, value)
                if tag == "a" and name == "href" and value:
                    assert value.startswith("#"), value  # in-page links only
        assert not page.all("script") and not page.all("link") and not page.all("img")
        assert not page.all("iframe") and "url(" not in html and "@import" not in html

    def test_every_section_has_its_heading(self, html: str) -> None:
        page = Page(html)
        h2 = {hid: text for tag, hid, text in page.headings if tag == "h2"}
        for key, title in SECTIONS:
            assert h2.get(key) == title
        assert [tag for tag, _, _ in page.headings].count("h1") == 1

    def test_it_is_accessible(self, html: str) -> None:
        page = Page(html)
        assert page.all("html")[0].get("lang") == "en"
        assert page.all("title") and page.all("main") and page.all("nav")
        tables = html.count("<table")
        assert tables >= 3 and html.count("<caption") == tables
        assert all(th.get("scope") in ("col", "row") for th in page.all("th"))
        for key, _ in SECTIONS:
            assert {"href": f"#{key}"} in page.all("a")

    def test_text_is_escaped(self, churn_report: dict[str, Any]) -> None:
        hostile = {**churn_report, "owner": "<script>alert(1)</script>"}
        html = render_html(hostile)
        assert "<script>" not in html and "&lt;script&gt;" in html

    @pytest.mark.browser
    @pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
    def test_headless_chromium_renders_it_offline(self, html: str, tmp_path: Path) -> None:
        page = tmp_path / "report.html"
        page.write_text(html, encoding="utf-8")
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--user-data-dir=" + str(tmp_path / "u"),
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "How to contest a decision" in result.stdout
        assert "Transparency report: churn version 1" in result.stdout


# -- audit bundles and the command line ------------------------------------------------------


@pytest.fixture
def tiny_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose store holds the tiny test models, as the CLI finds it."""
    home = tmp_path / "home"
    monkeypatch.setenv("CRM_EXPLAIN_HOME", str(home))
    monkeypatch.delenv("CRM_EXPLAIN_STORE_URL", raising=False)
    monkeypatch.delenv("CRM_EXPLAIN_ARCHIVE_URL", raising=False)
    tiny_store(FileSystemStore(str(home / "models")))
    yield home


def test_audit_bundles_carry_every_versions_transparency_report(tmp_path: Path) -> None:
    from explainer.archive import Secrets, open_archive, verify_bundle

    store = tiny_store()
    with open_archive(f"sqlite:///{tmp_path / 'a.db'}", Secrets.generate()) as archive:
        service = ExplainerService(store, archive=archive)
        decision = Decision({"x": 1, "plan": "basic"}, "C-1")
        service.explain("tiny", [decision], output="log_odds")  # exact linear SHAP: quick
        out = io.BytesIO()
        service.oversight.export(out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as bundle:
        cards = {
            n: json.loads(bundle.read(n)) for n in bundle.namelist() if n.startswith("model_cards/")
        }
    refs = {f"{name}@{r.version}" for name in store.names() for r in store.versions(name)}
    assert set(cards) == {f"model_cards/{ref}.json" for ref in refs}
    for path, card in cards.items():
        report = card["transparency_report"]
        assert report["kind"] == "transparency_report"
        assert f"{report['model']['name']}@{report['model']['version']}" in path
        assert report["global_importance"]["available"] is True
    assert (
        cards["model_cards/tiny@1.json"]["transparency_report"]["last_audit"][
            "archived_explanations"
        ]
        == 1
    )
    assert verify_bundle(io.BytesIO(out.getvalue())).ok


def test_cli_report_writes_html_or_json(tiny_home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    html = tmp_path / "tiny.html"
    result = runner.invoke(main, ["report", "tiny@1", "--out", str(html)])
    assert result.exit_code == 0, result.output
    assert "tiny@1" in result.output
    page = Page(html.read_text(encoding="utf-8"))
    assert {hid for tag, hid, _ in page.headings if tag == "h2"} >= {k for k, _ in SECTIONS}
    as_json = tmp_path / "tiny.json"
    assert runner.invoke(main, ["report", "tiny", "--out", str(as_json)]).exit_code == 0
    assert json.loads(as_json.read_text())["model"]["name"] == "tiny"
    printed = runner.invoke(main, ["report", "tiers"])
    assert printed.exit_code == 0 and json.loads(printed.output)["model"]["name"] == "tiers"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["report", "tiny", "--out", "report.pdf"], 2, "--out"),
        (["report", "nosuch"], 3, "nosuch"),
        (["report", "tiny@x"], 2, "NAME@VERSION"),
    ],
)
def test_cli_report_errors_are_one_sentence(
    tiny_home: Path, args: list[str], code: int, says: str
) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_fairness_prints_the_audit(tiny_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "decisions.csv"
    pd.DataFrame(
        {"x": X, "plan": PLANS, "segment": GROUPS, "outcome": LABELS, "customer_id": range(10)}
    ).to_csv(data, index=False)
    result = CliRunner().invoke(
        main,
        [
            "fairness",
            "tiny",
            "--data",
            str(data),
            "--protected",
            "segment",
            "--label",
            "outcome",
            "--threshold",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    audit = json.loads(result.output)
    assert audit["n_records"] == 10 and audit["labels"] is True
    groups = {g["group"]: g for g in audit["attributes"]["segment"]["groups"]}
    assert groups["A"]["selection_rate"] == pytest.approx(0.6)
    assert groups["B"]["tpr"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--protected", "gender"], "'gender'"),
        (["--protected", "segment", "--label", "plan"], "rows[0].label"),
        (["--protected", "segment", "--positive-class", "maybe"], "positive_classes"),
    ],
)
def test_cli_fairness_bad_input_is_one_sentence(
    tiny_home: Path, tmp_path: Path, extra: list[str], says: str
) -> None:
    data = tmp_path / "decisions.jsonl"
    pd.DataFrame({"x": X, "plan": PLANS, "segment": GROUPS}).to_json(
        data, orient="records", lines=True
    )
    result = CliRunner().invoke(main, ["fairness", "tiny", "--data", str(data), *extra])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_templates_ship_with_the_package() -> None:
    import explainer.report

    folder = Path(explainer.report.__file__).parent / "templates"
    assert (folder / "report.html").is_file()
    assert "report/templates/*.html" in (Path(__file__).parents[1] / "setup.cfg").read_text()
