"""Requests checked against the API's types and the model's schema, with pydantic.

Every problem is reported with the JSON path of the offending field
(``instances[0].features.tenure``), all at once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
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
    #: "customer": add at most four plain-language ``reasons`` and a customer rationale.
    audience: Literal["agent", "customer"] = "agent"
    #: Also compare a SHAP explanation with LIME (slower); LIME is always compared with SHAP.
    review_checks: Annotated[bool, Field(strict=True)] | None = None


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
    parse(_features_model(schema), features, prefix)
    return {name: features[name] for name in schema.feature_names}  # as sent: 3 stays 3


def validate_instances(
    schema: FeatureSchema, instances: Sequence[Mapping[str, Any]], *, field: str = "instances"
) -> list[dict[str, Any]]:
    """Each instance's features, validated; errors of all instances are reported together,
    named ``{field}[i].features.NAME``."""
    rows, errors = [], []
    for i, features in enumerate(instances):
        try:
            rows.append(validate_features(schema, features, f"{field}[{i}].features"))
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
    model: type[BaseModel] = pydantic.create_model(
        "Features", __config__=ConfigDict(extra="forbid", strict=True), **fields
    )
    return model


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
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
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
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and int(raw) >= 1:
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


def parse_datetime(raw: str | None, field: str) -> datetime | None:
    """An ISO 8601 time (a date alone means its midnight, UTC when no zone is given)."""
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError.for_field(field, f"must be an ISO 8601 time, not {raw!r}") from None
    try:
        return as_utc(parsed)
    except ValueError as exc:
        raise ValidationError.for_field(field, str(exc)) from None


def parse_limit(
    raw: str | None, field: str = "limit", *, default: int = 50, most: int = 500
) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise ValidationError.for_field(field, f"must be an integer from 1 to {most}")
    return int(raw)


class ContestRequest(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ReviewDecisionRequest(_Strict):
    decision: Literal["upheld", "overturned", "amended"]
    note: Annotated[str, Field(max_length=4000)] = ""


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive means UTC); a ValueError when it falls outside the calendar."""
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of dates this service handles") from None


def _iso_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time, as a string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 time, not {value!r}") from None


#: A time in a request: an ISO 8601 string (as ``parse_datetime`` reads it), normalised to UTC.
UtcDateTime = Annotated[
    datetime,
    pydantic.BeforeValidator(_iso_time),
    pydantic.AfterValidator(as_utc),
    pydantic.WithJsonSchema(
        {"type": "string", "description": "An ISO 8601 time; UTC when it names no zone."}
    ),
]


#: The most records one fairness request may carry (413 beyond it).
MAX_AUDIT_RECORDS = 10_000
#: The largest fairness request body accepted, in bytes (10,000 records of a wide schema).
MAX_AUDIT_BODY_BYTES = 16_000_000


class AuditRecordIn(_Strict):
    """One decision to audit. ``protected`` values and ``label`` are checked by the service,
    against each other and against the model's classes."""

    features: dict[str, Any]
    protected: dict[str, Any]
    label: Any = None


class FairnessBoundsIn(_Strict):
    """What counts as a breach; each absent bound keeps its default."""

    min_disparate_impact: float | None = None
    max_demographic_parity_difference: float | None = None
    max_equalized_odds_difference: float | None = None
    min_group_size: Annotated[int, Field(strict=True)] | None = None
    proxy_association: float | None = None


_Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]
_ClassNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class FairnessRequest(_Strict):
    records: Annotated[list[AuditRecordIn], Field(min_length=1)]
    #: Selected when the score is at or above it; absent: the card's ``threshold`` or 0.5.
    threshold: _Fraction | None = None
    version: Annotated[int, Field(ge=1, strict=True)] | None = None
    #: The classes whose summed probability is the score a decision is selected by
    #: (required for a multiclass model whose card names no ``selected_classes``).
    positive_classes: _ClassNames | None = None
    bounds: FairnessBoundsIn | None = None


def parse_fairness_request(body: Any, *, max_records: int = MAX_AUDIT_RECORDS) -> FairnessRequest:
    if not isinstance(body, Mapping):
        raise ValidationError.for_field("body", "must be a JSON object")
    records = body.get("records")
    if isinstance(records, list) and len(records) > max_records:
        raise PayloadTooLarge(
            f"a fairness request holds at most {max_records} records, this one has {len(records)}",
            [FieldError("records", f"at most {max_records} records per request")],
        )
    return parse(FairnessRequest, body)


class ExportRequest(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    since: UtcDateTime | None = None
    until: UtcDateTime | None = None


# -- request limits and query parameters (checked before a view runs) -------------------------

#: JSON nested deeper than this many levels is refused (an explain request needs four).
MAX_JSON_DEPTH = 32


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH, field: str = "body") -> None:
    """A ValidationError naming ``field`` when ``value`` nests deeper than ``limit`` levels."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ValidationError.for_field(field, f"nests deeper than {limit} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


#: A model's name as the registry accepts it; no other name can be registered.
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
#: ``NAME@VERSION``, or a bare ``NAME`` for its production version.
_REF = r"[a-z][a-z0-9_-]{0,63}(@[1-9][0-9]{0,8})?"

Method = Literal["shap", "lime"]
Output = Literal["probability", "log_odds"]
Version = Annotated[int, Field(ge=1, le=999_999_999, description="Absent: the production version.")]
ModelName = Annotated[str, Field(min_length=1, max_length=64, description="A model's name.")]
CustomerId = Annotated[str, Field(min_length=1, max_length=128)]
#: An archive cursor: what ``next_cursor`` handed out (base64url, at most 28 characters).
Cursor = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_-]{1,28}={0,2}$", description="The previous page's next_cursor."),
]
ModelRefs = Annotated[
    str,
    Field(
        pattern=rf"^ *{_REF} *(, *{_REF} *)+$",
        max_length=2000,
        description="At least two NAME@VERSION, comma separated: churn@1,churn@2.",
    ),
]


class _Query(BaseModel):
    """Query (or path) parameters, checked like a body. Parameters not listed are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelPath(_Query):
    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, description="A registered model.")]


class ImportanceQuery(_Query):
    version: Version | None = None
    method: Method = "shap"
    output: Annotated[Output | None, Field(description="Absent: the model's native space.")] = None


class CompareQuery(_Query):
    models: ModelRefs
    method: Method = "shap"


class AuditQuery(_Query):
    model: ModelName | None = None
    customer_id: CustomerId | None = None
    since: Annotated[UtcDateTime | None, Field(description="ISO 8601: at or after.")] = None
    until: Annotated[UtcDateTime | None, Field(description="ISO 8601: before.")] = None
    limit: Annotated[int, Field(ge=1, le=500, description="Records per page.")] = 50
    cursor: Cursor | None = None


class ReviewsQuery(_Query):
    status: Literal["open", "closed"] | None = None


class ReportQuery(_Query):
    version: Version | None = None


class PromoteRequest(_Strict):
    version: Annotated[int, Field(ge=1, strict=True, description="The version to serve.")]


def check_params(model: type[BaseModel], params: Mapping[str, str]) -> None:
    """A ValidationError naming each bad parameter; an empty value counts as absent."""
    parse(model, {key: value for key, value in params.items() if value != ""})
