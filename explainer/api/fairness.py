"""Fairness audits and transparency reports (role analyst).

- ``POST /v1/models/{name}/fairness``: audit the model's decisions on the records sent (at most
  ``MAX_AUDIT_RECORDS``, 413 beyond; bodies up to ``MAX_AUDIT_BODY_BYTES``, more than other
  requests may carry);
- ``GET /v1/models/{name}/report?version=``: the transparency report of a version, as JSON;
- ``GET /v1/models/{name}/report.html?version=``: the same as one self-contained HTML page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from explainer.api._state import json_body, requires, service, state
from explainer.service import AuditRecord
from explainer.validation import (
    MAX_AUDIT_BODY_BYTES,
    MAX_AUDIT_RECORDS,
    parse_fairness_request,
    parse_version,
)

bp = Blueprint("fairness", __name__)

#: The HTML report loads nothing: no script, no image, no font, only its inline style.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@bp.before_request
def _allow_audit_sized_bodies() -> None:
    """A fairness audit carries thousands of records: more bytes than an explain request."""
    if request.endpoint == "fairness.fairness":
        request.max_content_length = max(state().settings.max_body_bytes, MAX_AUDIT_BODY_BYTES)


@bp.post("/v1/models/<name>/fairness")
@requires("analyst")
def fairness(name: str) -> dict[str, Any]:
    """Audit the model's decisions on the records sent, per protected attribute."""
    body = parse_fairness_request(json_body(), max_records=MAX_AUDIT_RECORDS)
    bounds = None
    if body.bounds is not None:
        from explainer.fairness import FairnessBounds

        bounds = FairnessBounds(**body.bounds.model_dump(exclude_none=True))
    return service().fairness(
        name,
        [AuditRecord(r.features, r.protected, r.label) for r in body.records],
        threshold=body.threshold,
        version=body.version,
        positive_classes=body.positive_classes,
        bounds=bounds,
    )


@bp.get("/v1/models/<name>/report")
@requires("analyst")
def report(name: str) -> dict[str, Any]:
    """The transparency report of a model version, as JSON."""
    return service().report(name, parse_version(request.args.get("version") or None, "version"))


@bp.get("/v1/models/<name>/report.html")
@requires("analyst")
def report_html(name: str) -> Response:
    """The transparency report of a model version, as a self-contained HTML page."""
    from explainer.report import render_html

    data = service().report(name, parse_version(request.args.get("version") or None, "version"))
    response = Response(render_html(data), mimetype="text/html")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
