"""Contest and human review. Cases live in their own table (their status changes); each step
is also an event in the chain: "case_opened" and "review_decision". The reason and the note
may be personal, so the events carry them in the encrypted payload under the subject's key.

Each function runs inside the caller's write transaction, with the chain head locked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select, update

from explainer.exceptions import Conflict, NotFound

from ._chain import Prepared, append_prepared, new_id, prepare_event
from ._schema import cases, records
from ._types import CaseStatus, Decision, OpenedBy


def open_case(
    conn: Connection,
    head_state: tuple[int, str],
    *,
    explanation_id: str,
    reason: str,
    opened_by: OpenedBy,
    request_id: str | None,
    now: str,
) -> dict[str, Any]:
    explained = conn.execute(
        select(records).where(records.c.id == explanation_id, records.c.kind == "explanation")
    ).one_or_none()
    if explained is None:
        raise NotFound(f"explanation {explanation_id} not found")
    # One open case per explanation and opener: a customer may contest a decision the system
    # has already sent to review (their reason reaches the reviewer), but not twice at once.
    open_id = conn.scalar(
        select(cases.c.case_id).where(
            cases.c.explanation_id == explanation_id,
            cases.c.status == "open",
            cases.c.opened_by == opened_by,
        )
    )
    if open_id is not None:
        raise Conflict(f"explanation {explanation_id} already has an open case ({open_id})")
    event = case_opened(
        explanation_id=explanation_id,
        subject=explained.subject,
        model=model_of(explained),
        reason=reason,
        opened_by=opened_by,
        request_id=request_id,
    )
    append_prepared(conn, head_state, [event], now)
    return get_case(conn, event.details["case_id"])


def case_opened(
    *,
    explanation_id: str,
    subject: str | None,
    model: dict[str, Any] | None,
    reason: str,
    opened_by: OpenedBy,
    request_id: str | None,
) -> Prepared:
    """The "case_opened" event of a new case; appending it opens the case
    (``_chain.seal``), in the same transaction."""
    details = {"case_id": new_id(), "explanation_id": explanation_id, "opened_by": opened_by}
    return prepare_event(
        "case_opened",
        subject=subject,
        details=details,
        model=model,
        payload={"reason": reason},
        request_id=request_id,
        opens_case={**details, "subject": subject, "reason": reason},
    )


def decide_case(
    conn: Connection,
    head_state: tuple[int, str],
    *,
    case_id: str,
    decision: Decision,
    note: str,
    decided_by: str | None,
    now: str,
) -> dict[str, Any]:
    case = conn.execute(select(cases).where(cases.c.case_id == case_id)).one_or_none()
    if case is None:
        raise NotFound(f"review case {case_id} not found")
    if case.status != "open":
        raise Conflict(f"review case {case_id} was already decided ({case.decision})")
    explained = conn.execute(
        select(records).where(records.c.id == case.explanation_id)
    ).one_or_none()  # None once pruned
    details = {
        "case_id": case_id,
        "explanation_id": case.explanation_id,
        "decision": decision,
        "decided_by": decided_by,
    }
    event = prepare_event(
        "review_decision",
        subject=case.subject,
        details=details,
        model=None if explained is None else model_of(explained),
        payload={"note": note},
    )
    [stored] = append_prepared(conn, head_state, [event], now)
    closed = {"status": "closed", "decision": decision, "note": note, "decided_by": decided_by}
    conn.execute(
        update(cases)
        .where(cases.c.case_id == case_id)
        .values(**closed, decided_at=now, decided_seq=stored["seq"])
    )
    return get_case(conn, case_id)


def get_case(conn: Connection, case_id: str) -> dict[str, Any]:
    row = conn.execute(select(cases).where(cases.c.case_id == case_id)).one_or_none()
    if row is None:
        raise NotFound(f"review case {case_id} not found")
    return _case_dict(row)


def list_cases(conn: Connection, status: CaseStatus | None) -> list[dict[str, Any]]:
    query = select(cases).order_by(cases.c.opened_seq)
    if status is not None:
        query = query.where(cases.c.status == status)
    return [_case_dict(row) for row in conn.execute(query)]


def model_of(row: Row[Any]) -> dict[str, Any] | None:
    """The model of an archived record, for the events about it."""
    if row.model_name is None:
        return None
    version = None if row.model_version is None else int(row.model_version)
    return {"name": row.model_name, "version": version, "sha256": row.model_sha256}


def _case_dict(row: Row[Any]) -> dict[str, Any]:
    return {
        "case_id": row.case_id,
        "status": row.status,
        "explanation_id": row.explanation_id,
        "opened_by": row.opened_by,
        "reason": row.reason,  # None once the subject is erased
        "opened_at": row.opened_at,
        "decision": row.decision,
        "note": row.note,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at,
    }
