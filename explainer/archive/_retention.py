"""Erasure (crypto-shredding) and pruning. Each runs inside the caller's write transaction,
with the chain head locked, and archives its own event."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select, update

from explainer.exceptions import IntegrityError

from ._chain import append_prepared, delete_orphan_keys, latest_anchor, prepare_event
from ._schema import cases, records, subject_keys


def erase_subject(conn: Connection, head_state: tuple[int, str], subject: str, now: str) -> int:
    """Delete the subject's data key and payload ciphertexts, blank its case texts, archive
    an "erasure" event naming the pseudonym and the count. Returns the records erased."""
    erased = conn.execute(
        update(records)
        .where(records.c.subject == subject, records.c.payload.is_not(None))
        .values(payload=None)
    ).rowcount
    conn.execute(delete(subject_keys).where(subject_keys.c.subject == subject))
    conn.execute(update(cases).where(cases.c.subject == subject).values(reason=None, note=None))
    details = {"subject": subject, "erased": erased}
    event = prepare_event("erasure", subject=subject, details=details)
    append_prepared(conn, head_state, [event], now)
    return int(erased)


def prune(conn: Connection, head_state: tuple[int, str], cutoff: str, now: str) -> int:
    """Delete the longest prefix of the chain created before ``cutoff`` and archive a
    "checkpoint" event with the seq and hash of its last record. Returns the records deleted."""
    anchor = latest_anchor(conn)
    if anchor is None:
        raise IntegrityError("the newest checkpoint is unreadable; run verify")
    first_kept = conn.scalar(select(func.min(records.c.seq)).where(records.c.created_at >= cutoff))
    through = head_state[0] if first_kept is None else int(first_kept) - 1
    if through <= anchor[0]:
        return 0
    through_hash = conn.scalar(select(records.c.hash).where(records.c.seq == through))
    if through_hash is None:
        raise IntegrityError(f"cannot prune: record seq {through} is missing; run verify")
    pruned = conn.execute(delete(records).where(records.c.seq <= through)).rowcount
    details = {
        "pruned_through_seq": through,
        "pruned_through_hash": str(through_hash),
        "pruned": pruned,
        "before": cutoff,
    }
    append_prepared(
        conn, head_state, [prepare_event("checkpoint", subject=None, details=details)], now
    )
    delete_orphan_keys(conn)
    return int(pruned)
