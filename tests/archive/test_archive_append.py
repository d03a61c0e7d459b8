"""Appending, listing and reading records back."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from explainer.archive import Archive, ArchiveEntry
from explainer.exceptions import Conflict, NotFound, ValidationError

from .conftest import Backend, explanation_entry

PUBLIC_FIELDS = {
    "id",
    "seq",
    "kind",
    "created_at",
    "model",
    "settings",
    "subject",
    "request_id",
    "details",
    "payload_sha256",
    "prev_hash",
    "hash",
}


def test_append_returns_the_stored_public_records_in_order(archive: Archive) -> None:
    entries = [explanation_entry(f"C-{i}") for i in range(3)]

    stored = archive.append(entries)

    assert [r["id"] for r in stored] == [e.id for e in entries]
    assert [r["seq"] for r in stored] == [1, 2, 3]
    assert all(set(r) == PUBLIC_FIELDS for r in stored)
    assert stored[0]["prev_hash"] == "0" * 64
    assert [r["prev_hash"] for r in stored[1:]] == [r["hash"] for r in stored[:-1]]
    assert stored[0]["model"] == {"name": "churn", "version": 1, "sha256": entries[0].model_sha256}
    assert stored[0]["subject"] == archive.pseudonym("C-0") != "C-0"
    assert stored[0]["created_at"].endswith("Z")


def test_every_appended_record_is_listed_and_gettable(archive: Archive) -> None:
    stored = [r for i in range(7) for r in archive.append([explanation_entry(f"C-{i % 3}")])]

    items, cursor = archive.list(limit=100)

    assert cursor is None
    assert [item["id"] for item in items] == [r["id"] for r in stored]
    for record in stored:
        got = archive.get(record["id"])
        assert {k: got[k] for k in PUBLIC_FIELDS} == record
        assert got["erased"] is False
        assert got["payload"]["id"] == record["id"]


def test_get_returns_the_payload_exactly_as_appended(archive: Archive) -> None:
    entry = explanation_entry("C-7", inputs={"tenure": 3, "monthly": 70.35, "note": "ünïcödé"})

    [record] = archive.append([entry])

    assert archive.get(record["id"])["payload"] == entry.payload


def test_get_of_an_unknown_id_raises_not_found(archive: Archive) -> None:
    with pytest.raises(NotFound, match="no-such-record"):
        archive.get("no-such-record")


def test_an_entry_without_a_customer_or_model_is_archived_too(archive: Archive) -> None:
    [record] = archive.append([ArchiveEntry(payload={"score": 0.5})])

    assert record["subject"] is None and record["model"] is None
    assert archive.get(record["id"])["payload"] == {"score": 0.5}
    assert archive.verify().ok


def test_an_id_already_archived_is_a_conflict_and_stores_nothing(archive: Archive) -> None:
    [first] = archive.append([explanation_entry()])

    with pytest.raises(Conflict, match=first["id"]):
        archive.append([explanation_entry(entry_id=first["id"])])
    assert archive.list()[0] == [archive.get(first["id"])]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (ArchiveEntry(payload={"score": math.nan}), "entries[0].payload"),
        (ArchiveEntry(payload={"x": object()}), "entries[0].payload"),
        (ArchiveEntry(payload={}, settings={"seed": math.inf}), "entries[0].settings"),
        (ArchiveEntry(payload={}, id="bad id!"), "entries[0].id"),
        (ArchiveEntry(payload={}, settings=[("seed", 1)]), "entries[0].settings"),  # type: ignore[arg-type]
        (ArchiveEntry(payload={}, customer_id=""), "entries[0].customer_id"),
        (ArchiveEntry(payload={}, kind="erasure"), "entries[0].kind"),  # type: ignore[arg-type]
        (
            ArchiveEntry(payload={}, model_name="churn", model_version="3"),  # type: ignore[arg-type]
            "entries[0].model_version",
        ),
    ],
)
def test_a_bad_entry_is_refused_by_field_and_nothing_is_stored(
    archive: Archive, entry: ArchiveEntry, field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        archive.append([entry])

    assert [e.field for e in raised.value.errors] == [field]
    assert archive.list() == ([], None)


def test_listing_filters_by_model_customer_kind_and_time(archive: Archive) -> None:
    early = archive.append([explanation_entry("C-1", model="churn")])[0]
    middle = archive.append([explanation_entry("C-2", model="lead_score")])[0]
    late = archive.append([explanation_entry("C-1", model="lead_score")])[0]

    def ids(**filters: object) -> list[str]:
        return [item["id"] for item in archive.list(**filters)[0]]  # type: ignore[arg-type]

    assert ids(model="lead_score") == [middle["id"], late["id"]]
    assert ids(customer_id="C-1") == [early["id"], late["id"]]
    assert ids(customer_id="C-unknown") == []
    assert ids(kind="explanation") == [early["id"], middle["id"], late["id"]]
    assert ids(kind="erasure") == []
    at = datetime.fromisoformat(middle["created_at"])
    assert ids(since=at) == [middle["id"], late["id"]]  # since is inclusive
    assert ids(until=at) == [early["id"]]  # until is exclusive
    assert ids(since=at.replace(tzinfo=None), until=at) == []  # naive means UTC


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(min_value=1, max_value=12))
def test_pages_walk_every_record_once_in_archive_order(archive: Archive, limit: int) -> None:
    if not archive.list()[0]:
        archive.append([explanation_entry(f"C-{i % 4}") for i in range(11)])
    everything = archive.list(limit=1000)[0]

    seen, cursor = [], None
    while True:
        page, cursor = archive.list(limit=limit, cursor=cursor)
        assert len(page) <= limit
        seen.extend(page)
        if cursor is None:
            break

    assert seen == everything
    assert [r["seq"] for r in seen] == sorted(r["seq"] for r in seen)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"kind": "nonsense"}, "kind"),
        ({"since": "2024-01-01"}, "since"),
    ],
)
def test_a_bad_listing_argument_is_refused_by_field(
    archive: Archive, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        archive.list(**kwargs)  # type: ignore[arg-type]
    assert raised.value.errors[0].field == field


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    customer=st.text(min_size=1, max_size=12),
)
def test_any_json_payload_round_trips_and_the_chain_stays_valid(
    archive: Archive, payload: dict[str, object], customer: str
) -> None:
    [record] = archive.append([ArchiveEntry(payload=payload, customer_id=customer)])

    assert archive.get(record["id"])["payload"] == payload
    assert archive.verify().ok


def test_the_raw_customer_id_and_inputs_are_never_stored_in_clear(
    archive: Archive, backend: Backend, db: Engine
) -> None:
    archive.append([explanation_entry("C-CLEARTEXT-1", inputs={"city": "Zzyzx-Springs"})])

    with db.connect() as conn:
        dumped = " ".join(
            repr(tuple(row))
            for table in ("archive_records", "archive_subject_keys", "archive_head")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        )
    assert "C-CLEARTEXT-1" not in dumped and "Zzyzx" not in dumped
    if backend.path is not None:
        archive.close()  # checkpoint the WAL into the file
        raw = backend.path.read_bytes()
        assert b"C-CLEARTEXT-1" not in raw and b"Zzyzx" not in raw


def test_times_are_utc_with_a_fixed_width(archive: Archive) -> None:
    [record] = archive.append([explanation_entry()])
    assert datetime.fromisoformat(record["created_at"]).tzinfo == UTC
    assert len(record["created_at"]) == len("2024-01-01T00:00:01.000000Z")
