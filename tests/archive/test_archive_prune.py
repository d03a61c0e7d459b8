"""Retention: pruning old records keeps the rest verifiable through a checkpoint record."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from explainer.archive import Archive, verify_bundle
from explainer.exceptions import NotFound

from .conftest import explanation_entry


def created(record: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(record["created_at"]))


@pytest.fixture
def history(archive: Archive) -> list[dict[str, object]]:
    """Ten records, one second apart (the fake clock ticks once per commit)."""
    return [archive.append([explanation_entry(f"C-{i % 3}")])[0] for i in range(10)]


def test_prune_deletes_the_older_records_and_writes_a_checkpoint(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    pruned = archive.prune(before=created(history[4]))

    assert pruned == 4
    for record in history[:4]:
        with pytest.raises(NotFound):
            archive.get(str(record["id"]))
    [checkpoint] = archive.list(kind="checkpoint")[0]
    assert checkpoint["details"] == {
        "pruned_through_seq": 4,
        "pruned_through_hash": history[3]["hash"],
        "pruned": 4,
        "before": history[4]["created_at"],
    }
    assert checkpoint["seq"] == 11
    items = archive.list(limit=100)[0]
    assert [r["seq"] for r in items] == [*range(5, 11), 11]


def test_the_archive_verifies_from_the_checkpoint(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    archive.prune(before=created(history[4]))
    archive.append([explanation_entry("C-after")])

    report = archive.verify()

    assert report.ok, report.first_bad
    assert report.records == 6 + 1 + 1


def test_pruning_again_moves_the_checkpoint(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    archive.prune(before=created(history[2]))
    assert archive.prune(before=created(history[7])) == 5
    assert archive.prune(before=created(history[7])) == 0  # nothing older is left

    assert archive.verify().ok
    assert [c["details"]["pruned_through_seq"] for c in archive.list(kind="checkpoint")[0]] == [
        2,
        7,
    ]


def test_pruning_everything_leaves_a_verifiable_checkpoint(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    assert archive.prune(before=created(history[-1]) + timedelta(days=1)) == 10
    assert archive.verify().ok and archive.verify().records == 1


def test_pruning_before_the_first_record_does_nothing(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    assert archive.prune(before=created(history[0])) == 0
    assert archive.list(kind="checkpoint")[0] == []


def test_a_record_deleted_after_a_prune_is_still_caught(
    archive: Archive, history: list[dict[str, object]], db: Engine
) -> None:
    archive.prune(before=created(history[4]))
    with db.begin() as conn:
        conn.execute(text("DELETE FROM archive_records WHERE seq = 5"))

    first_bad = archive.verify().first_bad

    assert first_bad is not None and first_bad["id"] == history[5]["id"]


def test_an_export_after_a_prune_verifies(
    archive: Archive, history: list[dict[str, object]]
) -> None:
    archive.prune(before=created(history[4]))
    out = io.BytesIO()
    manifest = archive.export_bundle(out)
    assert manifest["first_seq"] == 5
    assert verify_bundle(io.BytesIO(out.getvalue())).ok


def test_pruning_drops_data_keys_no_payload_needs(
    archive: Archive, history: list[dict[str, object]], db: Engine
) -> None:
    archive.append([explanation_entry("C-late")])
    archive.prune(before=created(history[-1]) + timedelta(seconds=0.5))

    with db.connect() as conn:
        subjects = set(conn.execute(text("SELECT subject FROM archive_subject_keys")).scalars())
    assert subjects == {archive.pseudonym("C-late")}
