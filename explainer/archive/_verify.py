"""verify(): recompute every hash and link of the live archive and check every payload.

``first_bad`` is, in this order of preference: the first record (by seq) whose own fields,
hash or payload fail (an edited row names itself); else the first broken link (a missing,
renumbered or rewritten record, named where the chain breaks); else the archive head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, select

from ._canonical import record_hash
from ._chain import key_subject_of, latest_anchor, load_keys, payload_problem, public_of
from ._schema import head, records
from ._types import KINDS, BadRecord, VerifyReport, bad

_BATCH = 1000


def verify_archive(conn: Connection) -> VerifyReport:
    head_seq, head_hash = conn.execute(select(head.c.seq, head.c.hash)).one()
    anchor = latest_anchor(conn)
    checker = _ChainChecker(anchor)
    after: int | None = None
    while True:
        query = select(records).order_by(records.c.seq).limit(_BATCH)
        if after is not None:
            query = query.where(records.c.seq > after)
        rows = conn.execute(query).all()
        if not rows:
            break
        keys = load_keys(conn, {key_subject_of(row) for row in rows if row.payload is not None})
        for row in rows:
            checker.check(row, keys)
        after = int(rows[-1].seq)
    first_bad = checker.first_bad(int(head_seq), str(head_hash))
    return VerifyReport(first_bad is None, checker.count, str(head_hash), first_bad)


class _ChainChecker:
    def __init__(self, anchor: tuple[int, str] | None) -> None:
        self.count = 0
        self._anchor_ok = anchor is not None
        self._expected_seq, self._prev = (anchor or (0, ""))[0] + 1, (anchor or (0, ""))[1]
        self._first_self: BadRecord | None = None
        self._first_link: BadRecord | None = None
        # erased payloads waiting for the erasure event of their subject, which must follow
        self._unexplained: dict[str | None, BadRecord] = {}

    def check(self, row: Row[Any], keys: Mapping[str, bytes]) -> None:
        self.count += 1
        seq, record_id = int(row.seq), str(row.id)
        if self._first_self is None:
            reason = _own_problem(row, keys)
            if reason is not None:
                self._first_self = bad(seq, record_id, reason)
        if self._first_link is None:
            reason = self._link_problem(row, seq)
            if reason is not None:
                self._first_link = bad(seq, record_id, reason)
        self._track_erasures(row, seq, record_id)
        self._expected_seq, self._prev = seq + 1, str(row.hash)

    def _link_problem(self, row: Row[Any], seq: int) -> str | None:
        if not self._anchor_ok:
            return "the newest checkpoint's details are unreadable"
        if seq != self._expected_seq:
            return f"expected seq {self._expected_seq} here: records are missing or renumbered"
        if row.prev_hash != self._prev:
            return (
                f"prev_hash does not match the hash of record seq {seq - 1}: "
                "one of the two was rewritten"
            )
        return None

    def _track_erasures(self, row: Row[Any], seq: int, record_id: str) -> None:
        if row.payload is None and row.payload_sha256 is not None:
            self._unexplained.setdefault(
                row.subject,
                bad(seq, record_id, "the payload was removed but its subject was never erased"),
            )
        if row.kind == "erasure" and row.subject is not None:
            self._unexplained.pop(row.subject, None)

    def first_bad(self, head_seq: int, head_hash: str) -> BadRecord | None:
        own = [b for b in (self._first_self, *self._unexplained.values()) if b is not None]
        if own:
            return min(own, key=lambda b: b["seq"] or 0)
        if self._first_link is not None:
            return self._first_link
        if head_seq != self._expected_seq - 1 or head_hash != self._prev:
            return bad(
                head_seq,
                None,
                f"the archive head (seq {head_seq}) does not match the last record "
                f"(seq {self._expected_seq - 1}): records at the end were removed or the head "
                "was edited",
            )
        return None


def _own_problem(row: Row[Any], keys: Mapping[str, bytes]) -> str | None:
    if row.kind not in KINDS:
        return f"unknown kind {row.kind!r}"
    try:
        public = public_of(row)
    except ValueError:
        return "settings or details are not valid JSON: the row was edited"
    if record_hash(public) != row.hash:
        return "the hash does not match the record's fields: the row was edited"
    return payload_problem(row, keys)[1]
