"""Tables and numbered schema migrations.

``archive_migrations`` lists the migrations applied. ``migrate`` runs at every open, in one
write transaction under a lock (PostgreSQL: an advisory transaction lock; SQLite:
``BEGIN IMMEDIATE``), so processes that start together apply each migration exactly once.
A released migration function never changes; a schema change is a new numbered function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

from explainer.exceptions import IntegrityError, Unavailable

from ._canonical import GENESIS_HASH
from ._db import is_postgres, transaction

metadata = MetaData()

records = Table(
    "archive_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("model_name", Text),
    Column("model_version", BigInteger),
    Column("model_sha256", Text),
    Column("settings", Text, nullable=False),  # canonical JSON
    Column("subject", String(64)),  # HMAC pseudonym of the customer id
    Column("request_id", Text),
    Column("details", Text, nullable=False),  # canonical JSON, public
    Column("payload_sha256", String(64)),
    Column("payload", LargeBinary),  # AES-GCM ciphertext; NULL once erased
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_archive_records_model", "model_name", "seq"),
    Index("ix_archive_records_subject", "subject", "seq"),
    Index("ix_archive_records_created_at", "created_at"),
)

#: One row (id=1): the seq and hash of the newest record. Writers lock it.
head = Table(
    "archive_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

#: Per-subject AES-256 data keys; deleting one shreds that subject's payloads.
subject_keys = Table(
    "archive_subject_keys",
    metadata,
    Column("subject", String(64), primary_key=True),
    Column("key", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
)

cases = Table(
    "archive_cases",
    metadata,
    Column("case_id", String(32), primary_key=True),
    Column("explanation_id", String(64), nullable=False),
    Column("subject", String(64)),
    Column("status", String(16), nullable=False),
    Column("opened_by", String(16), nullable=False),
    Column("reason", Text),  # NULL once the subject is erased
    Column("opened_at", String(32), nullable=False),
    Column("opened_seq", BigInteger, nullable=False),
    Column("decision", String(16)),
    Column("note", Text),
    Column("decided_by", Text),
    Column("decided_at", String(32)),
    Column("decided_seq", BigInteger),
    # one open case per explanation and opener (migration 2; version 1 allowed one in all)
    Index(
        "ux_archive_cases_open_per_opener",
        "explanation_id",
        "opened_by",
        unique=True,
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
)

meta = Table(
    "archive_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

migrations = Table(
    "archive_migrations",
    MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_at", String(32), nullable=False),
)

_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"crm-explain archive migrations").digest()[:8], "big", signed=True
)


def _m1_initial(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=False)  # migrations run in one transaction
    conn.execute(head.insert().values(id=1, seq=0, hash=GENESIS_HASH))


def _m2_open_case_per_opener(conn: Connection) -> None:
    """A customer may contest a decision the system already sent to review. An archive made
    by this release's migration 1 has the new index already: both statements are then no-ops."""
    conn.execute(text("DROP INDEX IF EXISTS ux_archive_cases_one_open"))
    conn.execute(
        text(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_archive_cases_open_per_opener "
            "ON archive_cases (explanation_id, opened_by) WHERE status = 'open'"
        )
    )


MIGRATIONS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "initial schema", _m1_initial),
    (2, "one open review case per explanation and opener", _m2_open_case_per_opener),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(engine: Engine, *, now: str, key_check: str) -> int:
    """Apply the missing migrations; check the secrets belong to this archive.
    Returns the schema version."""
    with transaction(engine, write=True) as conn:
        if is_postgres(engine):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        migrations.create(conn, checkfirst=True)
        applied = set(conn.scalars(select(migrations.c.version)))
        if max(applied, default=0) > SCHEMA_VERSION:
            raise Unavailable(
                f"the archive's schema (version {max(applied)}) is newer than this crm-explain "
                f"supports (version {SCHEMA_VERSION}); upgrade crm-explain"
            )
        for version, name, apply in MIGRATIONS:
            if version not in applied:
                apply(conn)
                conn.execute(migrations.insert().values(version=version, name=name, applied_at=now))
        _check_secrets(conn, key_check)
    return SCHEMA_VERSION


def _check_secrets(conn: Connection, key_check: str) -> None:
    stored = conn.scalar(select(meta.c.value).where(meta.c.key == "pseudonym_key_check"))
    if stored is None:
        conn.execute(meta.insert().values(key="pseudonym_key_check", value=key_check))
    elif stored != key_check:
        raise IntegrityError(
            "the archive was created with other secrets (its pseudonym key differs); every "
            "worker and replica must load the same secrets folder"
        )
