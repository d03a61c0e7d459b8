"""verify(): any row edited, removed or re-linked in the database is caught and named."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, delete, or_, select, text

from explainer.archive import Archive, Secrets, open_archive
from explainer.archive._canonical import record_hash
from explainer.archive._schema import records
from explainer.exceptions import IntegrityError

from .conftest import Backend, FakeClock, explanation_entry

#: Direct edits of one row, column by column: (SET clause, parameters).
EDITS: dict[str, tuple[str, dict[str, Any]]] = {
    "id": ("id = :v", {"v": "f" * 32}),
    "kind": ("kind = :v", {"v": "checkpoint"}),
    "created_at": ("created_at = :v", {"v": "2020-01-01T00:00:00.000000Z"}),
    "model_name": ("model_name = :v", {"v": "lead_score"}),
    "model_version": ("model_version = :v", {"v": 9}),
    "model_sha256": ("model_sha256 = :v", {"v": "e" * 64}),
    "settings": ("settings = :v", {"v": '{"method":"lime","seed":0}'}),
    "subject": ("subject = :v", {"v": "d" * 64}),
    "request_id": ("request_id = :v", {"v": "req-forged"}),
    "details": ("details = :v", {"v": '{"note":"forged"}'}),
    "payload_sha256": ("payload_sha256 = :v", {"v": "c" * 64}),
    "payload": ("payload = :v", {"v": b"\x00" * 60}),
    "prev_hash": ("prev_hash = :v", {"v": "b" * 64}),
    "hash": ("hash = :v", {"v": "a" * 64}),
    "seq": ("seq = :v", {"v": 999}),
}


def filled(archive: Archive, count: int = 6) -> list[dict[str, Any]]:
    return archive.append([explanation_entry(f"C-{i}") for i in range(count)])


def execute(db: Engine, sql: str, **params: Any) -> None:
    with db.begin() as conn:
        conn.execute(text(sql), params)


def test_an_untouched_archive_verifies(archive: Archive) -> None:
    stored = filled(archive)

    report = archive.verify()

    assert report.ok and report.first_bad is None
    assert report.records == len(stored)
    assert report.head == stored[-1]["hash"]
    assert report.to_dict() == {
        "ok": True,
        "records": 6,
        "head": stored[-1]["hash"],
        "first_bad": None,
    }


def test_an_empty_archive_verifies(archive: Archive) -> None:
    assert archive.verify().ok
    assert archive.verify().records == 0


@pytest.fixture(scope="module")
def shared(module_backend: Backend) -> Iterator[tuple[Archive, Engine, list[dict[str, Any]]]]:
    """One filled archive per backend; each edit below is undone after its test."""
    with open_archive(module_backend.url, Secrets.generate(), clock=FakeClock()) as archive:
        stored = filled(archive)
        db = module_backend.engine()
        yield archive, db, stored
        db.dispose()


@contextmanager
def row_edited(
    db: Engine, record: dict[str, Any], assignment: str, **params: Any
) -> Iterator[None]:
    """Edit one row with SQL, and put the original row back afterwards."""
    with db.connect() as conn:
        original = dict(
            conn.execute(select(records).where(records.c.id == record["id"])).one()._mapping
        )
    execute(
        db, f"UPDATE archive_records SET {assignment} WHERE id = :id", id=record["id"], **params
    )
    try:
        yield
    finally:
        with db.begin() as conn:  # one column changed: the row still has its seq or its id
            conn.execute(
                delete(records).where(
                    or_(records.c.seq == original["seq"], records.c.id == original["id"])
                )
            )
            conn.execute(records.insert().values(**original))


@pytest.mark.parametrize("column", sorted(EDITS))
def test_a_row_edited_in_the_database_is_caught_and_named(
    shared: tuple[Archive, Engine, list[dict[str, Any]]], column: str
) -> None:
    archive, db, stored = shared
    victim = stored[3]
    assignment, params = EDITS[column]

    with row_edited(db, victim, assignment, **params):
        report = archive.verify()

    assert not report.ok
    assert report.first_bad is not None
    expected_id = "f" * 32 if column == "id" else victim["id"]
    assert report.first_bad["id"] == expected_id, report.first_bad
    if column != "seq":
        assert report.first_bad["seq"] == victim["seq"]
    assert archive.verify().ok  # the edit was undone


def test_an_edited_row_is_refused_on_read_too(archive: Archive, db: Engine) -> None:
    victim = filled(archive)[2]
    execute(db, "UPDATE archive_records SET request_id = 'x' WHERE id = :id", id=victim["id"])

    with pytest.raises(IntegrityError, match=victim["id"]):
        archive.get(victim["id"])


def test_a_deleted_row_is_caught_where_the_chain_breaks(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    execute(db, "DELETE FROM archive_records WHERE id = :id", id=stored[2]["id"])

    first_bad = archive.verify().first_bad

    assert first_bad is not None
    assert (first_bad["seq"], first_bad["id"]) == (stored[3]["seq"], stored[3]["id"])
    assert "expected seq 3" in first_bad["reason"]


def test_deleted_newest_rows_are_caught_by_the_head(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    execute(db, "DELETE FROM archive_records WHERE seq >= 5")

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["seq"] == stored[-1]["seq"]
    assert "head" in first_bad["reason"]


def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(
    archive: Archive, db: Engine
) -> None:
    stored = filled(archive)
    forged = {**stored[2], "request_id": "forged"}

    execute(
        db,
        "UPDATE archive_records SET request_id = 'forged', hash = :h WHERE id = :id",
        h=record_hash(forged),
        id=stored[2]["id"],
    )

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == stored[3]["id"]
    assert "prev_hash" in first_bad["reason"]


def test_a_shredded_key_without_an_erasure_is_caught(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    execute(db, "DELETE FROM archive_subject_keys WHERE subject = :s", s=stored[4]["subject"])

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == stored[4]["id"]
    assert "data key is gone" in first_bad["reason"]


def test_a_payload_removed_without_an_erasure_is_caught(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    execute(db, "UPDATE archive_records SET payload = NULL WHERE id = :id", id=stored[1]["id"])

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == stored[1]["id"]
    assert "never erased" in first_bad["reason"]


def test_an_edited_data_key_is_caught(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    execute(
        db,
        "UPDATE archive_subject_keys SET key = :k WHERE subject = :s",
        k=b"\x01" * 32,
        s=stored[0]["subject"],
    )

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == stored[0]["id"]
    assert "does not decrypt" in first_bad["reason"]


def test_the_first_bad_record_is_the_earliest_edited_one(archive: Archive, db: Engine) -> None:
    stored = filled(archive)
    for victim in (stored[4], stored[1]):
        execute(db, "UPDATE archive_records SET kind = 'erasure' WHERE id = :id", id=victim["id"])

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == stored[1]["id"]
