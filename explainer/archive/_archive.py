"""The Archive: the one object the service talks to. Thread-safe; one per process."""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, select, update

from explainer.exceptions import (
    Conflict,
    ExplainerError,
    NotFound,
    Unavailable,
    ValidationError,
)
from explainer.group_runner import GroupRunner

from . import _cases, _retention
from ._append import Appender
from ._bundle import write_bundle
from ._chain import (
    Prepared,
    append_prepared,
    key_subject_of,
    load_keys,
    lock_head,
    prepare_entry,
    read_record,
    to_iso,
)
from ._db import DuplicateKey, create_archive_engine, is_postgres, transaction
from ._schema import head, migrate, records
from ._secrets import Secrets
from ._types import (
    CASE_STATUSES,
    DECISIONS,
    KINDS,
    OPENED_BY,
    ArchiveEntry,
    ArchiveStats,
    CaseStatus,
    Decision,
    OpenedBy,
    Record,
    VerifyReport,
)
from ._verify import verify_archive

Clock = Callable[[], datetime]
MAX_BATCH = 500
MAX_PAGE = 1000
MAX_TEXT = 5000
_CURSOR_PREFIX = "s1:"


def open_archive(
    url: str, secrets: Secrets, *, timeout: float = 10.0, clock: Clock | None = None
) -> Archive:
    """Open (and create or migrate) the archive at a SQLAlchemy ``url``.

    ``sqlite:///PATH`` (WAL mode) or ``postgresql+psycopg://USER@HOST/DB`` (shared by workers
    and replicas; put ``?options=-csearch_path%3DSCHEMA`` in the URL to use a schema).
    ``timeout`` (seconds) bounds waiting for a connection or a lock; an append still queued
    behind other commits after ``3 * timeout + 5`` s gives up (nothing written). Raises
    Unavailable when the database cannot be reached or written, IntegrityError when it was
    created with other secrets.
    """
    if timeout <= 0:
        raise ValidationError.for_field("timeout", "must be positive")
    engine = create_archive_engine(url, timeout)
    tick = clock or _utc_now
    try:
        migrate(engine, now=to_iso(tick()), key_check=secrets.key_check())
    except ExplainerError:
        engine.dispose()
        raise
    return Archive(engine, secrets, timeout=timeout, clock=tick)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Archive:
    """The tamper-evident archive of explanations and oversight events.

    Build it with ``open_archive``. Every method is thread-safe. Appends from many threads
    are group-committed (``GroupRunner``: one caller commits the batch of those waiting); other
    writes (erasure, cases, prune) run in the calling thread; all of them serialise on the
    chain head, across processes too.
    """

    def __init__(self, engine: Engine, secrets: Secrets, *, timeout: float, clock: Clock) -> None:
        self._engine = engine
        self._secrets = secrets
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._writer: GroupRunner[Sequence[Prepared], builtins.list[Record]] | None = None
        self._appender: Appender | None = None
        self._closed = False
        _live.add(self)

    # --- properties ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def public_key_fingerprint(self) -> str:
        """What ``verify_bundle(..., expected_public_key=...)`` should be given."""
        return self._secrets.public_key_fingerprint()

    @property
    def stats(self) -> ArchiveStats:
        writer = self._writer
        return ArchiveStats(writer.items_done, writer.batches_run) if writer else ArchiveStats(0, 0)

    def writable(self) -> bool:
        """True when the archive takes writes now (for /readyz): locks the chain head and
        touches it in a transaction that is rolled back."""
        try:
            with self._write() as conn:
                lock_head(conn)
                conn.execute(update(head).where(head.c.id == 1).values(seq=head.c.seq))
                conn.rollback()
        except Unavailable:
            return False
        return True

    def pseudonym(self, customer_id: str) -> str:
        """The pseudonym records carry in ``subject`` for ``customer_id``."""
        return self._secrets.pseudonym(customer_id)

    # --- appending ----------------------------------------------------------------------

    def append(self, entries: Sequence[ArchiveEntry]) -> builtins.list[Record]:
        """Archive ``entries``; returns their stored public records (id, seq, hash, ...)
        once committed, each entry's record followed by its "case_opened" event when it has
        a ``review_reason`` (the case is opened in the same transaction). Raises
        ValidationError for a bad entry (nothing stored), Conflict for an id already
        archived, Unavailable when the archive cannot be written."""
        prepared = [
            item
            for i, entry in enumerate(entries)
            for item in self._prepare(entry, f"entries[{i}]")
        ]
        ids = [p.id for p in prepared if p.kind == "explanation"]
        if len(set(ids)) != len(ids):
            raise ValidationError.for_field("entries", "two entries have the same id")
        if not prepared:
            return []
        return self._get_writer().submit(prepared)

    def _prepare(self, entry: ArchiveEntry, where: str) -> builtins.list[Prepared]:
        explanation = prepare_entry(entry, self._secrets, where)
        if entry.review_reason is None:
            return [explanation]
        _require_text(entry.review_reason, f"{where}.review_reason")
        opened = _cases.case_opened(
            explanation_id=explanation.id,
            subject=explanation.subject,
            model=explanation.model,
            reason=entry.review_reason,
            opened_by="system",
            request_id=entry.request_id,
        )
        return [explanation, opened]

    def _get_writer(self) -> GroupRunner[Sequence[Prepared], builtins.list[Record]]:
        with self._lock:
            if self._closed:
                raise Unavailable("the archive is closed")
            if self._writer is None:  # made lazily: in the process that appends
                self._appender = Appender(self._engine)
                self._writer = GroupRunner(
                    functools.partial(self._commit_batch, self._appender),
                    max_batch=MAX_BATCH,
                    wait_timeout=3 * self._timeout + 5,
                    name="the archive",
                    work="write",
                )
            return self._writer

    def _commit_batch(
        self, appender: Appender, groups: builtins.list[Sequence[Prepared]]
    ) -> builtins.list[builtins.list[Record] | ExplainerError]:
        """Commit every group in one transaction. Ids are fresh by construction, so the
        records' primary key is the check; only when it fires is the batch committed again
        with each id looked up first, so that only the groups with a taken id fail."""
        try:
            items = [p for group in groups for p in group]
            stored = iter(appender.append(items, self._now()))
        except DuplicateKey:
            try:
                return self._commit_batch_checked(groups)
            except DuplicateKey as exc:  # not an id: the chain is out of step (a seq is taken)
                raise Unavailable(f"the archive cannot be written: {exc.message}") from exc
        return [[next(stored) for _ in group] for group in groups]

    def _commit_batch_checked(
        self, groups: builtins.list[Sequence[Prepared]]
    ) -> builtins.list[builtins.list[Record] | ExplainerError]:
        outcomes: builtins.list[builtins.list[Record] | ExplainerError] = []
        accepted: builtins.list[Prepared] = []
        # not self._write(): a batch drained by close() is committed all the same
        with transaction(self._engine, write=True) as conn:
            head_state = lock_head(conn)
            taken = self._existing_ids(conn, [p.id for group in groups for p in group])
            for group in groups:
                clash = next((p.id for p in group if p.id in taken), None)
                if clash is not None:
                    outcomes.append(Conflict(f"an archive record with id {clash} already exists"))
                    continue
                taken.update(p.id for p in group)
                accepted.extend(group)
                outcomes.append([])
            stored = iter(append_prepared(conn, head_state, accepted, self._now()))
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, builtins.list):
                outcome.extend(next(stored) for _ in group)
        return outcomes

    @staticmethod
    def _existing_ids(conn: Connection, ids: builtins.list[str]) -> set[str]:
        found = conn.scalars(select(records.c.id).where(records.c.id.in_(ids)))
        return {str(record_id) for record_id in found}

    # --- reading ------------------------------------------------------------------------

    def get(self, record_id: str) -> Record:
        """One record: public fields, ``payload`` (decrypted; None when erased or absent) and
        ``erased``. NotFound for an unknown id; IntegrityError when the row fails its checks."""
        with self._read() as conn:
            row = conn.execute(select(records).where(records.c.id == record_id)).one_or_none()
            if row is None:
                raise NotFound(f"archive record {record_id} not found")
            return self._decrypt_rows(conn, [row])[0]

    def _decrypt_rows(self, conn: Connection, rows: Sequence[Row[Any]]) -> builtins.list[Record]:
        keys = load_keys(conn, {key_subject_of(row) for row in rows if row.payload is not None})
        return [read_record(row, keys) for row in rows]

    def verify(self) -> VerifyReport:
        """Recompute every hash and link and check every stored payload (one snapshot)."""
        with self._read() as conn:
            return verify_archive(conn)

    def export_bundle(
        self,
        out: IO[bytes],
        *,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model_cards: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Write the signed audit zip of the matching records to ``out``; returns the manifest.
        ``model_cards`` maps ``"name@version"`` to a card, written as
        ``model_cards/name@version.json``. IntegrityError if a matching record is damaged."""
        conditions = self._filters(model=model, since=since, until=until)
        filter_desc = {
            "model": model,
            "since": None if since is None else to_iso(since),
            "until": None if until is None else to_iso(until),
        }
        with self._read() as conn:
            return write_bundle(
                conn,
                out,
                secrets=self._secrets,
                conditions=conditions,
                filter_desc=filter_desc,
                model_cards=model_cards or {},
                now=self._now(),
            )

    # --- data subjects, retention --------------------------------------------------------

    def erase_subject(self, customer_id: str) -> int:
        """Crypto-shred a data subject: delete its data key and payload ciphertexts, blank its
        case texts, and archive an "erasure" event (pseudonym and count, never the raw id).
        The chain covers digests only, so it still verifies. Returns the records erased."""
        _require_text(customer_id, "customer_id")
        subject = self._secrets.pseudonym(customer_id)
        with self._write() as conn:
            erased = _retention.erase_subject(conn, lock_head(conn), subject, self._now())
        self._flush_sqlite_wal()
        return erased

    def _flush_sqlite_wal(self) -> None:
        """Best effort: move SQLite's WAL into the (secure-deleted) file and truncate it,
        so shredded keys do not linger in old WAL frames."""
        if is_postgres(self._engine):
            return
        with contextlib.suppress(sqlite3.Error):
            raw = self._engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def prune(self, before: datetime) -> int:
        """Delete the oldest records, those created before ``before`` (the longest prefix of
        the chain older than it), and archive a "checkpoint" event carrying the seq and hash
        of the last one deleted; verify() then starts from it. Returns the records deleted."""
        if not isinstance(before, datetime):
            raise ValidationError.for_field("before", "must be a datetime (naive means UTC)")
        cutoff = to_iso(before)
        with self._write() as conn:
            return _retention.prune(conn, lock_head(conn), cutoff, self._now())

    # --- contest and review ----------------------------------------------------------------

    def open_case(
        self,
        explanation_id: str,
        reason: str,
        *,
        opened_by: OpenedBy = "customer",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Open a review case on an archived explanation (a customer's contest, or the
        system flagging it) and archive a "case_opened" event. NotFound for an unknown
        explanation; Conflict when it already has an open case."""
        _require_text(reason, "reason")
        if opened_by not in OPENED_BY:
            raise ValidationError.for_field("opened_by", f"must be one of {', '.join(OPENED_BY)}")
        with self._write() as conn:
            return _cases.open_case(
                conn,
                lock_head(conn),
                explanation_id=explanation_id,
                reason=reason,
                opened_by=opened_by,
                request_id=request_id,
                now=self._now(),
            )

    def decide_case(
        self, case_id: str, decision: Decision, note: str, *, decided_by: str | None = None
    ) -> dict[str, Any]:
        """Close an open case with a reviewer's decision; archives a "review_decision"
        event. NotFound for an unknown case; Conflict when it was already decided."""
        if decision not in DECISIONS:
            raise ValidationError.for_field("decision", f"must be one of {', '.join(DECISIONS)}")
        if not isinstance(note, str) or len(note) > MAX_TEXT:
            raise ValidationError.for_field(
                "note", f"must be a string of at most {MAX_TEXT} characters"
            )
        with self._write() as conn:
            return _cases.decide_case(
                conn,
                lock_head(conn),
                case_id=case_id,
                decision=decision,
                note=note,
                decided_by=decided_by,
                now=self._now(),
            )

    def get_case(self, case_id: str) -> dict[str, Any]:
        """One review case; NotFound for an unknown id."""
        with self._read() as conn:
            return _cases.get_case(conn, case_id)

    def list_cases(self, status: CaseStatus | None = None) -> builtins.list[dict[str, Any]]:
        """Review cases, oldest first; ``status`` "open" or "closed" filters."""
        if status is not None and status not in CASE_STATUSES:
            raise ValidationError.for_field("status", f"must be one of {', '.join(CASE_STATUSES)}")
        with self._read() as conn:
            return _cases.list_cases(conn, status)

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections. Idempotent."""
        with self._lock:
            self._closed = True
            writer = self._writer
        if writer is not None:
            writer.close()
        if self._appender is not None:
            self._appender.close()
        self._engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's writer state and connections are not ours."""
        self._lock = threading.Lock()
        self._writer = None
        if self._appender is not None:
            self._appender.abandon()
            self._appender = None
        self._engine.dispose(close=False)

    # --- helpers ------------------------------------------------------------------------

    def _now(self) -> str:
        return to_iso(self._clock())

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._closed:
            raise Unavailable("the archive is closed")
        if self._appender is not None:
            self._appender.check_durable()
        with transaction(self._engine, write=True) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        if self._closed:
            raise Unavailable("the archive is closed")
        with transaction(self._engine, write=False) as conn:
            yield conn

    def _filters(
        self,
        *,
        model: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
    ) -> builtins.list[ColumnElement[bool]]:
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and not isinstance(moment, datetime):
                raise ValidationError.for_field(name, "must be a datetime (naive means UTC)")
        conditions: builtins.list[ColumnElement[bool]] = []
        if model is not None:
            conditions.append(records.c.model_name == model)
        if customer_id is not None:
            conditions.append(records.c.subject == self._secrets.pseudonym(customer_id))
        if since is not None:
            conditions.append(records.c.created_at >= to_iso(since))
        if until is not None:
            conditions.append(records.c.created_at < to_iso(until))
        if kind is not None:
            conditions.append(records.c.kind == kind)
        return conditions

    # ``list`` shadows the builtin inside the class body, so it comes last.
    def list(
        self,
        model: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        kind: str | None = None,
    ) -> tuple[builtins.list[Record], str | None]:
        """Records in archive order (ascending seq), as ``get`` returns them, filtered by
        model name, customer (by pseudonym), ``since`` (inclusive) / ``until`` (exclusive)
        creation time and kind. Returns a page and the opaque cursor of the next (None at
        the end)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValidationError.for_field("limit", f"must be an integer from 1 to {MAX_PAGE}")
        conditions = self._filters(
            model=model, customer_id=customer_id, since=since, until=until, kind=kind
        )
        if kind is not None and kind not in KINDS:
            raise ValidationError.for_field("kind", f"must be one of {', '.join(KINDS)}")
        if cursor is not None:
            conditions.append(records.c.seq > _decode_cursor(cursor))
        query = select(records).where(*conditions).order_by(records.c.seq).limit(limit + 1)
        with self._read() as conn:
            rows = conn.execute(query).all()
            items = self._decrypt_rows(conn, rows[:limit])
        next_cursor = _encode_cursor(items[-1]["seq"]) if len(rows) > limit else None
        return items, next_cursor


def _require_text(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ValidationError.for_field(
            field, f"must be a non-empty string of at most {MAX_TEXT} characters"
        )


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(_CURSOR_PREFIX):
            return int(text.removeprefix(_CURSOR_PREFIX))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationError.for_field("cursor", "is not a cursor this archive handed out")


_live: weakref.WeakSet[Archive] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for archive in builtins.list(_live):
        archive._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
