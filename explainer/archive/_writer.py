"""Group commit, leader and followers: the appends waiting at a moment share one transaction.

A caller queues its records. When no commit is under way it becomes the leader: it takes
everything queued (up to ``max_batch`` records), commits it in one transaction in its own
thread, and wakes each follower with its stored records or its error. Callers that queue
meanwhile wait as followers; when the leader is done, the first of them leads the next batch.
Alone, a caller commits without handing its records to another thread; under load, the
callers of a batch share one transaction.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from explainer.exceptions import ExplainerError, Unavailable

from ._chain import Prepared
from ._types import Record

#: Commits a batch: one outcome per group, in order (stored records, or that group's error).
CommitBatch = Callable[[list[Sequence[Prepared]]], list[list[Record] | ExplainerError]]


@dataclass(eq=False)
class _Pending:
    items: Sequence[Prepared]
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # set (under the lock) when this caller is to lead the next batch
    done: bool = False
    result: list[Record] | None = None
    error: BaseException | None = None


class GroupCommitWriter:
    def __init__(self, commit: CommitBatch, *, max_batch: int, wait_timeout: float) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._leader_done = threading.Condition(self._lock)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._leading = False  # invariant: the queue is empty unless a caller leads
        self._closed = False
        self.appended = 0
        self.commits = 0

    def submit(self, items: Sequence[Prepared]) -> list[Record]:
        """Block until ``items`` are committed; their stored public records."""
        pending = _Pending(items)
        with self._lock:
            if self._closed:
                raise Unavailable("the archive is closed")
            self._queue.append(pending)
            if not self._leading:
                self._leading = pending.leads = True
        try:
            if not pending.leads:
                self._follow(pending)
            if pending.leads:
                self._lead()
        except BaseException:  # interrupted: never leave the lead with a caller that is gone
            self._withdraw(pending)
            raise
        if pending.error is not None:
            raise pending.error
        if pending.result is None:  # its leader was interrupted mid-commit
            raise Unavailable("the archive writer stopped before this write was confirmed")
        return pending.result

    def close(self) -> None:
        """Refuse new appends; return once what is queued is committed."""
        with self._lock:
            self._closed = True
            while self._leading:
                self._leader_done.wait()

    def _follow(self, pending: _Pending) -> None:
        """Wait to be committed by a leader, or to be made the leader. A caller still queued
        after ``wait_timeout`` gives up, and is never written; one already in a leader's batch
        waits up to ``wait_timeout`` more for that commit's outcome, so that a slow commit is
        not reported as failed, but a hung one does not hold the caller for ever."""
        if pending.wake.wait(self._wait_timeout):
            return
        with self._lock:
            if pending in self._queue and not pending.leads:
                self._queue.remove(pending)
                raise Unavailable(
                    f"the archive did not confirm the write within {self._wait_timeout:g} s"
                )
        if not pending.wake.wait(self._wait_timeout):
            raise Unavailable(
                f"the archive's commit of this write did not end within "
                f"{2 * self._wait_timeout:g} s; it may yet be stored"
            )

    def _withdraw(self, pending: _Pending) -> None:
        """Take an interrupted caller out of the queue, handing on the lead if it had it."""
        with self._lock:
            if pending not in self._queue:  # in a batch: its leader goes on without it
                return
            self._queue.remove(pending)
            if pending.leads:
                self._pass_lead()

    def _pass_lead(self) -> None:
        """Under the lock: the first caller queued leads next, or nobody leads."""
        if self._queue:
            successor = self._queue[0]
            successor.leads = True
            successor.wake.set()
        else:
            self._leading = False
            self._leader_done.notify_all()

    def _lead(self) -> None:
        """Commit the batch at the head of the queue (the leader's own records are first),
        then hand the lead to the next caller queued, if any."""
        with self._lock:
            batch = [self._queue.popleft()]
            size = len(batch[0].items)
            while self._queue and size + len(self._queue[0].items) <= self._max_batch:
                size += len(self._queue[0].items)
                batch.append(self._queue.popleft())
        try:
            self._commit_batch(batch)
        finally:
            with self._lock:
                self._pass_lead()
            for pending in batch[1:]:
                pending.wake.set()

    def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._commit([pending.items for pending in batch])
        except Exception as exc:  # every caller in the batch gets its own error, chained
            for pending in batch:
                pending.error, pending.done = _batch_error(exc), True
            return
        self.commits += 1
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, ExplainerError):
                pending.error = outcome
            else:
                pending.result = outcome
                self.appended += len(outcome)
            pending.done = True


def _batch_error(exc: Exception) -> BaseException:
    if isinstance(exc, Unavailable):
        error: BaseException = Unavailable(exc.message)
    elif isinstance(exc, ExplainerError):
        error = type(exc)(exc.message)
    else:
        error = RuntimeError(f"the archive writer failed: {exc!r}")
    error.__cause__ = exc
    return error
