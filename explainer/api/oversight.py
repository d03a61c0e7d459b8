"""Human oversight and data subjects: contest a decision, review cases, erase a subject."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from explainer.api._state import json_body, requires, service
from explainer.exceptions import ValidationError
from explainer.validation import ContestRequest, ReviewDecisionRequest, parse

bp = Blueprint("oversight", __name__)


@bp.post("/v1/explanations/<explanation_id>/contest")
@requires("crm")
def contest(explanation_id: str) -> tuple[dict[str, Any], int]:
    body = parse(ContestRequest, json_body())
    case = service().oversight.contest(explanation_id, body.reason, g.request_id)
    return case, 201


@bp.get("/v1/reviews")
@requires("auditor")
def reviews() -> dict[str, Any]:
    status = request.args.get("status") or None
    if status not in (None, "open", "closed"):
        raise ValidationError.for_field("status", "must be 'open' or 'closed'")
    return {"cases": service().oversight.reviews(status)}


@bp.post("/v1/reviews/<case_id>")
@requires("auditor")
def decide(case_id: str) -> dict[str, Any]:
    body = parse(ReviewDecisionRequest, json_body())
    return service().oversight.decide(case_id, body.decision, body.note, g.api_key.id)


@bp.delete("/v1/subjects/<customer_id>")
@requires("admin")
def erase(customer_id: str) -> dict[str, Any]:
    return {"erased": service().oversight.erase_subject(customer_id)}
