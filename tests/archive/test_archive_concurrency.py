"""Group commit and concurrent writers: seq stays gapless and the chain valid."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

from explainer.archive import Archive, Secrets, open_archive

from .conftest import Backend, FakeClock, explanation_entry

THREADS = 16
APPENDS_PER_THREAD = 15


def run_in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``count`` threads released together; re-raise the first failure."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def assert_gapless_and_valid(archive: Archive, expected: int) -> None:
    items, _ = archive.list(limit=1000)
    assert [item["seq"] for item in items] == list(range(1, expected + 1))
    report = archive.verify()
    assert report.ok, report.first_bad
    assert report.records == expected


def test_sixteen_threads_share_commits_and_get_a_gapless_valid_chain(archive: Archive) -> None:
    returned: list[dict[str, object]] = []

    def work(i: int) -> None:
        for n in range(APPENDS_PER_THREAD):
            returned.extend(archive.append([explanation_entry(f"C-{i}-{n % 3}")]))

    run_in_threads(THREADS, work)

    total = THREADS * APPENDS_PER_THREAD
    assert sorted(int(r["seq"]) for r in returned) == list(range(1, total + 1))  # type: ignore[call-overload]
    assert_gapless_and_valid(archive, total)
    stats = archive.stats
    assert stats.appended == total
    assert 0 < stats.commits < total  # group commit: callers shared transactions


def test_every_caller_returns_only_after_its_records_are_committed(
    archive: Archive, backend: Backend, secrets: Secrets
) -> None:
    with open_archive(backend.url, secrets) as other:  # another process's view

        def work(i: int) -> None:
            for _ in range(5):
                [record] = archive.append([explanation_entry(f"C-{i}")])
                assert other.get(str(record["id"]))["id"] == record["id"]

        run_in_threads(4, work)


def test_two_archive_objects_on_one_database_stay_consistent(
    backend: Backend, secrets: Secrets, clock: FakeClock
) -> None:
    with (
        open_archive(backend.url, secrets, clock=clock) as first,
        open_archive(backend.url, secrets, clock=clock) as second,
    ):

        def work(i: int) -> None:
            target = first if i % 2 else second
            for n in range(10):
                target.append([explanation_entry(f"C-{n}"), explanation_entry(f"D-{n}")])
                if n == 5 and i == 0:
                    target.erase_subject("C-1")

        run_in_threads(8, work)

        assert_gapless_and_valid(first, 8 * 10 * 2 + 1)
        assert first.verify() == second.verify()


def test_processes_opening_a_fresh_archive_together_migrate_it_once(
    backend: Backend, secrets: Secrets
) -> None:
    archives: list[Archive] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        opened = open_archive(backend.url, secrets)
        with lock:
            archives.append(opened)

    run_in_threads(6, work)
    try:
        archives[0].append([explanation_entry()])
        assert all(a.verify().ok and a.verify().records == 1 for a in archives)
    finally:
        for opened in archives:
            opened.close()


def _append_in_child(archive: Archive, prefix: str, count: int) -> None:
    for n in range(count):
        archive.append([explanation_entry(f"{prefix}-{n}")])
    archive.close()


def test_forked_worker_processes_append_to_one_chain(archive: Archive) -> None:
    """Like gunicorn workers forked after the master opened the archive (the writer's
    connection and pooled connections do not survive a fork; the archive starts fresh ones)."""
    archive.append([explanation_entry("parent")])  # the parent's writer now keeps a connection
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_append_in_child, args=(archive, f"W{i}", 10)) for i in range(3)
    ]
    for child in children:
        child.start()
    for n in range(10):
        archive.append([explanation_entry(f"parent-{n}")])
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0

    assert_gapless_and_valid(archive, 1 + 10 + 3 * 10)
