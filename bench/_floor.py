"""The least a fail-closed archive can do: the yardstick of ``bench_archive.py``.

``FloorArchive`` stands in for the service's archive and commits every batch of explanations
before they are answered, as the archive must, and nothing more: the payload's canonical JSON
(what any archive has to serialise) into a table of (id, payload), one transaction per batch,
PostgreSQL's in one round trip, made as durable as the archive's commits. It keeps no hash
chain, computes no pseudonym, encrypts nothing, opens no review case, and its writers never
wait for one another: each thread commits on a connection of its own. What it costs over no
archive is what answering only after a durable commit costs on the machine measured, whatever
the archive's design; the archive's cost beyond it is what its design adds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import make_url

from explainer.archive import ArchiveEntry
from explainer.archive._append import WalSync
from explainer.archive._canonical import canonical_json

TABLE = "floor_records"


class FloorArchive:
    """What ``ExplainerService`` asks of an archive while it explains: ``append``,
    ``writable`` and ``close``. ``url`` is a SQLAlchemy URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._local = threading.local()
        self._opened: list[_Connection] = []
        self._lock = threading.Lock()

    @staticmethod
    def create_table(url: str) -> None:
        """Once, before the servers start (their workers only insert)."""
        connection = _connect(url)
        connection.create_table()
        connection.close()

    def append(self, entries: Sequence[ArchiveEntry]) -> list[dict[str, Any]]:
        """Commit the entries' payloads; no records come back, so no review case opens."""
        rows = [(entry.id, canonical_json(dict(entry.payload))) for entry in entries]
        self._connection().insert(rows)
        return []

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = _connect(self._url)
            with self._lock:
                self._opened.append(connection)
        return connection


class _Connection(Protocol):
    def create_table(self) -> None: ...

    def insert(self, rows: list[tuple[str | None, bytes]]) -> None: ...

    def close(self) -> None: ...


class _Postgres:
    """BEGIN, the inserts and COMMIT go to the server in one pipeline: one round trip."""

    def __init__(self, conninfo: str) -> None:
        self._connection = psycopg.connect(conninfo, autocommit=True)

    def create_table(self) -> None:
        self._connection.execute(f"CREATE TABLE {TABLE} (id text PRIMARY KEY, payload bytea)")

    def insert(self, rows: list[tuple[str | None, bytes]]) -> None:
        try:
            with self._connection.pipeline(), self._connection.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.executemany(f"INSERT INTO {TABLE} (id, payload) VALUES (%s, %s)", rows)
                cursor.execute("COMMIT")
        except BaseException:
            self._connection.rollback()  # a failed batch leaves no aborted transaction behind
            raise

    def close(self) -> None:
        self._connection.close()


class _Sqlite:
    """Committed as the archive's SQLite writer commits: without a sync under the writers'
    lock, then the write-ahead log synced before anyone is answered."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA busy_timeout = 30000")
        self._connection.execute("PRAGMA journal_mode = WAL")
        wal = WalSync.for_connection(self._connection)
        assert wal is not None, "SQLite without a write-ahead log or fdatasync"
        self._wal = wal

    def create_table(self) -> None:
        self._connection.execute(f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, payload BLOB)")

    def insert(self, rows: list[tuple[str | None, bytes]]) -> None:
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            self._connection.executemany(f"INSERT INTO {TABLE} (id, payload) VALUES (?, ?)", rows)
            self._connection.execute("COMMIT")
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._wal.sync()

    def close(self) -> None:
        self._wal.close()
        self._connection.close()


def _connect(url: str) -> _Connection:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return _Postgres(conninfo)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return _Sqlite(parsed.database)
    raise ValueError(f"the floor archive takes a SQLite file or PostgreSQL URL, not {url!r}")
