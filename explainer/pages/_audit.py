"""The archive for auditors: filter, open a record, export a signed bundle, verify."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from explainer.api._state import service
from explainer.exceptions import NotFound, ValidationError
from explainer.pages._auth import current_user, page_requires
from explainer.pages._blueprint import bp
from explainer.pages._charts import driver_bars, percent
from explainer.validation import ReviewDecisionRequest, parse, parse_datetime

#: Records per page of the archive listing.
PAGE_SIZE = 25
KINDS = ("explanation", "case_opened", "review_decision", "erasure", "checkpoint")
#: What an auditor may decide on a review case (``ReviewDecisionRequest``).
DECISIONS = ("upheld", "overturned", "amended")


@dataclass(frozen=True)
class AuditFilter:
    """The filter form's values, as typed, and as the archive takes them."""

    model: str = ""
    customer_id: str = ""
    since: str = ""
    until: str = ""
    kind: str = ""

    @classmethod
    def from_values(cls, values: MultiDict[str, str]) -> AuditFilter:
        return cls(
            **{
                key: values.get(key, "").strip()
                for key in ("model", "customer_id", "since", "until", "kind")
            }
        )

    def query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def window(self) -> tuple[datetime | None, datetime | None]:
        """``since`` inclusive; ``until`` a date means through the end of that day (UTC)."""
        since = parse_datetime(self.since or None, "since")
        until = parse_datetime(self.until or None, "until")
        if until is not None and len(self.until) == 10:
            until += timedelta(days=1)
        if since is not None and until is not None and since >= until:
            raise ValidationError.for_field("until", "must be on or after the 'from' date")
        return since, until

    def archive_filters(self) -> dict[str, Any]:
        since, until = self.window()
        if self.kind and self.kind not in KINDS:
            raise ValidationError.for_field("kind", f"must be one of {', '.join(KINDS)}")
        if len(self.customer_id) > 128:
            raise ValidationError.for_field("customer_id", "must be at most 128 characters")
        return {
            "model": self.model or None,
            "customer_id": self.customer_id or None,
            "since": since,
            "until": until,
            "kind": self.kind or None,
        }


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    payload = record.get("payload") or {}
    model = record.get("model") or {}
    prediction = payload.get("prediction") or {}
    return {
        "id": record["id"],
        "seq": record["seq"],
        "kind": record["kind"].replace("_", " "),
        "created_at": record["created_at"],
        "model": f"{model['name']}@{model['version']}" if model.get("name") else "",
        "customer_id": payload.get("customer_id") or "",
        "score": percent(prediction["score"]) if "score" in prediction else "",
        "band": prediction.get("band", ""),
        "erased": record.get("erased", False),
    }


def _audit_url(query: dict[str, str]) -> str:
    return url_for("pages.audit") + ("?" + urlencode(query) if query else "")


def _render(
    *,
    status: int = 200,
    verify: dict[str, Any] | None = None,
    decided: dict[str, Any] | None = None,
    decision_errors: list[str] | None = None,
    filter_values: Any = None,
) -> tuple[str, int]:
    wanted = AuditFilter.from_values(filter_values if filter_values is not None else request.args)
    errors: list[str] = []
    items: list[dict[str, Any]] = []
    next_url = None
    cursor = request.args.get("cursor") or None
    try:
        records, next_cursor = service().oversight.records(
            **wanted.archive_filters(), limit=PAGE_SIZE, cursor=cursor
        )
        items = [_summary(r) for r in records]
        if next_cursor is not None:
            next_url = _audit_url({**wanted.query(), "cursor": next_cursor})
    except ValidationError as exc:
        errors = [f"{e.field}: {e.message}" for e in exc.errors] or [exc.message]
        status = 422
    page = render_template(
        "pages/audit.html",
        wanted=wanted,
        items=items,
        next_url=next_url,
        first_url=_audit_url(wanted.query()) if cursor else None,
        errors=errors,
        verify=verify,
        decided=decided,
        decision_errors=decision_errors or [],
        decisions=DECISIONS,
        cases=service().oversight.reviews("open"),
        models=[r.name for r in service().models()],
        kinds=KINDS,
    )
    return page, status


@bp.get("/audit")
@page_requires("auditor")
def audit() -> tuple[str, int]:
    return _render()


@bp.post("/audit/verify")
@page_requires("auditor")
def verify() -> tuple[str, int]:
    return _render(verify=service().oversight.verify(), filter_values=request.form)


@bp.post("/audit/cases/<case_id>/decision")
@page_requires("auditor")
def decide(case_id: str) -> tuple[str, int]:
    """An auditor closes a review case: upheld, overturned or amended, with a note."""
    form = {"decision": request.form.get("decision", ""), "note": request.form.get("note", "")}
    try:
        body = parse(ReviewDecisionRequest, {**form, "note": form["note"].strip()})
    except ValidationError as exc:
        problems = [f"{e.field}: {e.message}" for e in exc.errors] or [exc.message]
        return _render(status=422, decision_errors=problems, filter_values=request.form)
    user = current_user()
    assert user is not None  # page_requires signed the user in
    case = service().oversight.decide(case_id, body.decision, body.note, user.key_id)
    return _render(decided=case, filter_values=request.form)


@bp.post("/audit/export")
@page_requires("auditor")
def export() -> Response | tuple[str, int]:
    wanted = AuditFilter.from_values(request.form)
    try:
        since, until = wanted.window()
    except ValidationError:
        return _render(filter_values=request.form, status=422)
    buffer = io.BytesIO()
    service().oversight.export(buffer, model=wanted.model or None, since=since, until=until)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        buffer.getvalue(),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="crm-explain-audit-{stamp}.zip"'},
    )


@bp.get("/audit/records/<record_id>")
@page_requires("auditor")
def record(record_id: str) -> str:
    found = service().oversight.record(record_id)
    payload = found.get("payload") or {}
    bars = []
    if found["kind"] == "explanation" and payload.get("attributions"):
        model = found.get("model") or {}
        try:
            schema = service().record(model["name"], model["version"]).schema
        except NotFound:  # the model left the registry; the record still shows
            schema = None
        bars = driver_bars(payload["attributions"], schema, payload.get("output", "probability"))
    public = {k: v for k, v in found.items() if k not in ("payload",)}
    return render_template(
        "pages/record.html",
        record=found,
        summary=_summary(found),
        payload=payload,
        bars=bars,
        public_json=json.dumps(public, indent=2, sort_keys=True, default=str),
        payload_json=json.dumps(payload, indent=2, sort_keys=True, default=str),
    )
