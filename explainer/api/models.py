"""Models, their cards, global importance and comparison across versions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from explainer.api._state import json_body, requires, service
from explainer.exceptions import ValidationError
from explainer.validation import parse_method, parse_output, parse_version

bp = Blueprint("models", __name__)


@bp.get("/v1/models")
@requires("crm")
def list_models() -> dict[str, Any]:
    return {"models": [record.summary() for record in service().models()]}


@bp.get("/v1/models/<name>")
@requires("crm")
def model_card(name: str) -> dict[str, Any]:
    return service().card(name)


@bp.post("/v1/models/<name>/promote")
@requires("admin")
def promote(name: str) -> dict[str, Any]:
    body = json_body()
    version = parse_version(body.get("version") if isinstance(body, dict) else None, "version")
    if version is None:
        raise ValidationError.for_field("version", "is required")
    return service().promote(name, version).summary()


@bp.get("/v1/models/<name>/importance")
@requires("analyst")
def importance(name: str) -> dict[str, Any]:
    version = parse_version(request.args.get("version") or None, "version")
    method = parse_method(request.args.get("method", "shap"))
    output = parse_output(request.args.get("output") or None)
    return service().importance(name, version, method=method, output=output)


@bp.get("/v1/importance/compare")
@requires("analyst")
def compare() -> dict[str, Any]:
    refs = [r.strip() for r in request.args.get("models", "").split(",") if r.strip()]
    method = parse_method(request.args.get("method", "shap"))
    return service().compare(refs, method=method)
