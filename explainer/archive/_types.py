"""The archive's small value types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Kind = Literal["explanation", "erasure", "case_opened", "review_decision", "checkpoint"]
KINDS: tuple[Kind, ...] = ("explanation", "erasure", "case_opened", "review_decision", "checkpoint")
Decision = Literal["upheld", "overturned", "amended"]
DECISIONS: tuple[Decision, ...] = ("upheld", "overturned", "amended")
CaseStatus = Literal["open", "closed"]
CASE_STATUSES: tuple[CaseStatus, ...] = ("open", "closed")
OpenedBy = Literal["customer", "system"]
OPENED_BY: tuple[OpenedBy, ...] = ("customer", "system")

#: A record as the archive hands it out (public fields; ``payload``/``erased`` where read).
Record = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ArchiveEntry:
    """What the service hands to ``Archive.append`` for one explanation.

    ``payload`` is the explanation exactly as the API returns it; it is personal data and is
    stored encrypted. ``settings`` (method, output space, seed, ...) is public, so an auditor
    can replay the explanation. ``id`` defaults to a fresh uuid4 hex; pass the explanation's
    own id so record and response agree. ``review_reason``, when given, opens a review case
    on it (opened by "system") in the same transaction, so a flagged explanation is never
    archived without its case.
    """

    payload: Mapping[str, Any]
    kind: Literal["explanation"] = "explanation"
    customer_id: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    model_sha256: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    id: str | None = None
    review_reason: str | None = None


class BadRecord(TypedDict):
    """The first thing that failed verification. ``seq``/``id`` are None when the failure
    is not one record's (a bad signature, a file digest, the archive head)."""

    seq: int | None
    id: str | None
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    head: str | None
    first_bad: BadRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        first_bad = None if self.first_bad is None else dict(self.first_bad)
        return {"ok": self.ok, "records": self.records, "head": self.head, "first_bad": first_bad}


@dataclass(frozen=True)
class ArchiveStats:
    """Counters of this Archive object (this process): records appended through the
    group-commit writer and the transactions that committed them."""

    appended: int
    commits: int


def bad(seq: int | None, record_id: str | None, reason: str) -> BadRecord:
    return {"seq": seq, "id": record_id, "reason": reason}
