"""Leader and followers: the work of the callers waiting at a moment is done as one batch.

A caller queues its work. When no batch is under way it becomes the leader: it takes
everything queued (up to ``max_batch`` items, ``len`` of each caller's work), runs it as one
batch in its own thread, and wakes each follower with its result or its error. Callers that
queue meanwhile wait as followers; when the leader is done, the first of them leads the next
batch. Alone, a caller runs its work without handing it to another thread; under load, the
callers of a batch share its fixed costs. The archive commits its appends this way (group
commit), and the service computes concurrent explanations of one model together.

Callers that arrive a moment apart, as the clients of a busy server do once their previous
answers are out, would lead batches of one or two. With ``fill_wait``, a leader that saw
several callers in one batch lately waits that long at most for as many to queue before it
runs (dynamic batching, as inference servers do with a queue delay). Callers that come one at a
time never wait, nor does the first one after half a second without a batch of several.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from explainer.exceptions import ExplainerError, Unavailable

Work = TypeVar("Work", bound=Sized)
Result = TypeVar("Result")

#: Runs a batch: one outcome per caller's work, in order (its result, or its own error).
RunBatch = Callable[[list[Work]], Sequence[Result | Exception]]
#: How far back a leader looks for the most callers a batch held, in seconds.
RECENT_S = 0.5


@dataclass(eq=False)
class _Pending(Generic[Work, Result]):
    items: Work
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # set (under the lock) when this caller is to lead the next batch
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


class GroupRunner(Generic[Work, Result]):
    """Runs the work of concurrent callers in batches. ``name`` and ``work`` word the errors
    ("the archive", "write"). A follower waits at most ``wait_timeout`` seconds to be taken
    into a batch (None: as long as it takes).

    ``finish``, when given, is a second stage: the leader hands the lead on once ``run`` is
    done, then finishes its batch (given the work and results that ``run`` gave) while the
    next leader runs the next batch; the batch's callers hear of their outcome after both.

    ``fill_wait``: the longest a leader waits, in seconds, for as many callers to queue as the
    largest batch of the last ``RECENT_S`` seconds held (or for ``max_batch`` items); 0 (the
    default) runs whatever is queued at once."""

    def __init__(
        self,
        run: RunBatch[Work, Result],
        *,
        max_batch: int,
        wait_timeout: float | None,
        name: str,
        work: str,
        finish: RunBatch[tuple[Work, Result], Result] | None = None,
        fill_wait: float = 0.0,
    ) -> None:
        self._run = run
        self._finish = finish
        self._max_batch = max_batch
        self._wait_timeout = wait_timeout
        self._fill_wait = fill_wait
        self._name = name
        self._work = work
        self._lock = threading.Lock()
        self._leader_done = threading.Condition(self._lock)
        self._arrived = threading.Condition(self._lock)  # a caller queued
        #: (monotonic time, callers) of the batches taken lately, oldest first
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._queue: collections.deque[_Pending[Work, Result]] = collections.deque()
        self._leading = False  # invariant: the queue is empty unless a caller leads
        self._finishing = 0  # batches in their second stage
        self._closed = False
        self.items_done = 0  # of work whose callers got a result
        self.batches_run = 0  # that gave at least one caller a result

    def submit(self, items: Work) -> Result:
        """Block until ``items`` are done; their result, or the error raised for them."""
        pending: _Pending[Work, Result] = _Pending(items)
        with self._lock:
            if self._closed:
                raise Unavailable(f"{self._name} is closed")
            self._queue.append(pending)
            if not self._leading:
                self._leading = pending.leads = True
            else:
                self._arrived.notify()  # a leader may be waiting for its batch to fill
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
        if not pending.done:  # its leader was interrupted mid-batch
            raise Unavailable(f"{self._name} stopped before this {self._work} was confirmed")
        return pending.result  # type: ignore[return-value]  # done without an error

    def close(self) -> None:
        """Refuse new work; return once what is queued is done."""
        with self._lock:
            self._closed = True
            self._arrived.notify_all()  # a leader waiting to fill runs what it has
            while self._leading or self._finishing:
                self._leader_done.wait()

    def _follow(self, pending: _Pending[Work, Result]) -> None:
        """Wait to be done by a leader, or to be made the leader. A caller still queued
        after ``wait_timeout`` gives up, and its work is never done; one already in a leader's
        batch waits up to ``wait_timeout`` more for that batch's outcome, so that a slow batch
        is not reported as failed, but a hung one does not hold the caller for ever."""
        timeout = self._wait_timeout
        if pending.wake.wait(timeout):
            return
        assert timeout is not None
        with self._lock:
            if pending in self._queue and not pending.leads:
                self._queue.remove(pending)
                raise Unavailable(
                    f"{self._name} did not confirm the {self._work} within {timeout:g} s"
                )
        if not pending.wake.wait(timeout):
            raise Unavailable(
                f"{self._name}'s batch with this {self._work} did not end within "
                f"{2 * timeout:g} s; the {self._work} may yet be done"
            )

    def _withdraw(self, pending: _Pending[Work, Result]) -> None:
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
        """Run the batch at the head of the queue (the leader's own work is first), then hand
        the lead to the next caller queued, if any."""
        with self._lock:
            self._wait_to_fill()
            batch = [self._queue.popleft()]
            size = len(batch[0].items)
            while self._queue and size + len(self._queue[0].items) <= self._max_batch:
                size += len(self._queue[0].items)
                batch.append(self._queue.popleft())
            if self._fill_wait > 0:  # _wait_to_fill drops what is older than RECENT_S
                self._recent.append((time.monotonic(), len(batch)))
        finish = None  # the second stage, once the first has run
        try:
            try:
                outcomes = self._outcomes(self._run, [pending.items for pending in batch])
                finish = self._finish
            finally:
                with self._lock:
                    self._pass_lead()
                    self._finishing += finish is not None
            if finish is not None:
                try:
                    outcomes = self._finished(finish, batch, outcomes)
                finally:
                    with self._lock:
                        self._finishing -= 1
                        self._leader_done.notify_all()
            self._settle(batch, outcomes)
        finally:
            for pending in batch[1:]:
                pending.wake.set()

    def _wait_to_fill(self) -> None:
        """Under the lock, before a leader takes its batch: wait up to ``fill_wait`` for as
        many callers as the largest recent batch held, or for a full batch."""
        if self._fill_wait <= 0:
            return
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent.popleft()
        expected = max((callers for _, callers in self._recent), default=1)
        deadline = now + self._fill_wait
        while (
            not self._closed
            and len(self._queue) < expected
            and self._queued_items() < self._max_batch
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.wait(left)

    def _queued_items(self) -> int:
        return sum(len(pending.items) for pending in self._queue)

    def _finished(
        self,
        finish: RunBatch[tuple[Work, Result], Result],
        batch: list[_Pending[Work, Result]],
        outcomes: list[Result | Exception],
    ) -> list[Result | Exception]:
        """The outcomes once ``finish`` has finished the batch's results; errors stay."""
        ran = [
            (pending.items, outcome)
            for pending, outcome in zip(batch, outcomes, strict=True)
            if not isinstance(outcome, Exception)
        ]
        finished = iter(self._outcomes(finish, ran) if ran else [])
        return [o if isinstance(o, Exception) else next(finished) for o in outcomes]

    def _outcomes(self, stage: RunBatch[Any, Result], work: list[Any]) -> list[Result | Exception]:
        """One outcome per item of ``work``; when ``stage`` fails, each gets its own error
        (a caller alone gets the error itself)."""
        try:
            return list(stage(work))
        except Exception as exc:
            if len(work) == 1:
                return [exc]
            return [self._batch_error(exc) for _ in work]  # each its own, chained

    def _settle(
        self, batch: list[_Pending[Work, Result]], outcomes: list[Result | Exception]
    ) -> None:
        done = 0
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                pending.error = outcome
            else:
                pending.result = outcome
                done += len(pending.items)
            pending.done = True
        with self._lock:  # leaders settle concurrently once batches finish in a second stage
            self.items_done += done
            self.batches_run += done > 0

    def _batch_error(self, exc: Exception) -> Exception:
        """A shallow copy of ``exc`` (its message and fields) for one caller: each raises its
        own."""
        error: Exception
        if isinstance(exc, ExplainerError):
            error = copy.copy(exc)
        else:
            error = RuntimeError(f"{self._name} failed: {exc!r}")
        error.__cause__ = exc
        return error
