"""Group commit, leader and followers (``explainer.archive._writer``), on a fake transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from explainer.archive._writer import GroupCommitWriter
from explainer.exceptions import ExplainerError, Unavailable


class FakeTransactions:
    """Commits a batch by recording it; the first one can be held open with ``hold``."""

    def __init__(self) -> None:
        self.batches: list[list[list[Any]]] = []
        self.threads: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail_with: Exception | None = None

    def __call__(self, groups: list[Sequence[Any]]) -> list[list[Any] | ExplainerError]:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.hold.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append([list(g) for g in groups])
        return [[{"id": item} for item in group] for group in groups]


def writer(commit: FakeTransactions, wait_timeout: float = 10.0) -> GroupCommitWriter:
    return GroupCommitWriter(commit, max_batch=500, wait_timeout=wait_timeout)  # type: ignore[arg-type]


def in_threads(target: Any, args: list[tuple[Any, ...]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=a, name=f"caller-{a[0]}") for a in args]
    for thread in threads:
        thread.start()
    return threads


def test_a_caller_alone_commits_in_its_own_thread() -> None:
    commit = FakeTransactions()

    stored = writer(commit).submit(["a", "b"])

    assert stored == [{"id": "a"}, {"id": "b"}]
    assert commit.threads == [threading.current_thread().name]


def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    results: dict[str, Any] = {}

    def append(name: str) -> None:
        results[name] = group_commit.submit([name])

    commit.hold.clear()
    [first] = in_threads(append, [("first",)])
    assert commit.started.wait(5)
    followers = in_threads(append, [(f"f{i}",) for i in range(5)])
    while len(group_commit._queue) < 5:  # all five queued behind the open transaction
        time.sleep(0.001)
    commit.hold.set()
    for thread in [first, *followers]:
        thread.join(10)

    assert commit.batches[0] == [["first"]]
    assert sorted(g[0] for g in commit.batches[1]) == [f"f{i}" for i in range(5)]
    assert group_commit.commits == 2 and group_commit.appended == 6
    assert results == {name: [{"id": name}] for name in ["first", *(f"f{i}" for i in range(5))]}
    assert commit.threads[1].startswith("caller-f")  # a follower led the second batch


def test_every_caller_of_a_failed_batch_gets_the_error_and_the_next_caller_commits() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    errors: list[BaseException] = []

    def append(name: str) -> None:
        try:
            group_commit.submit([name])
        except Unavailable as exc:
            errors.append(exc)

    commit.fail_with = Unavailable("disk full (simulated)")
    for thread in in_threads(append, [(f"c{i}",) for i in range(4)]):
        thread.join(10)
    commit.fail_with = None

    assert len(errors) == 4 and all("disk full" in str(e) for e in errors)
    assert group_commit.submit(["later"]) == [{"id": "later"}]


def test_a_follower_that_waits_past_the_timeout_is_unavailable_and_never_written() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit, wait_timeout=0.2)
    commit.hold.clear()
    [leader] = in_threads(group_commit.submit, [(["slow"],)])
    assert commit.started.wait(5)

    with pytest.raises(Unavailable, match="did not confirm"):
        group_commit.submit(["impatient"])
    commit.hold.set()
    leader.join(10)

    assert group_commit.submit(["next"]) == [{"id": "next"}]
    assert [item for batch in commit.batches for group in batch for item in group] == [
        "slow",
        "next",
    ]


def test_close_waits_for_the_commit_under_way_then_refuses_appends() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    commit.hold.clear()
    [leader] = in_threads(group_commit.submit, [(["in-flight"],)])
    assert commit.started.wait(5)

    closer = threading.Thread(target=group_commit.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still waiting for the open transaction
    commit.hold.set()
    closer.join(10)
    leader.join(10)

    assert commit.batches == [[["in-flight"]]]
    with pytest.raises(Unavailable, match="closed"):
        group_commit.submit(["late"])
