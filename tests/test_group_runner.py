"""Leader and followers (``explainer.group_runner``), as the archive's group commit uses them,
on a fake transaction."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from explainer.exceptions import ExplainerError, Unavailable
from explainer.group_runner import RECENT_S, GroupRunner

GroupCommitWriter = GroupRunner[list[str], list[dict[str, str]]]


class FakeTransactions:
    """Commits a batch by recording it; ``hold(n)`` keeps the n-th commit (0-based) open
    until the returned event is set."""

    def __init__(self) -> None:
        self.batches: list[list[list[Any]]] = []
        self.threads: list[str] = []
        self.started: list[threading.Event] = [threading.Event() for _ in range(8)]
        self._holds: dict[int, threading.Event] = {}
        self.fail_with: BaseException | None = None
        self._calls = 0

    def hold(self, call: int) -> threading.Event:
        return self._holds.setdefault(call, threading.Event())

    def __call__(self, groups: list[Sequence[Any]]) -> list[list[Any] | ExplainerError]:
        call, self._calls = self._calls, self._calls + 1
        self.threads.append(threading.current_thread().name)
        self.started[call].set()
        if call in self._holds:
            self._holds[call].wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append([list(g) for g in groups])
        return [[{"id": item} for item in group] for group in groups]


def writer(commit: FakeTransactions, wait_timeout: float = 10.0) -> GroupCommitWriter:
    return GroupRunner(
        commit,  # type: ignore[arg-type]
        max_batch=500,
        wait_timeout=wait_timeout,
        name="the archive",
        work="write",
    )


def appender(group_commit: GroupCommitWriter, outcomes: dict[str, Any]) -> Any:
    """A caller that appends ``[name]`` and files its stored records, or its Unavailable,
    under ``name`` in ``outcomes``."""

    def append(name: str) -> None:
        try:
            outcomes[name] = group_commit.submit([name])
        except Unavailable as exc:
            outcomes[name] = exc

    return append


def wait_until_queued(group_commit: GroupCommitWriter, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(group_commit._queue) < count:
        assert time.monotonic() < deadline
        time.sleep(0.001)


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
    append = appender(group_commit, results)

    release = commit.hold(0)
    [first] = in_threads(append, [("first",)])
    assert commit.started[0].wait(5)
    followers = in_threads(append, [(f"f{i}",) for i in range(5)])
    wait_until_queued(group_commit, 5)  # all five behind the open transaction
    release.set()
    for thread in [first, *followers]:
        thread.join(10)

    assert commit.batches[0] == [["first"]]
    assert sorted(g[0] for g in commit.batches[1]) == [f"f{i}" for i in range(5)]
    assert group_commit.batches_run == 2 and group_commit.items_done == 6
    assert results == {name: [{"id": name}] for name in ["first", *(f"f{i}" for i in range(5))]}
    assert commit.threads[1].startswith("caller-f")  # a follower led the second batch


def test_every_caller_of_a_failed_batch_gets_the_error_and_the_next_caller_commits() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    outcomes: dict[str, Any] = {}

    commit.fail_with = Unavailable("disk full (simulated)")
    for thread in in_threads(appender(group_commit, outcomes), [(f"c{i}",) for i in range(4)]):
        thread.join(10)
    commit.fail_with = None

    assert len(outcomes) == 4
    assert all(isinstance(e, Unavailable) and "disk full" in str(e) for e in outcomes.values())
    assert group_commit.submit(["later"]) == [{"id": "later"}]


def test_a_follower_that_waits_past_the_timeout_is_unavailable_and_never_written() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit, wait_timeout=0.2)
    release = commit.hold(0)
    [leader] = in_threads(group_commit.submit, [(["slow"],)])
    assert commit.started[0].wait(5)

    with pytest.raises(Unavailable, match="did not confirm"):
        group_commit.submit(["impatient"])
    release.set()
    leader.join(10)

    assert group_commit.submit(["next"]) == [{"id": "next"}]
    assert [item for batch in commit.batches for group in batch for item in group] == [
        "slow",
        "next",
    ]


def test_close_waits_for_the_commit_under_way_then_refuses_appends() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    release = commit.hold(0)
    [leader] = in_threads(group_commit.submit, [(["in-flight"],)])
    assert commit.started[0].wait(5)

    closer = threading.Thread(target=group_commit.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still waiting for the open transaction
    release.set()
    closer.join(10)
    leader.join(10)

    assert commit.batches == [[["in-flight"]]]
    with pytest.raises(Unavailable, match="closed"):
        group_commit.submit(["late"])


def batch_of_b_and_c_held_open(seconds: float, wait_timeout: float) -> dict[str, Any]:
    """``a`` commits alone; ``b`` and ``c`` queue meanwhile and share the next commit (led by
    ``b``), which stays open ``seconds``, past the first ``wait_timeout`` of ``c``."""
    commit = FakeTransactions()
    group_commit = writer(commit, wait_timeout=wait_timeout)
    first, second = commit.hold(0), commit.hold(1)
    outcomes: dict[str, Any] = {}
    append = appender(group_commit, outcomes)

    threads = in_threads(append, [("a",)])
    assert commit.started[0].wait(5)
    threads += in_threads(append, [("b",), ("c",)])
    wait_until_queued(group_commit, 2)
    first.set()
    assert commit.started[1].wait(5)
    time.sleep(seconds)
    second.set()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_a_caller_already_in_a_batch_waits_for_its_outcome_past_the_timeout() -> None:
    outcomes = batch_of_b_and_c_held_open(seconds=0.7, wait_timeout=0.5)

    assert outcomes == {name: [{"id": name}] for name in "abc"}  # committed, and told so


def test_a_caller_gives_up_on_a_commit_that_outlasts_twice_the_timeout() -> None:
    outcomes = batch_of_b_and_c_held_open(seconds=1.0, wait_timeout=0.2)

    assert outcomes["b"] == [{"id": "b"}]  # the leader waits for its own commit
    assert isinstance(outcomes["c"], Unavailable) and "may yet be done" in str(outcomes["c"])


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or a worker's timeout raised in a caller's thread."""


