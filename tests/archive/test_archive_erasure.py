"""Erasure by crypto-shredding: the subject's payloads become unreadable, the chain verifies."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from explainer.archive import Archive, Secrets, open_archive, verify_bundle
from explainer.exceptions import ValidationError

from .conftest import Backend, FakeClock, explanation_entry

SUBJECT = "C-ERASE-ME-4711"
SECRET_INPUT = "Quuxville-9931"  # an input only this customer has


@pytest.fixture(scope="module")
def erased(module_backend: Backend) -> Iterator[tuple[Archive, list[str], int]]:
    """One erasure per backend for the tests that only look at its outcome."""
    with open_archive(module_backend.url, Secrets.generate(), clock=FakeClock()) as archive:
        yield erase_one_subject(archive)


def erase_one_subject(archive: Archive) -> tuple[Archive, list[str], int]:
    mine = [
        archive.append([explanation_entry(SUBJECT, inputs={"city": SECRET_INPUT, "tenure": 11})])[0]
        for _ in range(3)
    ]
    archive.append([explanation_entry("C-OTHER", inputs={"city": "Elsewhere"})])
    archive.open_case(mine[0]["id"], f"I am {SUBJECT} from {SECRET_INPUT}")
    count = archive.erase_subject(SUBJECT)
    return archive, [r["id"] for r in mine], count


def test_erasure_counts_the_records_erased(erased: tuple[Archive, list[str], int]) -> None:
    _, _, count = erased
    assert count == 4  # three explanations and the case_opened event (its reason)


def test_the_archive_still_verifies_after_an_erasure(
    erased: tuple[Archive, list[str], int],
) -> None:
    archive, _, _ = erased
    report = archive.verify()
    assert report.ok, report.first_bad


def test_erased_records_keep_their_public_fields_but_lose_the_payload(
    erased: tuple[Archive, list[str], int],
) -> None:
    archive, ids, _ = erased
    for record_id in ids:
        record = archive.get(record_id)
        assert record["erased"] is True and record["payload"] is None
        assert record["payload_sha256"] is not None  # the chain still covers the digest
    [other] = archive.list(customer_id="C-OTHER")[0]
    assert other["erased"] is False and other["payload"]["customer_id"] == "C-OTHER"


def test_an_erasure_event_names_the_pseudonym_and_count_only(
    erased: tuple[Archive, list[str], int],
) -> None:
    archive, _, _ = erased
    [event] = archive.list(kind="erasure")[0]
    pseudonym = archive.pseudonym(SUBJECT)
    assert event["details"] == {"subject": pseudonym, "erased": 4}
    assert event["subject"] == pseudonym and event["payload"] is None
    assert SUBJECT not in repr(event)


def test_the_subjects_case_texts_are_blanked(erased: tuple[Archive, list[str], int]) -> None:
    archive, _, _ = erased
    [case] = archive.list_cases()
    assert case["reason"] is None and case["status"] == "open"


def test_an_export_after_erasure_holds_neither_the_id_nor_the_inputs(
    erased: tuple[Archive, list[str], int],
) -> None:
    archive, _, _ = erased
    out = io.BytesIO()
    archive.export_bundle(out)
    bundle = out.getvalue()

    with zipfile.ZipFile(io.BytesIO(bundle)) as zipped:
        contents = [zipped.read(name) for name in zipped.namelist()]
    for blob in [bundle, *contents]:
        assert SUBJECT.encode() not in blob
        assert SECRET_INPUT.encode() not in blob
    assert any(b"C-OTHER" in blob for blob in contents)  # others are still there
    assert verify_bundle(io.BytesIO(bundle)).ok


def test_the_shredded_data_key_is_gone_from_the_database_file(
    archive: Archive, backend: Backend, db: Engine
) -> None:
    archive.append([explanation_entry(SUBJECT)])
    subject = archive.pseudonym(SUBJECT)
    with db.connect() as conn:
        key = conn.execute(
            text("SELECT key FROM archive_subject_keys WHERE subject = :s"), {"s": subject}
        ).scalar_one()
    db.dispose()
    files = (
        []
        if backend.path is None
        else [backend.path, backend.path.with_name(backend.path.name + "-wal")]
    )
    assert not files or any(bytes(key) in p.read_bytes() for p in files if p.exists())

    archive.erase_subject(SUBJECT)

    with db.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM archive_subject_keys WHERE subject = :s"), {"s": subject}
        ).scalar_one()
    assert left == 0
    db.dispose()
    if files:  # SQLite: secure_delete and a truncated WAL
        assert all(bytes(key) not in p.read_bytes() for p in files if p.exists())


def test_erasing_an_unknown_customer_erases_nothing_but_is_archived(archive: Archive) -> None:
    archive.append([explanation_entry("C-1")])
    assert archive.erase_subject("C-NOBODY") == 0
    assert [e["details"]["erased"] for e in archive.list(kind="erasure")[0]] == [0]
    assert archive.verify().ok


def test_a_customer_can_be_served_again_after_erasure(archive: Archive) -> None:
    archive.append([explanation_entry(SUBJECT)])
    archive.erase_subject(SUBJECT)

    [again] = archive.append([explanation_entry(SUBJECT)])

    assert archive.get(again["id"])["payload"]["customer_id"] == SUBJECT
    assert archive.verify().ok
    assert archive.erase_subject(SUBJECT) == 1
    assert archive.verify().ok


def test_erasure_needs_a_customer_id(archive: Archive) -> None:
    with pytest.raises(ValidationError):
        archive.erase_subject("")
