"""Requests checked against the API's types and the model's schema, with pydantic.

Every problem is reported with the JSON path of the offending field
(``instances[0].features.tenure``), all at once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from explainer.exceptions import FieldError, PayloadTooLarge, ValidationError
from model_store.types import FeatureSchema, FeatureSpec

M = TypeVar("M", bound=BaseModel)

#: ``top_k`` may ask for at most this many attributions (a schema rarely has more features).
MAX_TOP_K = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceIn(_Strict):
    customer_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    features: dict[str, Any]


class ExplainRequest(_Strict):
    instances: Annotated[list[InstanceIn], Field(min_length=1)]
    method: Literal["shap", "lime"] = "shap"
    output: Literal["probability", "log_odds"] = "probability"
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, strict=True)] | None = None
    version: Annotated[int, Field(ge=1, strict=True)] | None = None
    class_: Annotated[str | None, Field(alias="class", min_length=1)] = None


def parse_explain_request(body: Any, *, max_instances: int) -> ExplainRequest:
    if not isinstance(body, Mapping):
        raise ValidationError.for_field("body", "must be a JSON object")
    instances = body.get("instances")
    if isinstance(instances, list) and len(instances) > max_instances:
        raise PayloadTooLarge(
            f"a request holds at most {max_instances} instances, this one has {len(instances)}",
            [FieldError("instances", f"at most {max_instances} instances per request")],
        )
    return parse(ExplainRequest, body)


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise as_validation_error(exc, prefix) from None


def validate_features(
    schema: FeatureSchema, features: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    """The features as the model takes them, or a ValidationError naming each bad one."""
    return parse(_features_model(schema), features, prefix).model_dump()


def validate_instances(
    schema: FeatureSchema, instances: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each instance's features, validated; errors of all instances are reported together."""
    rows, errors = [], []
    for i, features in enumerate(instances):
        try:
            rows.append(validate_features(schema, features, f"instances[{i}].features"))
        except ValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationError(_summary(errors), errors)
    return rows


def as_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> ValidationError:
    errors = [
        FieldError(_path(prefix, error["loc"]), _message(error))
        for error in exc.errors(include_url=False)
    ]
    return ValidationError(_summary(errors), errors)


@functools.lru_cache(maxsize=256)
def _features_model(schema: FeatureSchema) -> type[BaseModel]:
    fields: dict[str, Any] = {spec.name: (_field_type(spec), ...) for spec in schema.features}
    return pydantic.create_model(  # type: ignore[call-overload,no-any-return]
        "Features", __config__=ConfigDict(extra="forbid", strict=True), **fields
    )


def _field_type(spec: FeatureSpec) -> Any:
    if spec.is_categorical:
        return Literal[tuple(spec.categories or ())]
    return Annotated[float, Field(ge=spec.min, le=spec.max, allow_inf_nan=False)]


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "class_":
            path += ".class" if path else "class"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "is not a field of this request or model schema"
    if error["type"] == "missing":
        return "is required"
    return str(error["msg"])


def _summary(errors: Sequence[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.field} {first.message}{more}"


def parse_version(raw: Any, field: str) -> int | None:
    """A version from a query string or JSON: a positive integer, or None for production."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return raw
    if isinstance(raw, str) and raw.isdigit() and int(raw) >= 1:
        return int(raw)
    raise ValidationError.for_field(field, "must be a positive integer")


def parse_method(raw: str) -> Literal["shap", "lime"]:
    if raw not in ("shap", "lime"):
        raise ValidationError.for_field("method", f"must be 'shap' or 'lime', not {raw!r}")
    return raw  # type: ignore[return-value]


def parse_output(raw: str | None) -> Literal["probability", "log_odds"] | None:
    if raw is None:
        return None
    if raw not in ("probability", "log_odds"):
        raise ValidationError.for_field(
            "output", f"must be 'probability' or 'log_odds', not {raw!r}"
        )
    return raw  # type: ignore[return-value]
