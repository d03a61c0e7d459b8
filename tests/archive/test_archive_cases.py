"""Contest and human review: cases in their own table, every step an event in the chain."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import Engine, text

from explainer.archive import Archive, Secrets, open_archive
from explainer.exceptions import Conflict, NotFound, Unavailable, ValidationError

from .conftest import Backend, explanation_entry, writes_rejected


@pytest.fixture
def explanation_id(archive: Archive) -> str:
    return str(archive.append([explanation_entry("C-1001")])[0]["id"])


def test_a_customer_contests_an_explanation(archive: Archive, explanation_id: str) -> None:
    case = archive.open_case(explanation_id, "My contract is not month-to-month")

    assert case["status"] == "open"
    assert case["explanation_id"] == explanation_id
    assert case["reason"] == "My contract is not month-to-month"
    assert case["opened_by"] == "customer"
    assert case["opened_at"].endswith("Z")
    assert archive.get_case(case["case_id"]) == case


def test_opening_a_case_archives_a_case_opened_event(archive: Archive, explanation_id: str) -> None:
    case = archive.open_case(explanation_id, "wrong tenure", request_id="req-42")

    [event] = archive.list(kind="case_opened")[0]
    explained = archive.get(explanation_id)
    assert event["details"] == {
        "case_id": case["case_id"],
        "explanation_id": explanation_id,
        "opened_by": "customer",
    }
    assert event["subject"] == explained["subject"] and event["model"] == explained["model"]
    assert event["request_id"] == "req-42"
    assert event["payload"] == {"reason": "wrong tenure"}  # personal: stored encrypted
    assert archive.verify().ok


def test_the_system_can_open_a_case_for_review(archive: Archive, explanation_id: str) -> None:
    case = archive.open_case(explanation_id, "score near the threshold", opened_by="system")
    assert case["opened_by"] == "system"


def test_an_explanation_flagged_for_review_is_archived_with_its_case_in_one_commit(
    archive: Archive,
) -> None:
    flagged = replace(explanation_entry("C-7"), review_reason="score near the threshold")
    commits = archive.stats.commits

    explanation, event = archive.append([explanation_entry("C-6"), flagged])[1:]

    assert archive.stats.commits == commits + 1
    assert event["kind"] == "case_opened" and event["seq"] == explanation["seq"] + 1
    [case] = archive.list_cases()
    assert case == archive.get_case(event["details"]["case_id"])
    assert (case["explanation_id"], case["opened_by"], case["reason"], case["status"]) == (
        explanation["id"],
        "system",
        "score near the threshold",
        "open",
    )
    assert event["subject"] == explanation["subject"] and event["model"] == explanation["model"]
    assert archive.verify().ok


def test_when_its_case_cannot_be_opened_a_flagged_explanation_is_not_archived_either(
    archive: Archive, backend: Backend, db: Engine
) -> None:
    flagged = replace(explanation_entry("C-7"), review_reason="score near the threshold")

    rejected = writes_rejected(backend, db, table="archive_cases", reason="review queue full")
    with rejected, pytest.raises(Unavailable, match="review queue full"):
        archive.append([flagged])

    assert archive.list()[0] == []
    assert archive.verify().ok


def test_a_review_reason_must_be_text(archive: Archive) -> None:
    with pytest.raises(ValidationError, match=r"entries\[0\]\.review_reason"):
        archive.append([replace(explanation_entry(), review_reason=" ")])
    assert archive.list()[0] == []


def test_only_one_case_per_explanation_is_open_at_a_time(
    archive: Archive, explanation_id: str
) -> None:
    first = archive.open_case(explanation_id, "first")

    with pytest.raises(Conflict, match=first["case_id"]):
        archive.open_case(explanation_id, "second")

    archive.decide_case(first["case_id"], "upheld", "")
    assert archive.open_case(explanation_id, "again")["status"] == "open"


def test_a_customer_may_contest_a_decision_the_system_sent_to_review(
    archive: Archive, explanation_id: str
) -> None:
    flagged = archive.open_case(explanation_id, "score near the threshold", opened_by="system")

    contested = archive.open_case(explanation_id, "my tenure is wrong", opened_by="customer")

    assert contested["case_id"] != flagged["case_id"]
    open_cases = {c["opened_by"]: c["reason"] for c in archive.list_cases("open")}
    assert open_cases == {"system": "score near the threshold", "customer": "my tenure is wrong"}
    with pytest.raises(Conflict, match=flagged["case_id"]):
        archive.open_case(explanation_id, "still near", opened_by="system")


def test_a_case_needs_an_archived_explanation(archive: Archive, explanation_id: str) -> None:
    with pytest.raises(NotFound):
        archive.open_case("0" * 32, "no such explanation")
    case = archive.open_case(explanation_id, "x")
    [event] = archive.list(kind="case_opened")[0]
    with pytest.raises(NotFound):  # an event is not an explanation
        archive.open_case(event["id"], "contesting an event")
    assert case["case_id"]


def test_a_reviewer_decides_a_case(archive: Archive, explanation_id: str) -> None:
    case = archive.open_case(explanation_id, "wrong")

    decided = archive.decide_case(case["case_id"], "overturned", "tenure was 30", decided_by="ana")

    assert decided["status"] == "closed" and decided["decision"] == "overturned"
    assert decided["note"] == "tenure was 30" and decided["decided_by"] == "ana"
    [event] = archive.list(kind="review_decision")[0]
    assert event["details"] == {
        "case_id": case["case_id"],
        "explanation_id": explanation_id,
        "decision": "overturned",
        "decided_by": "ana",
    }
    assert event["payload"] == {"note": "tenure was 30"}
    assert archive.verify().ok


def test_a_case_is_decided_once(archive: Archive, explanation_id: str) -> None:
    case = archive.open_case(explanation_id, "wrong")
    archive.decide_case(case["case_id"], "amended", "fixed")

    with pytest.raises(Conflict, match="already decided"):
        archive.decide_case(case["case_id"], "upheld", "again")


def test_deciding_an_unknown_case_is_not_found(archive: Archive) -> None:
    with pytest.raises(NotFound):
        archive.decide_case("nope", "upheld", "")
    with pytest.raises(NotFound):
        archive.get_case("nope")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda a, e: a.open_case(e, ""), "reason"),
        (lambda a, e: a.open_case(e, "x", opened_by="robot"), "opened_by"),
        (lambda a, e: a.decide_case("c", "maybe", "x"), "decision"),
        (lambda a, e: a.list_cases(status="pending"), "status"),
    ],
)
def test_bad_case_arguments_are_refused_by_field(
    archive: Archive, explanation_id: str, call: object, field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        call(archive, explanation_id)  # type: ignore[operator]
    assert raised.value.errors[0].field == field


def test_cases_are_listed_oldest_first_and_by_status(archive: Archive) -> None:
    ids = [r["id"] for r in archive.append([explanation_entry(f"C-{i}") for i in range(3)])]
    cases = [archive.open_case(i, f"reason {n}") for n, i in enumerate(ids)]
    archive.decide_case(cases[1]["case_id"], "upheld", "ok")

    assert [c["case_id"] for c in archive.list_cases()] == [c["case_id"] for c in cases]
    assert [c["case_id"] for c in archive.list_cases("open")] == [
        cases[0]["case_id"],
        cases[2]["case_id"],
    ]
    assert [c["case_id"] for c in archive.list_cases("closed")] == [cases[1]["case_id"]]


def test_an_archive_of_schema_1_is_migrated_to_let_customers_contest_flagged_decisions(
    backend: Backend, secrets: Secrets, db: Engine, explanation_id: str, archive: Archive
) -> None:
    with db.begin() as conn:  # back to version 1: one open case per explanation
        conn.execute(text("DROP INDEX ux_archive_cases_open_per_opener"))
        conn.execute(
            text(
                "CREATE UNIQUE INDEX ux_archive_cases_one_open ON archive_cases (explanation_id) "
                "WHERE status = 'open'"
            )
        )
        conn.execute(text("DELETE FROM archive_migrations WHERE version = 2"))
    archive.open_case(explanation_id, "score near the threshold", opened_by="system")

    with open_archive(backend.url, secrets) as upgraded:
        upgraded.open_case(explanation_id, "my tenure is wrong", opened_by="customer")
        assert {c["opened_by"] for c in upgraded.list_cases("open")} == {"system", "customer"}
        assert upgraded.verify().ok
    with db.connect() as conn:
        assert conn.scalar(text("SELECT max(version) FROM archive_migrations")) == 2
