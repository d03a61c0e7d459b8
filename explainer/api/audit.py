"""The archive for auditors: list, read, export signed bundles, verify."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request

from explainer.api._state import json_body, requires, service
from explainer.exceptions import ValidationError
from explainer.validation import ExportRequest, parse, parse_datetime, parse_limit

bp = Blueprint("audit", __name__)


@bp.get("/v1/audit/explanations")
@requires("auditor")
def list_explanations() -> dict[str, Any]:
    args = request.args
    items, next_cursor = service().oversight.records(
        model=args.get("model") or None,
        customer_id=args.get("customer_id") or None,
        since=parse_datetime(args.get("since"), "since"),
        until=parse_datetime(args.get("until"), "until"),
        limit=parse_limit(args.get("limit")),
        cursor=args.get("cursor") or None,
        kind=_kind(args.get("kind")),
    )
    return {"items": items, "next_cursor": next_cursor}


@bp.get("/v1/audit/explanations/<record_id>")
@requires("auditor")
def get_explanation(record_id: str) -> dict[str, Any]:
    return service().oversight.record(record_id)


@bp.post("/v1/audit/exports")
@requires("auditor")
def export() -> Response:
    body = json_body() if request.get_data(cache=True) else {}
    wanted = parse(ExportRequest, body)
    buffer = io.BytesIO()
    service().oversight.export(buffer, model=wanted.model, since=wanted.since, until=wanted.until)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        buffer.getvalue(),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="crm-explain-audit-{stamp}.zip"'},
    )


@bp.get("/v1/audit/verify")
@requires("auditor")
def verify() -> dict[str, Any]:
    return service().oversight.verify()


KINDS = ("explanation", "erasure", "case_opened", "review_decision", "checkpoint", "all")


def _kind(raw: str | None) -> str | None:
    """Explanations by default; ``kind=all`` lists every event of the chain."""
    kind = raw or "explanation"
    if kind not in KINDS:
        raise ValidationError.for_field("kind", f"must be one of {', '.join(KINDS)}")
    return None if kind == "all" else kind
