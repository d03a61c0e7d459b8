"""Global importances of two or more model versions side by side, with rank changes."""

from __future__ import annotations

import re
from typing import Any

from flask import render_template, request

from explainer.api._state import service
from explainer.exceptions import NotFound, ValidationError
from explainer.pages._auth import page_requires
from explainer.pages._blueprint import bp
from explainer.pages._charts import importance_bars, rank_change
from explainer.service import parse_ref
from explainer.validation import MODEL_NAME_PATTERN

#: At most this many models side by side (each costs a pass over its background sample).
MOST_MODELS = 6


def chosen_refs() -> list[str]:
    """``?models=churn@1,churn@2`` (or the parameter repeated, as the checkboxes send it)."""
    refs: list[str] = []
    for value in request.args.getlist("models"):
        refs.extend(part.strip() for part in value.split(",") if part.strip())
    return refs


def _choices() -> list[dict[str, Any]]:
    """Every registered model version, for the form."""
    out = []
    for record in service().models():
        for version in service().card(record.name)["versions"]:
            out.append(
                {
                    "ref": f"{record.name}@{version['version']}",
                    "stage": version["stage"],
                }
            )
    return out


def _check(refs: list[str]) -> None:
    bad = [ref for ref in refs if not re.match(MODEL_NAME_PATTERN, parse_ref(ref)[0])]
    if bad:
        raise ValidationError.for_field("models", f"{bad[0]!r} is not NAME@VERSION")
    if len(refs) > MOST_MODELS:
        raise ValidationError.for_field("models", f"compare at most {MOST_MODELS} models at once")


@bp.get("/importance")
@page_requires("analyst")
def importance() -> str | tuple[str, int]:
    refs = chosen_refs()
    context: dict[str, Any] = {"refs": refs, "choices": _choices(), "error": None}
    if not refs:
        return render_template("pages/importance.html", result=None, **context)
    try:
        _check(refs)
        result = service().compare(refs)
        outputs = {ref: service().importance(*parse_ref(ref))["output"] for ref in refs}
    except (ValidationError, NotFound) as exc:
        status = 404 if isinstance(exc, NotFound) else 422
        context["error"] = (
            exc.errors[0].message
            if isinstance(exc, ValidationError) and exc.errors
            else exc.message
        )
        return render_template("pages/importance.html", result=None, **context), status
    refs = result["models"]
    rows = [
        {
            "feature": f["feature"],
            "label": f["label"],
            "change": rank_change(f, refs[0], refs[-1]),
        }
        for f in result["features"]
    ]
    context |= {
        "refs": refs,
        "rows": rows,
        "bars": importance_bars(result["features"], refs),
        "outputs": outputs,
        "same_output": len(set(outputs.values())) == 1,
        "correlation": result["rank_correlation"],
    }
    return render_template("pages/importance.html", result=result, **context)
