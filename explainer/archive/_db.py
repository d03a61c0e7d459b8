"""Engines and transactions for SQLite (WAL, busy timeout) and PostgreSQL (psycopg 3).

Writers serialise on the archive head: SQLite writes queue on a file lock beside the
database, then run in ``BEGIN IMMEDIATE`` (one writer per database file; writers that skip
the queue wait up to the busy timeout); PostgreSQL writes lock the head row with
``SELECT ... FOR UPDATE`` (see ``_chain.lock_head``).
Every database error leaves this module as ``Unavailable``, but a broken unique key, which
is ``DuplicateKey`` (a ``Conflict``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from explainer.exceptions import Conflict, Unavailable, ValidationError

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy handler alone serialises the writers
    fcntl = None  # type: ignore[assignment]

_WRITE = "crm_explain_archive_write"
#: PostgreSQL's ``application_name`` of the archive's connections, unless the URL sets one.
APPLICATION_NAME = "crm-explain-archive"
#: libpq's TCP settings, unless the URL sets them: a dead connection is noticed within about
#: 30 s, whether idle (keepalives) or with a write unacknowledged (tcp_user_timeout, ms).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 4,
    "tcp_user_timeout": 30_000,
}


class DuplicateKey(Conflict):
    """A write broke a unique key (an id that is already taken); nothing was written."""


def create_archive_engine(url: str, timeout: float) -> Engine:
    """An engine for ``url``; nothing is connected yet."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValidationError.for_field("url", f"is not a SQLAlchemy URL ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, timeout)
    if backend == "postgresql":
        return _postgres_engine(parsed, timeout)
    raise ValidationError.for_field(
        "url", f"backend {backend!r} is not supported; use sqlite:///PATH or postgresql+psycopg://"
    )


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _sqlite_engine(url: URL, timeout: float) -> Engine:
    if url.drivername not in ("sqlite", "sqlite+pysqlite"):  # the writer speaks sqlite3 itself
        raise ValidationError.for_field("url", "use Python's sqlite3 driver: sqlite:///PATH")
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        raise ValidationError.for_field(
            "url", "an in-memory SQLite archive cannot be shared by connections; give a file path"
        )
    engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})
    _QUEUES[engine] = (f"{os.path.abspath(str(url.database))}-writers.lock", timeout)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _set_wal(cursor, timeout)
        cursor.execute("PRAGMA synchronous = FULL")  # a returned append survives power loss
        cursor.execute("PRAGMA secure_delete = ON")  # shredded keys do not linger in free pages
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _postgres_engine(url: URL, timeout: float) -> Engine:
    if url.drivername != "postgresql+psycopg":
        raise ValidationError.for_field("url", "use the psycopg 3 driver: postgresql+psycopg://...")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = max(1, round(timeout))
    if "application_name" not in url.query:  # how pg_stat_activity names our connections
        connect_args["application_name"] = APPLICATION_NAME
    for name, value in _KEEPALIVES.items():  # a vanished server fails a write instead of hanging it
        if name not in url.query:
            connect_args[name] = value
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(timeout * 1000)}")
        dbapi_connection.commit()

    return engine


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction; commits when the block ends. Reads see one snapshot
    (REPEATABLE READ on PostgreSQL; a read transaction in SQLite's WAL mode)."""
    try:
        queue = writers_queue(engine) if write else contextlib.nullcontext()
        with queue, engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            elif is_postgres(engine):
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
    except DBAPIError as exc:
        if _is_unique_violation(exc):
            raise DuplicateKey(f"the archive refused a duplicate key: {describe(exc)}") from exc
        action = "written" if write else "read"
        raise Unavailable(f"the archive cannot be {action}: {describe(exc)}") from exc


#: Each SQLite engine's writers' queue: (lock file, how long a writer waits for its turn).
_QUEUES: weakref.WeakKeyDictionary[Engine, tuple[str, float]] = weakref.WeakKeyDictionary()
#: How often a writer waiting its turn looks again (SQLite's own handler sleeps 1, 2, 5... ms).
_QUEUE_POLL_S = 0.0005


@contextmanager
def writers_queue(engine: Engine) -> Iterator[None]:
    """Writers of one SQLite archive (the threads and processes of this host) take turns on
    an OS file lock, looked at every half millisecond up to the busy timeout. Left to SQLite, a
    writer that finds the database locked sleeps 1, 2, 5, 10... ms between retries, and under
    load those sleeps idle the waiting workers. The lock goes with the process that holds it,
    even when that process is killed. PostgreSQL queues its writers itself (``lock_head``)."""
    queue = _QUEUES.get(engine)
    if queue is None or fcntl is None:
        yield
        return
    path, timeout = queue
    try:  # read-only is enough to lock, so a lock file another user created serves too
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise Unavailable(f"the archive cannot be written: {exc.strerror} ({path})") from exc
    try:
        _take_turn(fd, time.monotonic() + timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _take_turn(fd: int, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "the archive cannot be written: another writer held it past the busy timeout"
                ) from None
            time.sleep(_QUEUE_POLL_S)


def _is_unique_violation(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) and is_unique_violation(exc.orig)


def is_unique_violation(driver_error: BaseException | None) -> bool:
    """A driver's error for a broken UNIQUE or PRIMARY KEY (not any other constraint, nor a
    trigger's ABORT)."""
    if getattr(driver_error, "sqlstate", None) == "23505":  # PostgreSQL's unique_violation
        return True
    return isinstance(driver_error, sqlite3.IntegrityError) and (
        "UNIQUE constraint failed" in str(driver_error)  # SQLite's message for both
    )


def describe(exc: BaseException) -> str:
    """The first line of a database error (the driver's own, when SQLAlchemy wrapped it)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _set_wal(cursor: Any, timeout: float) -> None:
    """Switching a new database to WAL takes an exclusive lock, and SQLite answers "database
    is locked" at once (not after the busy timeout) while another process does the same:
    retry until the timeout, as the busy handler would."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