def test_a_caller_interrupted_when_made_leader_hands_the_lead_on() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit, wait_timeout=1.0)
    release = commit.hold(0)
    interrupted: list[BaseException] = []

    def append(name: str) -> None:
        try:
            group_commit.submit([name])
        except Interrupted as exc:
            interrupted.append(exc)

    [leader] = in_threads(append, [("leader",)])
    assert commit.started[0].wait(5)
    [follower] = in_threads(append, [("follower",)])
    wait_until_queued(group_commit, 1)
    raise_in_thread(follower, Interrupted)  # delivered when it wakes up as the next leader
    release.set()
    leader.join(10)
    follower.join(10)

    assert len(interrupted) == 1
    assert group_commit.submit(["later"]) == [{"id": "later"}]  # not stuck behind it
    group_commit.close()
    assert [g for batch in commit.batches for g in batch] == [["leader"], ["later"]]


def test_a_leader_interrupted_mid_commit_hands_the_lead_on() -> None:
    commit = FakeTransactions()
    group_commit = writer(commit)
    commit.fail_with = Interrupted()
    with pytest.raises(Interrupted):
        group_commit.submit(["interrupted"])
    commit.fail_with = None

    assert group_commit.submit(["next"]) == [{"id": "next"}]


def raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )
    assert done == 1


# -- the second stage: a batch finishes while the next one runs ---------------------------------


class HeldFinish:
    """A second stage that marks each result finished; ``hold`` keeps its first call open
    until the returned event is set."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.batches: list[list[str]] = []
        self.fail_with: Exception | None = None

    def __call__(self, done: list[tuple[list[str], list[Any]]]) -> list[list[Any] | Exception]:
        self.batches.append([item for items, _ in done for item in items])
        self.started.set()
        assert self.release.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return [[{**record, "finished": True} for record in result] for _, result in done]


def pipeline(run: FakeTransactions, finish: HeldFinish) -> GroupCommitWriter:
    return GroupRunner(
        run,  # type: ignore[arg-type]
        finish=finish,
        max_batch=500,
        wait_timeout=10.0,
        name="the explainer",
        work="explanation",
    )


def two_behind_a_held_one(
    run: FakeTransactions, runner: GroupCommitWriter, names: list[str], outcomes: dict[str, Any]
) -> list[threading.Thread]:
    """``names[0]`` runs alone and is held; the other two queue meanwhile, then the run goes on
    (so they share the next batch). The callers' threads."""
    append = appender(runner, outcomes)
    first_run = run.hold(0)
    threads = in_threads(append, [(names[0],)])
    assert run.started[0].wait(5)
    threads += in_threads(append, [(name,) for name in names[1:]])
    wait_until_queued(runner, len(names) - 1)
    first_run.set()
    return threads


def test_the_next_batch_runs_while_a_batch_finishes_and_callers_hear_after_both() -> None:
    run, finish = FakeTransactions(), HeldFinish()
    runner = pipeline(run, finish)
    outcomes: dict[str, Any] = {}

    threads = two_behind_a_held_one(run, runner, ["x", "a", "b"], outcomes)
    # "x" is being finished; meanwhile "a" leads a batch with "b", which runs and finishes too
    deadline = time.monotonic() + 5
    while len(finish.batches) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert finish.batches == [["x"], ["a", "b"]]
    assert outcomes == {}  # neither the leaders nor the follower "b" told before the finish
    finish.release.set()
    for thread in threads:
        thread.join(10)

    assert outcomes == {name: [{"id": name, "finished": True}] for name in ("x", "a", "b")}


def test_a_failed_second_stage_fails_each_caller_of_its_batch_with_its_own_error() -> None:
    run, finish = FakeTransactions(), HeldFinish()
    runner = pipeline(run, finish)
    finish.release.set()
    finish.fail_with = Unavailable("disk full (simulated)")
    outcomes: dict[str, Any] = {}

    for thread in two_behind_a_held_one(run, runner, ["c0", "c1", "c2"], outcomes):
        thread.join(10)

    assert finish.batches == [["c0"], ["c1", "c2"]]
    errors = [outcomes[name] for name in ("c0", "c1", "c2")]
    assert all(isinstance(e, Unavailable) and "disk full" in str(e) for e in errors)
    assert errors[1] is not errors[2]  # the two callers of one batch raise their own


