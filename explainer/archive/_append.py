"""The group-commit writer's transaction, in the driver's own SQL on a connection it keeps.

Every batch of explanations is one transaction: lock the head, load the subjects' data
keys, insert the keys of new subjects, insert the records and the review cases they open,
move the head. Through SQLAlchemy
Core, building and dispatching them cost the writer more CPU than the database spent running
them, so the writer runs them as plain driver SQL. Every other archive write goes through
SQLAlchemy (``_chain.append_prepared``); both chain the records with ``_chain.seal``.

On PostgreSQL the transaction is two round trips in psycopg's pipeline mode (begin, lock the
head and load the keys; then write and commit) instead of one per statement; BEGIN and COMMIT
go in the pipeline as statements, on an autocommit connection, since psycopg's own wait for
their answers. Measured in one process against the statement-by-statement version, at 1 to 4
explanations per commit, it takes about 30% less of the writer's CPU per entry and 30-40%
less of the database's.

On SQLite the writer's connection commits without an fsync (``synchronous = NORMAL``) and
syncs the write-ahead log once it has released the writers' lock, before any caller hears of
the commit (``WalSync``). The commit is then as durable as with ``synchronous = FULL`` when its
explanations are answered, but the next writer (another worker) no longer waits through this
one's fsync and its wake-up after it, which under load held the lock 1.1-2.3 ms (median)
instead of 0.2 ms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine.interfaces import DBAPIModule
from sqlalchemy.pool import PoolProxiedConnection

from explainer.exceptions import Unavailable

from ._chain import (
    OPENED_CASE_COLUMNS,
    Prepared,
    new_keys,
    payload_subjects,
    seal,
)
from ._db import DuplicateKey, describe, is_postgres, is_unique_violation, writers_queue
from ._schema import cases, head, records, subject_keys
from ._types import Record

#: Connections a forked child found open: the parent's sockets and files. The child must
#: neither close them nor hand them back to a pool, so it only keeps them from being collected.
_INHERITED: list[object] = []


@dataclass(frozen=True)
class _Statements:
    begin: str
    commit: str
    lock_head: str
    insert_keys: str
    insert_records: str
    insert_cases: str
    move_head: str
    placeholder: str

    @classmethod
    def for_engine(cls, engine: Engine) -> _Statements:
        postgres = is_postgres(engine)

        def named(name: str) -> str:
            return f"%({name})s" if postgres else f":{name}"

        def insert(table_name: str, columns: Sequence[str]) -> str:
            values = ", ".join(named(c) for c in columns)
            return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({values})"

        return cls(
            begin="BEGIN" if postgres else "BEGIN IMMEDIATE",
            commit="COMMIT",
            lock_head=f"SELECT seq, hash FROM {head.name} WHERE id = 1"
            + (" FOR UPDATE" if postgres else ""),
            insert_keys=insert(subject_keys.name, subject_keys.c.keys()),
            insert_records=insert(records.name, records.c.keys()),
            insert_cases=insert(cases.name, OPENED_CASE_COLUMNS),
            move_head=f"UPDATE {head.name} SET seq = {named('new_seq')}, "
            f"hash = {named('new_hash')} WHERE id = 1",
            placeholder="%s" if postgres else "?",
        )

    def load_keys(self, count: int) -> str:
        marks = ", ".join([self.placeholder] * count)
        return f"SELECT subject, key FROM {subject_keys.name} WHERE subject IN ({marks})"


class Appender:
    """Appends prepared records, one transaction per call. One thread at a time uses it
    (the group-commit writer); it keeps one pooled connection between calls."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sql = _Statements.for_engine(engine)
        self._pipelined = is_postgres(engine)
        self._driver_error: type[DBAPIModule.Error] = engine.dialect.loaded_dbapi.Error
        self._conn: PoolProxiedConnection | None = None
        self._wal: WalSync | None = None  # SQLite: set with the connection
        #: Why a commit could not be made durable; then no write may build on it (see append).
        self.not_durable: str | None = None

    def append(self, items: Sequence[Prepared], now: str) -> list[Record]:
        """Chain ``items`` after the head and commit them; their stored public records.
        DuplicateKey when an id or seq is taken, Unavailable when the archive cannot be
        written (either way nothing was written) or when a SQLite commit cannot be made
        durable (then it may be stored, and is never answered as archived). After that, every
        append is Unavailable: the kernel may have dropped the unsynced pages, and a commit
        chained after them would be lost with them, answered or not (PostgreSQL stops too)."""
        self.check_durable()
        with writers_queue(self._engine):
            try:
                stored = self._transaction(items, now)
            except self._driver_error as exc:
                self._discard()
                reason = describe(exc)
                if is_unique_violation(exc):
                    raise DuplicateKey(f"the archive refused a duplicate key: {reason}") from exc
                raise Unavailable(f"the archive cannot be written: {reason}") from exc
        if self._wal is not None:
            try:  # after the writers' lock; before any caller hears of the commit
                self._wal.sync()
            except Unavailable as exc:
                self.not_durable = exc.message
                raise
        return stored

    def check_durable(self) -> None:
        """Unavailable once a commit could not be made durable."""
        if self.not_durable is not None:
            raise Unavailable(
                f"the archive takes no more writes: {self.not_durable}; restart the service "
                "once the disk is sound"
            )

    def close(self) -> None:
        self._discard()  # not back to the pool: it commits without syncing

    def abandon(self) -> None:
        """In a forked child: forget the parent's connection without touching it."""
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
        if self._wal is not None:  # the child's own copy of the descriptor
            self._wal.close()
            self._wal = None

    def _transaction(self, items: Sequence[Prepared], now: str) -> list[Record]:
        subjects = payload_subjects(items)
        cursor, head_state, keys = self._begin(subjects)
        try:
            try:
                fresh = new_keys(subjects, keys, now)
                keys |= {row["subject"]: row["key"] for row in fresh}
                sealed = seal(items, head_state, keys, now)
                with self._round_trip(cursor.connection):
                    if fresh:
                        cursor.executemany(self._sql.insert_keys, fresh)
                    cursor.executemany(self._sql.insert_records, sealed.records)
                    if sealed.cases:
                        cursor.executemany(self._sql.insert_cases, sealed.cases)
                    cursor.execute(self._sql.move_head, sealed.head)
                    cursor.execute(self._sql.commit)
            finally:
                cursor.close()  # before a rollback that may close the connection
        except BaseException:
            self._rollback()
            raise
        return sealed.stored

    def _begin(self, subjects: set[str]) -> tuple[Any, tuple[int, str], dict[str, bytes]]:
        """A cursor in a transaction holding the head, the head, and the data keys of those
        of ``subjects`` that have one. A kept connection the server has dropped since (a
        restart) is replaced once: nothing was written on it."""
        kept = self._conn is not None
        driver = self._driver()
        try:
            return self._lock_head(driver, subjects)
        except self._driver_error as exc:
            if not kept or not self._engine.dialect.is_disconnect(exc, driver, None):
                raise
        self._discard()
        return self._lock_head(self._driver(), subjects)

    def _lock_head(
        self, driver: Any, subjects: set[str]
    ) -> tuple[Any, tuple[int, str], dict[str, bytes]]:
        cursor, keys_cursor = driver.cursor(), driver.cursor()
        try:
            try:
                with self._round_trip(driver):
                    cursor.execute(self._sql.begin)
                    cursor.execute(self._sql.lock_head)
                    if subjects:
                        keys_cursor.execute(self._sql.load_keys(len(subjects)), sorted(subjects))
                seq, hash_ = cursor.fetchone()
                keys = {str(s): bytes(k) for s, k in keys_cursor.fetchall()} if subjects else {}
            finally:
                keys_cursor.close()  # before a rollback that may close the connection
        except BaseException:
            cursor.close()
            self._rollback()
            raise
        return cursor, (int(seq), str(hash_)), keys

    def _round_trip(self, driver: Any) -> AbstractContextManager[Any]:
        """PostgreSQL: the block's statements go to the server together and their results
        come back together (psycopg's pipeline mode). The head stays locked from the first
        round trip to the second."""
        if self._pipelined:
            return driver.pipeline()  # type: ignore[no-any-return]
        return nullcontext()

    def _driver(self) -> Any:
        if self._conn is None:
            self._conn = self._engine.raw_connection()
            if self._pipelined:
                # BEGIN and COMMIT go in the pipeline as statements: psycopg's own BEGIN
                # waits for its answer, a round trip of its own
                self._conn.driver_connection.autocommit = True  # type: ignore[union-attr]
            else:
                self._wal = WalSync.for_connection(self._conn.driver_connection)
        return self._conn.driver_connection

    def _rollback(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.driver_connection.rollback()  # type: ignore[union-attr]
        except self._driver_error:
            self._discard()

    def _discard(self) -> None:
        """Drop the connection after an error: the next transaction starts on a fresh one."""
        if self._conn is not None:
            self._conn.invalidate()
            self._conn = None
        if self._wal is not None:
            self._wal.close()
            self._wal = None


class WalSync:
    """Syncs the write-ahead log of a SQLite connection that commits without syncing it.

    A commit appends its pages to the log with ``write``; ``fdatasync`` then puts every page
    written so far on disk, this commit's among them. Should a checkpoint have copied them
    into the database first, SQLite synced the database before it reused the log.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file _fd is open on

    @classmethod
    def for_connection(cls, connection: Any) -> WalSync | None:
        """Switch ``connection`` (sqlite3) to commit without syncing, and sync its log after
        each commit; None (it keeps ``synchronous = FULL``) where there is no write-ahead log
        or no ``fdatasync`` (macOS, Windows)."""
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal" or not hasattr(os, "fdatasync"):
            return None
        connection.execute("PRAGMA synchronous = NORMAL")
        database = connection.execute("PRAGMA database_list").fetchone()[2]
        return cls(f"{database}-wal")

    def sync(self) -> None:
        try:
            fd = self._open()
            os.fdatasync(fd)
        except OSError as exc:
            raise Unavailable(
                f"the archive's commit could not be made durable: {exc.strerror} ({self._path})"
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._file = None

    def _open(self) -> int:
        """A descriptor of the log file at the path now: SQLite deletes the log when its last
        connection closes and makes a new one, so a kept descriptor is checked first."""
        now = os.stat(self._path)
        if self._fd is not None:
            if self._file == (now.st_dev, now.st_ino):
                return self._fd
            self.close()
        self._fd = os.open(self._path, os.O_RDONLY)
        opened = os.fstat(self._fd)  # the file opened, even if the path changed since the stat
        self._file = (opened.st_dev, opened.st_ino)
        return self._fd
