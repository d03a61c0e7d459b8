"""The "why this score" card a CRM embeds, and the contest form on it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from flask import g, render_template, request
from werkzeug.datastructures import MultiDict

from explainer.api._state import service
from explainer.exceptions import Conflict, FieldError, ValidationError
from explainer.pages._auth import page_requires, safe_next
from explainer.pages._blueprint import bp
from explainer.pages._charts import driver_bars, percent
from explainer.service import Decision
from explainer.validation import ContestRequest, parse, validate_features
from model_store.types import FeatureSchema, ModelRecord

#: Query parameters of the card that are not features.
RESERVED = ("customer_id",)
#: Drivers drawn before "all factors" (the rest are one click away).
TOP_DRIVERS = 6
_INTEGER = re.compile(r"^[+-]?[0-9]{1,15}$")


def parse_query(
    schema: FeatureSchema, args: MultiDict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """Features from the query string, typed by the schema (numbers become numbers), and the
    customer id; a ValidationError naming every bad field."""
    errors: list[FieldError] = []
    features: dict[str, Any] = {}
    known = set(schema.feature_names)
    for name in args:
        values = args.getlist(name)
        if len(values) > 1:
            errors.append(FieldError(name, "is given more than once"))
        elif name not in RESERVED:
            raw = values[0].strip()
            features[name] = (
                _number(raw) if name in known and not _categorical(schema, name) else raw
            )
    customer_id = args.get("customer_id") or None
    if customer_id is not None and len(customer_id) > 128:
        errors.append(FieldError("customer_id", "must be at most 128 characters"))
    try:
        validate_features(schema, features, "")
    except ValidationError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ValidationError(f"{len(errors)} value(s) cannot be used", errors)
    return features, customer_id


def _categorical(schema: FeatureSchema, name: str) -> bool:
    return schema.feature(name).is_categorical


def _number(raw: str) -> int | float | str:
    """``3`` -> 3, ``89.5`` -> 89.5; anything else stays text, for validation to name."""
    if _INTEGER.match(raw):
        return int(raw)
    try:
        return float(raw)
    except ValueError:
        return raw


@bp.get("/why/<name>")
@page_requires("crm")
def why(name: str) -> str | tuple[str, int]:
    record = service().record(name)
    schema = record.schema
    if not any(key in schema.feature_names for key in request.args):
        return render_template("pages/why_form.html", **_form(record, []))
    try:
        features, customer_id = parse_query(schema, request.args)
    except ValidationError as exc:
        return render_template("pages/why_form.html", **_form(record, exc.errors)), 422
    [explanation] = service().explain(
        name, [Decision(features, customer_id)], request_id=g.get("request_id")
    )
    shown = explanation.to_dict()
    bars = driver_bars(shown["attributions"], schema, explanation.output)
    return render_template(
        "pages/why.html",
        record=record,
        explanation=shown,
        score=percent(explanation.prediction.score),
        base=percent(explanation.base_value) if explanation.output == "probability" else None,
        top=bars[:TOP_DRIVERS],
        rest=bars[TOP_DRIVERS:],
        binary=len(schema.classes) <= 2,
        back=request.full_path,
    )


def _form(record: ModelRecord, errors: Sequence[FieldError]) -> dict[str, Any]:
    """The card's form, filled with the query's values; ``errors`` named at the top and by
    each field."""
    schema = record.schema
    labels = {f.name: f.label for f in schema.features} | {"customer_id": "Customer id"}
    problems = [
        {"field": e.field, "label": labels.get(e.field, e.field), "message": e.message}
        for e in errors
    ]
    return {
        "record": record,
        "schema": schema,
        "values": request.args,
        "problems": problems,
        "fields": set(labels),
        "fields_in_error": {p["field"]: p["message"] for p in problems},
    }


@bp.post("/explanations/<explanation_id>/contest")
@page_requires("crm")
def contest(explanation_id: str) -> tuple[str, int]:
    back = safe_next(request.form.get("back"))
    try:
        body = parse(ContestRequest, {"reason": request.form.get("reason", "").strip()})
    except ValidationError:
        page = render_template(
            "pages/contest.html",
            case=None,
            back=back,
            error="Please say in a few words why the decision should be reviewed "
            "(at most 2,000 characters).",
        )
        return page, 422
    try:
        case = service().oversight.contest(explanation_id, body.reason, g.get("request_id"))
    except Conflict as exc:
        return render_template("pages/contest.html", case=None, back=back, error=exc.message), 409
    return render_template("pages/contest.html", case=case, back=back, error=None), 201
