"""When the archive cannot be written, nothing is served: every write raises Unavailable."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from explainer.archive import Archive, Secrets, open_archive
from explainer.archive._db import APPLICATION_NAME
from explainer.exceptions import IntegrityError, Unavailable, ValidationError

from .conftest import POSTGRES_URL, Backend, explanation_entry, fresh_backend, writes_rejected


@contextmanager
def head_locked_elsewhere(backend: Backend, db: Engine) -> Iterator[None]:
    """Another process holds the archive's write lock."""
    if backend.path is not None:
        locker = sqlite3.connect(backend.path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            locker.close()
        return
    with db.connect() as conn:
        conn.execute(text("SELECT seq FROM archive_head WHERE id = 1 FOR UPDATE"))
        try:
            yield
        finally:
            conn.rollback()


def unreachable_url(backend: Backend) -> str:
    if backend.name == "sqlite":
        assert backend.path is not None
        return f"sqlite:///{backend.path.parent / 'no' / 'such' / 'folder' / 'archive.db'}"
    return POSTGRES_URL.replace("127.0.0.1:5432", "127.0.0.1:1")


def test_opening_an_unreachable_archive_is_unavailable(backend: Backend, secrets: Secrets) -> None:
    with pytest.raises(Unavailable, match="cannot be written"):
        open_archive(unreachable_url(backend), secrets, timeout=2)


def test_a_rejected_write_is_unavailable_and_stores_nothing(
    archive: Archive, backend: Backend, db: Engine
) -> None:
    [kept] = archive.append([explanation_entry("C-1")])

    with writes_rejected(backend, db), pytest.raises(Unavailable, match="disk full"):
        archive.append([explanation_entry("C-2")])

    assert [r["id"] for r in archive.list()[0]] == [kept["id"]]
    assert archive.verify().ok
    [later] = archive.append([explanation_entry("C-3")])  # the writer recovers
    assert later["seq"] == 2


def test_every_caller_of_a_failed_group_commit_gets_unavailable(
    archive: Archive, backend: Backend, db: Engine
) -> None:
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def append() -> None:
        try:
            archive.append([explanation_entry()])
            outcome: BaseException | None = None
        except Unavailable as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    with writes_rejected(backend, db):
        threads = [threading.Thread(target=append) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(outcomes) == 8 and all(isinstance(o, Unavailable) for o in outcomes)
    assert archive.list()[0] == []


def test_a_lock_held_past_the_timeout_is_unavailable(
    backend: Backend, secrets: Secrets, db: Engine
) -> None:
    with open_archive(backend.url, secrets, timeout=0.3) as archive:
        with head_locked_elsewhere(backend, db):
            with pytest.raises(Unavailable):
                archive.append([explanation_entry()])
            assert archive.writable() is False
        assert archive.writable() is True
        assert archive.append([explanation_entry()])[0]["seq"] == 1


def test_a_closed_archive_is_unavailable(archive: Archive) -> None:
    archive.close()
    with pytest.raises(Unavailable, match="closed"):
        archive.append([explanation_entry()])
    with pytest.raises(Unavailable, match="closed"):
        archive.list()
    archive.close()  # closing twice is fine


def test_an_archive_from_a_newer_release_is_refused(
    archive: Archive, backend: Backend, secrets: Secrets, db: Engine
) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO archive_migrations (version, name, applied_at) "
                "VALUES (99, 'from the future', '2030-01-01T00:00:00.000000Z')"
            )
        )
    with pytest.raises(Unavailable, match="upgrade crm-explain"):
        open_archive(backend.url, secrets)


def test_an_archive_opened_with_other_secrets_is_refused(
    archive: Archive, backend: Backend
) -> None:
    with pytest.raises(IntegrityError, match="other secrets"):
        open_archive(backend.url, Secrets.generate())


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+pysqlcipher:///archive.db",
        "mysql://x@y/z",
        "postgresql://u@h/d",
        "not a url",
    ],
)
def test_urls_the_archive_cannot_use_are_refused(url: str, secrets: Secrets) -> None:
    with pytest.raises(ValidationError):
        open_archive(url, secrets)


def test_a_writer_that_cannot_get_its_turn_in_time_is_unavailable(
    tmp_path: Path, secrets: Secrets
) -> None:
    """SQLite writers take turns on a lock file beside the database; one held past the busy
    timeout (a stopped process, say) makes the others fail closed, not wait for ever."""
    import fcntl
    import time

    path = tmp_path / "archive.db"
    with open_archive(f"sqlite:///{path}", secrets, timeout=0.3) as archive:
        with open(f"{path}-writers.lock", "rb") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)
            started = time.monotonic()
            with pytest.raises(Unavailable, match="busy timeout"):
                archive.append([explanation_entry()])
            assert time.monotonic() - started < 5
            assert archive.writable() is False
        assert archive.append([explanation_entry()])[0]["seq"] == 1  # nothing was half-written
        assert archive.verify().ok


def test_a_chain_out_of_step_with_its_records_is_unavailable_not_a_conflict(
    archive: Archive, db: Engine
) -> None:
    archive.append([explanation_entry("C-1"), explanation_entry("C-2")])
    with db.begin() as conn:  # the head points back, as after restoring it from an old backup
        conn.execute(text("UPDATE archive_head SET seq = seq - 1 WHERE id = 1"))

    with pytest.raises(Unavailable, match="cannot be written"):
        archive.append([explanation_entry("C-3")])


@pytest.mark.postgres
def test_the_writer_reconnects_when_the_server_dropped_its_connection(
    secrets: Secrets, tmp_path: Path
) -> None:
    with fresh_backend("postgresql", tmp_path) as backend:
        db = backend.engine()
        with open_archive(backend.url, secrets) as archive:
            archive.append([explanation_entry("C-1")])
            assert drop_archive_connections(db) >= 1  # as a server restart would

            [stored] = archive.append([explanation_entry("C-2")])

            assert stored["seq"] == 2
            assert archive.verify().ok
        db.dispose()


def drop_archive_connections(db: Engine) -> int:
    with db.begin() as conn:
        dropped = conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": APPLICATION_NAME},
        )
    return int(dropped)
