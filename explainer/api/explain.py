"""POST /v1/models/{name}/explain and its KServe V1 spelling /v1/models/{name}:explain."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from explainer.api._state import json_body, requires, service, state
from explainer.service import Decision
from explainer.validation import parse_explain_request

bp = Blueprint("explain", __name__)


@bp.post("/v1/models/<name>/explain")
@bp.post("/v1/models/<name>:explain")
@requires("crm")
def explain(name: str) -> dict[str, Any]:
    request = parse_explain_request(json_body(), max_instances=state().settings.max_instances)
    explanations = service().explain(
        name,
        [Decision(i.features, i.customer_id) for i in request.instances],
        method=request.method,
        output=request.output,
        version=request.version,
        class_name=request.class_,
        top_k=request.top_k,
        request_id=g.request_id,
        audience=request.audience,
        review_checks=request.review_checks,
    )
    return {
        "model": explanations[0].model.to_dict(),
        "explanations": [e.to_dict() for e in explanations],
    }
