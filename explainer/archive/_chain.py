"""Records and the hash chain: preparing entries, appending under the head lock, reading back.

Public record (what ``hash`` covers, plus ``hash``)::

    {"id", "seq", "kind", "created_at", "model": {"name", "version", "sha256"} | null,
     "settings", "subject", "request_id", "details", "payload_sha256", "prev_hash", "hash"}

``subject`` is the HMAC pseudonym of the customer id; ``details`` is the public part of an
event (erasure, case, checkpoint); the payload itself is personal and stored encrypted.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, exists, select

from explainer.exceptions import IntegrityError, ValidationError

from . import _crypto
from ._canonical import (
    GENESIS_HASH,
    canonical_bytes,
    canonical_json,
    normalize,
    record_hash,
    sha256_hex,
)
from ._schema import cases, head, records, subject_keys
from ._secrets import Secrets
from ._types import ArchiveEntry, Kind, Record

#: The data-key row for payloads without a data subject (never matches a pseudonym).
NO_SUBJECT = "-"
_ID = re.compile(r"[0-9A-Za-z_-]{8,64}")


@dataclass(frozen=True)
class Prepared:
    """A record validated and encoded, waiting for its seq, time and hashes."""

    id: str
    kind: Kind
    subject: str | None
    model: dict[str, Any] | None
    settings: dict[str, Any]
    request_id: str | None
    details: dict[str, Any]
    payload: bytes | None  # canonical JSON of the plaintext payload
    #: A "case_opened" event's case: the ``archive_cases`` row it opens, less the fields the
    #: commit fills in (status, opened_at, opened_seq). Inserted in the event's transaction.
    opens_case: dict[str, Any] | None = None

    @property
    def key_subject(self) -> str:
        return self.subject or NO_SUBJECT


def to_iso(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: fixed width, so text order is time order. Naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    return uuid.uuid4().hex


def prepare_entry(entry: ArchiveEntry, secrets: Secrets, where: str) -> Prepared:
    """Validate one ``ArchiveEntry`` (``where`` names it in errors, e.g. ``entries[3]``)."""
    if entry.kind != "explanation":
        raise ValidationError.for_field(
            f"{where}.kind", "append() takes 'explanation'; other kinds come from Archive methods"
        )
    if entry.id is not None and (not isinstance(entry.id, str) or not _ID.fullmatch(entry.id)):
        raise ValidationError.for_field(f"{where}.id", "must be 8-64 characters of [0-9A-Za-z_-]")
    _check_optional_str(entry.customer_id, f"{where}.customer_id")
    _check_optional_str(entry.request_id, f"{where}.request_id")
    for name in ("payload", "settings"):
        if not isinstance(getattr(entry, name), Mapping):
            raise ValidationError.for_field(f"{where}.{name}", "must be a JSON object")
    return Prepared(
        id=entry.id or new_id(),
        kind="explanation",
        subject=None if entry.customer_id is None else secrets.pseudonym(entry.customer_id),
        model=_model(entry, where),
        settings=normalize(dict(entry.settings), f"{where}.settings"),
        request_id=entry.request_id,
        details={},
        payload=canonical_bytes(dict(entry.payload), f"{where}.payload"),
    )


def prepare_event(
    kind: Kind,
    *,
    subject: str | None,
    details: Mapping[str, Any],
    model: dict[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    opens_case: dict[str, Any] | None = None,
) -> Prepared:
    """An event the archive writes itself (erasure, case_opened, review_decision, checkpoint)."""
    return Prepared(
        id=new_id(),
        kind=kind,
        subject=subject,
        model=model,
        settings={},
        request_id=request_id,
        details=normalize(dict(details), "details"),
        payload=None if payload is None else canonical_bytes(dict(payload), "payload"),
        opens_case=opens_case,
    )


def _check_optional_str(value: object, field: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError.for_field(field, "must be a non-empty string or null")


def _model(entry: ArchiveEntry, where: str) -> dict[str, Any] | None:
    if entry.model_name is None:
        if entry.model_version is not None or entry.model_sha256 is not None:
            raise ValidationError.for_field(f"{where}.model_name", "is required with a version")
        return None
    _check_optional_str(entry.model_name, f"{where}.model_name")
    _check_optional_str(entry.model_sha256, f"{where}.model_sha256")
    version = entry.model_version
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ValidationError.for_field(f"{where}.model_version", "must be an integer or null")
    return {"name": entry.model_name, "version": version, "sha256": entry.model_sha256}


# --- writing (inside a write transaction) ---------------------------------------------

# Every explanation runs these: built once, they skip SQLAlchemy's per-call construction
# and cache-key work (a third of the statement's cost).
_LOCK_HEAD = select(head.c.seq, head.c.hash).where(head.c.id == 1).with_for_update()
_MOVE_HEAD = (
    head.update().where(head.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_INSERT_RECORDS = records.insert()
_INSERT_KEYS = subject_keys.insert()
_INSERT_CASES = cases.insert()
_LOAD_KEYS = select(subject_keys.c.subject, subject_keys.c.key).where(
    subject_keys.c.subject.in_(bindparam("subjects", expanding=True))
)


def lock_head(conn: Connection) -> tuple[int, str]:
    """Lock the chain head for this transaction (FOR UPDATE; SQLite holds BEGIN IMMEDIATE)."""
    row = conn.execute(_LOCK_HEAD).one()
    return int(row.seq), str(row.hash)


def append_prepared(
    conn: Connection, head_state: tuple[int, str], items: Sequence[Prepared], now: str
) -> list[Record]:
    """Chain ``items`` after ``head_state`` (locked by the caller), insert them, move the head."""
    if not items:
        return []
    keys = _ensure_keys(conn, payload_subjects(items), now)
    sealed = seal(items, head_state, keys, now)
    conn.execute(_INSERT_RECORDS, sealed.records)
    if sealed.cases:
        conn.execute(_INSERT_CASES, sealed.cases)
    conn.execute(_MOVE_HEAD, sealed.head)
    return sealed.stored


def payload_subjects(items: Iterable[Prepared]) -> set[str]:
    """The data-key subjects whose keys sealing ``items`` needs."""
    return {p.key_subject for p in items if p.payload is not None}


@dataclass(frozen=True)
class Sealed:
    """A batch chained after the head: what to write, and the stored public records."""

    records: list[dict[str, Any]]  # rows of archive_records
    cases: list[dict[str, Any]]  # rows of archive_cases that "case_opened" events open
    head: dict[str, Any]  # the parameters of the head's move
    stored: list[Record]


def seal(
    items: Sequence[Prepared], head_state: tuple[int, str], keys: Mapping[str, bytes], now: str
) -> Sealed:
    """Chain ``items`` (non-empty) after ``head_state``. ``keys`` holds the data key of every
    subject in ``payload_subjects(items)``."""
    seq, prev = head_state
    rows: list[dict[str, Any]] = []
    stored: list[Record] = []
    opened: list[dict[str, Any]] = []
    for item in items:
        seq += 1
        public = _public(item, seq, now, prev)
        sealed = None
        if item.payload is not None:
            sealed = _crypto.encrypt(keys[item.key_subject], item.payload, item.id)
        rows.append(_row(public, sealed))
        stored.append(public)
        if item.opens_case is not None:
            case = {"status": "open", "opened_at": now, "opened_seq": seq}
            opened.append({**item.opens_case, **case})
        prev = public["hash"]
    return Sealed(rows, opened, {"new_seq": seq, "new_hash": prev}, stored)


#: The columns of an ``archive_cases`` row as a "case_opened" event opens it.
OPENED_CASE_COLUMNS = (
    "case_id",
    "explanation_id",
    "opened_by",
    "subject",
    "reason",
    "status",
    "opened_at",
    "opened_seq",
)


def new_keys(subjects: set[str], existing: Mapping[str, bytes], now: str) -> list[dict[str, Any]]:
    """Rows of fresh data keys for the ``subjects`` that have none in ``existing``."""
    return [
        {"subject": s, "key": _crypto.new_data_key(), "created_at": now}
        for s in sorted(subjects - existing.keys())
    ]


def _public(item: Prepared, seq: int, now: str, prev: str) -> Record:
    public: Record = {
        "id": item.id,
        "seq": seq,
        "kind": item.kind,
        "created_at": now,
        "model": item.model,
        "settings": item.settings,
        "subject": item.subject,
        "request_id": item.request_id,
        "details": item.details,
        "payload_sha256": None if item.payload is None else sha256_hex(item.payload),
        "prev_hash": prev,
    }
    public["hash"] = record_hash(public)
    return public


def _row(public: Record, sealed: bytes | None) -> dict[str, Any]:
    model = public["model"] or {}
    return {
        "seq": public["seq"],
        "id": public["id"],
        "kind": public["kind"],
        "created_at": public["created_at"],
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "model_sha256": model.get("sha256"),
        "settings": canonical_json(public["settings"]).decode("utf-8"),
        "subject": public["subject"],
        "request_id": public["request_id"],
        "details": canonical_json(public["details"]).decode("utf-8"),
        "payload_sha256": public["payload_sha256"],
        "payload": sealed,
        "prev_hash": public["prev_hash"],
        "hash": public["hash"],
    }


def _ensure_keys(conn: Connection, subjects: set[str], now: str) -> dict[str, bytes]:
    keys = load_keys(conn, subjects)
    fresh = new_keys(subjects, keys, now)
    if fresh:
        conn.execute(_INSERT_KEYS, fresh)
    return keys | {row["subject"]: row["key"] for row in fresh}


def delete_orphan_keys(conn: Connection) -> None:
    """Drop data keys no stored payload needs any more (after a prune)."""
    used = exists().where(
        records.c.subject == subject_keys.c.subject, records.c.payload.is_not(None)
    )
    conn.execute(delete(subject_keys).where(subject_keys.c.subject != NO_SUBJECT, ~used))


# --- reading -------------------------------------------------------------------------


def load_keys(conn: Connection, subjects: Iterable[str]) -> dict[str, bytes]:
    wanted = sorted(set(subjects))
    if not wanted:
        return {}
    rows = conn.execute(_LOAD_KEYS, {"subjects": wanted})
    return {str(row.subject): bytes(row.key) for row in rows}


def key_subject_of(row: Row[Any]) -> str:
    return str(row.subject) if row.subject is not None else NO_SUBJECT


def public_of(row: Row[Any]) -> Record:
    """The public record a stored row stands for (raises ValueError on unreadable JSON)."""
    model = None
    if row.model_name is not None or row.model_version is not None or row.model_sha256 is not None:
        version = None if row.model_version is None else int(row.model_version)
        model = {"name": row.model_name, "version": version, "sha256": row.model_sha256}
    return {
        "id": row.id,
        "seq": int(row.seq),
        "kind": row.kind,
        "created_at": row.created_at,
        "model": model,
        "settings": json.loads(row.settings),
        "subject": row.subject,
        "request_id": row.request_id,
        "details": json.loads(row.details),
        "payload_sha256": row.payload_sha256,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def payload_problem(row: Row[Any], keys: Mapping[str, bytes]) -> tuple[bytes | None, str | None]:
    """``(plaintext, None)`` when the stored payload is intact, ``(None, reason)`` when not,
    ``(None, None)`` when there is no payload (none written, or erased)."""
    if row.payload is None:
        return None, None
    if row.payload_sha256 is None:
        return None, "a payload is stored but the record has no payload_sha256"
    key = keys.get(key_subject_of(row))
    if key is None:
        return None, "a payload is stored but its subject's data key is gone"
    plain = _crypto.decrypt(key, bytes(row.payload), str(row.id))
    if plain is None:
        return None, "the payload does not decrypt: ciphertext, data key or id was altered"
    if sha256_hex(plain) != row.payload_sha256:
        return None, "the payload does not match payload_sha256"
    return plain, None


def read_record(row: Row[Any], keys: Mapping[str, bytes]) -> Record:
    """Public fields + ``payload`` (None when erased or absent) + ``erased``; the row's hash
    and payload are checked first (IntegrityError names the record)."""
    try:
        public = public_of(row)
    except ValueError as exc:
        raise IntegrityError(f"archive record {row.id} (seq {row.seq}) is unreadable") from exc
    if record_hash(public) != public["hash"]:
        raise IntegrityError(f"archive record {row.id} (seq {row.seq}) failed its hash check")
    plain, problem = payload_problem(row, keys)
    if problem is not None:
        raise IntegrityError(f"archive record {row.id} (seq {row.seq}): {problem}")
    public["payload"] = None if plain is None else json.loads(plain)
    public["erased"] = row.payload is None and row.payload_sha256 is not None
    return public


def latest_anchor(conn: Connection) -> tuple[int, str] | None:
    """``(seq, hash)`` of the last pruned record per the newest checkpoint; ``(0, GENESIS)``
    without one; None when the newest checkpoint is unreadable (verify names it)."""
    details = conn.scalar(
        select(records.c.details)
        .where(records.c.kind == "checkpoint")
        .order_by(records.c.seq.desc())
        .limit(1)
    )
    if details is None:
        return 0, GENESIS_HASH
    try:
        parsed = json.loads(details)
        return int(parsed["pruned_through_seq"]), str(parsed["pruned_through_hash"])
    except (ValueError, KeyError, TypeError):
        return None