def test_close_waits_for_a_batch_still_finishing() -> None:
    run, finish = FakeTransactions(), HeldFinish()
    runner = pipeline(run, finish)
    [caller] = in_threads(runner.submit, [(["in-flight"],)])
    assert finish.started.wait(5)

    closer = threading.Thread(target=runner.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # the lead was handed on, but the batch is not finished
    finish.release.set()
    closer.join(10)
    caller.join(10)
    assert not closer.is_alive()


# --- filling a batch under load ---------------------------------------------------------


def filling_writer(commit: FakeTransactions, fill_wait: float, max_batch: int = 500) -> Any:
    return GroupRunner(
        commit,  # type: ignore[arg-type]
        max_batch=max_batch,
        wait_timeout=10.0,
        name="the explainer",
        work="explanation",
        fill_wait=fill_wait,
    )


@pytest.fixture
def long_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runners remember their batches for a minute: a slow machine's pauses between the batch
    of three and the next leader do not make it forget the load."""
    monkeypatch.setattr("explainer.group_runner.RECENT_S", 60.0)


def after_a_batch_of_three(commit: FakeTransactions, runner: GroupCommitWriter) -> None:
    """Run ["x"] alone, then "a", "b", "c" together (they queued behind it)."""
    outcomes: dict[str, Any] = {}
    held = commit.hold(0)
    threads = in_threads(appender(runner, outcomes), [("x",)])
    assert commit.started[0].wait(5)
    threads += in_threads(appender(runner, outcomes), [(name,) for name in "abc"])
    wait_until_queued(runner, 3)
    held.set()
    for thread in threads:
        thread.join(10)
    assert commit.batches == [[["x"]], [["a"], ["b"], ["c"]]]


def test_callers_one_at_a_time_never_wait_for_a_batch_to_fill() -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=30.0)

    started = time.monotonic()
    for name in ("a", "b", "c"):
        assert runner.submit([name]) == [{"id": name}]

    assert time.monotonic() - started < 5  # not 30 s each
    assert commit.batches == [[["a"]], [["b"]], [["c"]]]


def test_after_a_batch_of_three_a_leader_waits_for_three_callers(long_memory: None) -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=30.0)
    after_a_batch_of_three(commit, runner)
    outcomes: dict[str, Any] = {}
    append = appender(runner, outcomes)

    threads = in_threads(append, [("d",)])
    wait_until_queued(runner, 1)
    threads += in_threads(append, [("e",)])
    wait_until_queued(runner, 2)
    assert not commit.started[2].wait(0.2)  # "d" leads, waiting for a third caller
    threads += in_threads(append, [("f",)])
    for thread in threads:
        thread.join(10)

    assert sorted(group[0] for group in commit.batches[2]) == ["d", "e", "f"]
    assert outcomes == {name: [{"id": name}] for name in "def"}


def test_a_leader_waits_no_longer_than_the_fill_wait(long_memory: None) -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=0.3)
    after_a_batch_of_three(commit, runner)

    started = time.monotonic()
    assert runner.submit(["alone"]) == [{"id": "alone"}]

    assert 0.3 <= time.monotonic() - started < 5
    assert commit.batches[2] == [["alone"]]


def test_a_full_batch_runs_without_waiting(long_memory: None) -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=30.0, max_batch=3)
    after_a_batch_of_three(commit, runner)

    started = time.monotonic()
    assert runner.submit(["d", "e", "f"]) == [{"id": name} for name in "def"]

    assert time.monotonic() - started < 5


def test_the_wait_forgets_batches_older_than_half_a_second() -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=30.0)
    after_a_batch_of_three(commit, runner)
    time.sleep(RECENT_S + 0.1)

    started = time.monotonic()
    assert runner.submit(["after a quiet spell"]) == [{"id": "after a quiet spell"}]

    assert time.monotonic() - started < 5


def test_a_runner_without_a_fill_wait_keeps_no_history_of_its_batches() -> None:
    runner = writer(FakeTransactions())

    for i in range(5):
        runner.submit([f"r{i}"])

    assert not runner._recent  # a long-running archive writer must not grow it without end


def test_close_ends_a_leaders_wait_to_fill(long_memory: None) -> None:
    commit = FakeTransactions()
    runner = filling_writer(commit, fill_wait=30.0)
    after_a_batch_of_three(commit, runner)
    outcomes: dict[str, Any] = {}
    [caller] = in_threads(appender(runner, outcomes), [("last",)])
    wait_until_queued(runner, 1)

    started = time.monotonic()
    runner.close()
    caller.join(10)

    assert time.monotonic() - started < 5  # not the 30 s fill wait
    assert outcomes == {"last": [{"id": "last"}]}
