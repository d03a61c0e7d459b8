"""A SQLite archive's appends are durable before they return: the writer commits without an
fsync while it holds the writers' lock, then syncs the write-ahead log after releasing it."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from explainer.archive import Secrets, open_archive
from explainer.archive._append import Appender, WalSync
from explainer.archive._chain import prepare_entry
from explainer.archive._db import create_archive_engine
from explainer.exceptions import Unavailable

from .conftest import explanation_entry


@dataclass
class Sync:
    path: str
    inode: int
    writers_lock_free: bool


@dataclass
class SyncSpy:
    """Stands in for os.fdatasync: notes each call, then syncs (or fails with ``error``)."""

    lock_file: Path
    error: int | None = None
    calls: list[Sync] = field(default_factory=list)

    def __call__(self, fd: int, _sync: Callable[[int], None] = os.fdatasync) -> None:
        self.calls.append(
            Sync(os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_ino, self._free())
        )
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        _sync(fd)

    def _free(self) -> bool:
        fd = os.open(self.lock_file, os.O_RDONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True


@pytest.fixture
def spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncSpy:
    spy = SyncSpy(tmp_path / "archive.db-writers.lock")
    monkeypatch.setattr(os, "fdatasync", spy)
    return spy


def test_an_append_returns_once_the_log_is_synced_after_the_writers_lock(
    tmp_path: Path, spy: SyncSpy
) -> None:
    with open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate()) as archive:
        [stored] = archive.append([explanation_entry("C-1")])

        assert [(call.path, call.writers_lock_free) for call in spy.calls] == [
            (str(tmp_path / "archive.db-wal"), True)
        ]
        assert archive.get(stored["id"])["id"] == stored["id"]


def test_after_a_log_that_cannot_be_synced_the_archive_takes_no_more_writes(
    tmp_path: Path, spy: SyncSpy
) -> None:
    spy.error = errno.EIO
    with open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate()) as archive:
        with pytest.raises(Unavailable, match="could not be made durable: Input/output error"):
            archive.append([explanation_entry("C-1")])
        spy.error = None  # the disk answers again, but the unsynced pages may be gone

        with pytest.raises(Unavailable, match=r"takes no more writes: .* restart the service"):
            archive.append([explanation_entry("C-2")])
        with pytest.raises(Unavailable, match="takes no more writes"):
            archive.erase_subject("C-1")
        assert not archive.writable()
        assert len(spy.calls) == 1  # nothing was committed after the failed sync


def test_the_writers_unsynced_connection_never_goes_back_to_the_pool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    secrets = Secrets.generate()
    open_archive(url, secrets).close()  # creates the schema
    engine = create_archive_engine(url, timeout=5)
    appender = Appender(engine)
    appender.append([prepare_entry(explanation_entry("C-1"), secrets, "e")], "2026-12-03T00:00Z")

    appender.close()

    for _ in range(3):  # the pool hands out its most recently returned connection first
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


def test_a_connection_without_a_write_ahead_log_keeps_syncing_its_commits(
    tmp_path: Path,
) -> None:
    connection = sqlite3.connect(tmp_path / "rollback-journal.db")
    connection.execute("PRAGMA synchronous = FULL")

    assert WalSync.for_connection(connection) is None
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    connection.close()


def test_the_sync_follows_the_log_file_sqlite_made_anew(tmp_path: Path, spy: SyncSpy) -> None:
    log = tmp_path / "archive.db-wal"
    log.write_bytes(b"frames")
    wal = WalSync(str(log))
    wal.sync()
    log.unlink()  # SQLite deletes the log with its last connection, and starts another
    log.write_bytes(b"new frames")
    wal.sync()
    wal.close()

    assert spy.calls[0].inode != spy.calls[1].inode
    assert spy.calls[1].inode == log.stat().st_ino
