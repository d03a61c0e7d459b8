"""Group commit: one writer thread turns the appends waiting at a moment into one transaction.

A caller enqueues its records and blocks; the writer takes everything queued (up to
``max_batch`` records), commits it in one transaction and wakes each caller with its
stored records or its error. While one batch commits, the next one gathers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from explainer.exceptions import ExplainerError, Unavailable

from ._chain import Prepared
from ._types import Record

#: Commits a batch: one outcome per group, in order (stored records, or that group's error).
CommitBatch = Callable[[list[Sequence[Prepared]]], list[list[Record] | ExplainerError]]


@dataclass
class _Pending:
    items: Sequence[Prepared]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Record] | None = None
    error: BaseException | None = None


class GroupCommitWriter:
    def __init__(self, commit: CommitBatch, *, max_batch: int, wait_timeout: float) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._wait_timeout = wait_timeout
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.appended = 0
        self.commits = 0
        self._thread = threading.Thread(
            target=self._run, name="crm-explain-archive-writer", daemon=True
        )
        self._thread.start()

    def submit(self, items: Sequence[Prepared]) -> list[Record]:
        """Block until ``items`` are committed; their stored public records."""
        pending = _Pending(items)
        with self._lock:
            if self._closed:
                raise Unavailable("the archive is closed")
            self._queue.put(pending)
        if not pending.done.wait(self._wait_timeout):
            raise Unavailable(
                f"the archive did not confirm the write within {self._wait_timeout:g} s"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._commit_batch(batch)
            if stop:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch, size = [first], len(first.items)
        while size < self._max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if more is None:
                return batch, True
            batch.append(more)
            size += len(more.items)
        return batch, False

    def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._commit([pending.items for pending in batch])
        except Exception as exc:  # every caller in the batch gets its own error, chained
            for pending in batch:
                pending.error = _batch_error(exc)
                pending.done.set()
            return
        self.commits += 1
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, ExplainerError):
                pending.error = outcome
            else:
                pending.result = outcome
                self.appended += len(outcome)
            pending.done.set()


def _batch_error(exc: Exception) -> BaseException:
    if isinstance(exc, Unavailable):
        error: BaseException = Unavailable(exc.message)
    elif isinstance(exc, ExplainerError):
        error = type(exc)(exc.message)
    else:
        error = RuntimeError(f"the archive writer failed: {exc!r}")
    error.__cause__ = exc
    return error
