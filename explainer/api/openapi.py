"""OpenAPI 3.1 of the HTTP API, generated from the code that serves and checks the requests.

* paths and methods: every rule of the app's ``url_map``, so a new endpoint is never missing;
* security: the view's ``required_role``, set by :func:`explainer.api._state.requires`;
* request bodies and parameters: the pydantic models of :mod:`explainer.validation` that the
  requests are checked with. The parameters declared here are also *enforced* before each view
  runs (:func:`check_request`), so the document and the checks cannot drift apart;
* :data:`OPERATIONS` adds what code cannot tell: a summary, the response shape, extra statuses.
  An operation it does not list still appears, described from its view's docstring.

Served unauthenticated at ``/openapi.json``; ``/docs`` renders it (:mod:`explainer.api.docs`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, cast

from flask import Blueprint, Flask, current_app, request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from werkzeug.routing import BaseConverter, IntegerConverter, Rule

from explainer import validation as v
from explainer.api._state import REQUEST_CHECKS, AppState, json_body
from explainer.config import Settings
from explainer.exceptions import NotFound, ValidationError
from explainer.keys import ROLES
from explainer.types import Band, Method, OutputSpace

__all__ = [
    "OPERATIONS",
    "ModelNameRule",
    "Operation",
    "check_request",
    "init_app",
    "openapi_spec",
]

bp = Blueprint("openapi", __name__)

_SPEC_KEY = "crm_explain.openapi"
_REF = "#/components/schemas/{model}"


# -- response shapes (documentation only: the views build plain dicts) ----------------------------
class _Out(BaseModel):
    """A response object; it may carry more fields in later versions."""

    model_config = ConfigDict(extra="allow")


class ModelRef(_Out):
    name: str
    version: int
    sha256: str


class PredictionOut(_Out):
    score: float
    class_: str = Field(alias="class")
    band: Band


class AttributionOut(_Out):
    feature: str
    label: str
    value: Any = Field(description="The feature's value in the explained instance.")
    contribution: float


class ExplanationOut(_Out):
    id: str
    customer_id: str | None
    model: ModelRef
    prediction: PredictionOut
    explained_class: str
    base_value: float
    method: Method
    output: OutputSpace
    attributions: list[AttributionOut] = Field(
        description="Every raw feature of the schema, largest |contribution| first."
    )
    rationale: str
    quality: dict[str, float | None]
    archived: bool
    meta: dict[str, Any] = Field(description="Provenance: explainer, parameters, seed, versions.")


class ExplainResponse(_Out):
    model: ModelRef
    explanations: list[ExplanationOut]


class ModelSummary(_Out):
    name: str
    version: int
    stage: Literal["none", "production", "archived"]
    task: Literal["binary", "multiclass"]
    features: list[str]
    sha256: str


class ModelList(_Out):
    models: list[ModelSummary]


class ModelCard(_Out):
    name: str
    version: int
    sha256: str
    stage: str
    schema_: dict[str, Any] = Field(alias="schema", description="The feature schema.")
    versions: list[dict[str, Any]]


class ImportanceRow(_Out):
    feature: str
    label: str
    mean_abs: float
    rank: int


class Importance(_Out):
    model: ModelRef
    method: Method
    output: OutputSpace
    n_rows: int
    importances: list[ImportanceRow]


class ComparisonRow(_Out):
    feature: str
    label: str
    values: dict[str, float]
    ranks: dict[str, int]
    rank_change: int | None


class Comparison(_Out):
    models: list[str]
    features: list[ComparisonRow]
    rank_correlation: float | dict[str, float | None] | None


class Health(_Out):
    status: Literal["ok"]


class Readiness(_Out):
    ready: bool
    models: list[str]
    refused: list[str]
    archive: str


class AuditPage(_Out):
    items: list[dict[str, Any]]
    next_cursor: str | None


class VerifyReport(_Out):
    ok: bool
    records: int
    head: str | None
    first_bad: dict[str, Any] | None


class ReviewCase(_Out):
    case_id: str
    status: str


class ReviewCases(_Out):
    cases: list[ReviewCase]


class Erased(_Out):
    erased: int


class FairnessAudit(_Out):
    model: ModelRef
    threshold: float
    n_records: int
    attributes: dict[str, Any] = Field(description="Group metrics per protected attribute.")


class TransparencyReport(_Out):
    """The transparency report of a model version (``explainer.report``)."""


class FieldProblem(_Out):
    field: str = Field(description="The JSON path of the offending field.")
    message: str


class Problem(_Out):
    """An RFC 9457 problem: what went wrong, in one sentence, and each offending field."""

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)
    request_id: str | None = Field(default=None, description="Echoes X-Request-ID.")


# -- the operations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    """What the code cannot tell about one operation."""

    summary: str
    response: type[BaseModel] | None = None  # the success body, as JSON
    status: int = 200
    media_type: str = "application/json"
    body: type[BaseModel] | None = None
    body_required: bool = True
    #: Check the body against ``body`` before the view runs (for views that read it loosely).
    check_body: bool = False
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # statuses beyond those every operation of its kind has
    description: str = ""


#: (Flask rule, method) -> the operation. Rules not in the app are left out of the document.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/healthz", "GET"): Operation("Liveness: the process answers", Health),
    ("/readyz", "GET"): Operation(
        "Readiness: models loaded and the archive writable",
        Readiness,
        errors=(503,),
        description="503 with the same body when not ready.",
    ),
    ("/metrics", "GET"): Operation(
        "Prometheus metrics", media_type="text/plain", description="Prometheus text format."
    ),
    ("/openapi.json", "GET"): Operation("This document", description="OpenAPI 3.1, as JSON."),
    ("/docs", "GET"): Operation("The API reference, as a web page", media_type="text/html"),
    ("/v1/models", "GET"): Operation("The serving version of every model", ModelList),
    ("/v1/models/<name>", "GET"): Operation(
        "A model card: schema, versions, owner, intended use, limitations, metrics", ModelCard
    ),
    ("/v1/models/<name>/promote", "POST"): Operation(
        "Serve another version of a model",
        ModelSummary,
        body=v.PromoteRequest,
        check_body=True,
    ),
    ("/v1/models/<name>/explain", "POST"): Operation(
        "Explain decisions",
        ExplainResponse,
        body=v.ExplainRequest,
        description=(
            "Attributions for every raw feature, the prediction, a plain-language rationale. "
            "Features not in the model's schema, values outside a categorical feature's "
            "categories, NaN/Infinity and wrong types are rejected (422) and named; more "
            "instances than the documented limit is a 413."
        ),
    ),
    ("/v1/models/<name>:explain", "POST"): Operation(
        "Explain decisions (the KServe V1 verb)",
        ExplainResponse,
        body=v.ExplainRequest,
        description="The same as POST /v1/models/{name}/explain.",
    ),
    ("/v1/models/<name>/importance", "GET"): Operation(
        "Global importance: mean |attribution| per raw feature over the background sample",
        Importance,
        query=v.ImportanceQuery,
    ),
    ("/v1/importance/compare", "GET"): Operation(
        "Compare global importances across models or versions",
        Comparison,
        query=v.CompareQuery,
        errors=(404,),
    ),
    ("/v1/audit/explanations", "GET"): Operation(
        "Archived explanations, oldest first, a page at a time", AuditPage, query=v.AuditQuery
    ),
    ("/v1/audit/explanations/<record_id>", "GET"): Operation(
        "One archived explanation", None, errors=(409,)
    ),
    ("/v1/audit/exports", "POST"): Operation(
        "A signed audit bundle (zip) of the archive, optionally filtered",
        media_type="application/zip",
        body=v.ExportRequest,
        body_required=False,
        errors=(409,),
    ),
    ("/v1/audit/verify", "GET"): Operation("Verify the archive's hash chain", VerifyReport),
    ("/v1/explanations/<explanation_id>/contest", "POST"): Operation(
        "Contest a decision: opens a review case",
        ReviewCase,
        status=201,
        body=v.ContestRequest,
        errors=(409,),
    ),
    ("/v1/reviews", "GET"): Operation("Review cases", ReviewCases, query=v.ReviewsQuery),
    ("/v1/reviews/<case_id>", "POST"): Operation(
        "Decide a review case", ReviewCase, body=v.ReviewDecisionRequest, errors=(409,)
    ),
    ("/v1/subjects/<customer_id>", "DELETE"): Operation(
        "Erase a data subject from the archive (the archive still verifies)", Erased
    ),
    ("/v1/models/<name>/fairness", "POST"): Operation(
        "Audit the model's decisions on the records sent, per protected attribute",
        FairnessAudit,
        body=v.FairnessRequest,
        description=(
            f"At most {v.MAX_AUDIT_RECORDS} records (413 beyond), in a body of at most "
            f"{v.MAX_AUDIT_BODY_BYTES} bytes."
        ),
    ),
    ("/v1/models/<name>/report", "GET"): Operation(
        "The transparency report of a model version", TransparencyReport, query=v.ReportQuery
    ),
    ("/v1/models/<name>/report.html", "GET"): Operation(
        "The transparency report of a model version, as a self-contained web page",
        media_type="text/html",
        query=v.ReportQuery,
    ),
}

#: Response models named in components, beyond those OPERATIONS names.
_EXTRA_MODELS: tuple[type[BaseModel], ...] = (Problem,)

_ERROR_TITLES = {
    400: "The request is malformed",
    401: "No API key, or one that is not valid",
    403: "The key's role may not do this",
    404: "No such resource (an unknown model, version or record)",
    405: "The resource does not take that method",
    409: "The request clashes with the current state",
    413: "The body, or the number of instances, is larger than the service accepts",
    422: "The request is invalid; each offending field is named in errors[].field",
    503: "A model or the archive cannot serve right now; retry later",
}

PAGES_PREFIX = "/ui"

_PARAM = re.compile(r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>\w+)>")


# -- routing and request checks ---------------------------------------------------------------
class ModelNameConverter(BaseConverter):
    """A model's name, as the registry accepts them."""

    regex = v.MODEL_NAME_PATTERN.removeprefix("^").removesuffix("$")


class ModelNameRule(Rule):
    """``<name>`` in a rule is always a model's name, and matches only a valid one: so
    ``/v1/models/churn:explain`` is never read as the model ``churn:explain``."""

    def get_converter(
        self,
        variable_name: str,
        converter_name: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> BaseConverter:
        if variable_name == "name" and converter_name == "default" and not args and not kwargs:
            return ModelNameConverter(self.map)
        return super().get_converter(variable_name, converter_name, args, kwargs)


def check_request() -> None:
    """Enforce what the document declares for the matched operation (after authorization)."""
    rule = request.url_rule
    if rule is None:
        return
    args = request.view_args or {}
    if "name" in args:  # ``<name>`` is always a model's name
        try:
            v.check_params(v.ModelPath, {"name": args["name"]})
        except ValidationError:
            raise NotFound(f"model {args['name']!r} is not registered") from None
    method = "GET" if request.method == "HEAD" else request.method
    operation = OPERATIONS.get((rule.rule, method))
    if operation is None:
        return
    if operation.query is not None:
        v.check_params(operation.query, request.args)
    if operation.body is not None and operation.check_body:
        v.parse(operation.body, json_body())


# -- the document -----------------------------------------------------------------------------
def openapi_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (built once per app)."""
    cached = app.extensions.get(_SPEC_KEY)
    if cached is None:
        cached = app.extensions[_SPEC_KEY] = _build(app)
    return copy.deepcopy(cached)


def documented_rules(app: Flask) -> list[Rule]:
    """The app's rules the document describes: all but static files."""
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.endswith(".static")
    ]


def openapi_path(rule: Rule) -> str:
    """``/v1/models/<name>:explain`` -> ``/v1/models/{name}:explain``."""
    return _PARAM.sub(lambda m: "{" + m.group("name") + "}", rule.rule)


def operation_methods(rule: Rule) -> list[str]:
    return sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))


def _build(app: Flask) -> dict[str, Any]:
    schemas = _component_schemas(app)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    tags: dict[str, None] = {}
    for rule in sorted(documented_rules(app), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        role = getattr(view, "required_role", None)
        for method in operation_methods(rule):
            declared = OPERATIONS.get((rule.rule, method))
            tag = rule.endpoint.partition(".")[0] if "." in rule.endpoint else "service"
            tags[tag] = None
            operation = _operation(rule, method, declared, role, view.__doc__, tag)
            operation["operationId"] = _unique(_operation_id(rule, method), operation_ids)
            paths.setdefault(openapi_path(rule), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crm-explain",
            "version": _version(),
            "description": _description(app),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An API key: 'Authorization: Bearer <key>'. Roles, each including "
                        "the ones before it: " + " < ".join(ROLES) + "."
                    ),
                }
            },
        },
    }


def _operation(
    rule: Rule,
    method: str,
    declared: Operation | None,
    role: str | None,
    doc: str | None,
    tag: str,
) -> dict[str, Any]:
    summary = (doc or rule.endpoint).strip().splitlines()[0].rstrip(".")
    if declared is None and is_page(rule):
        return _page(rule, summary, tag)
    op = declared or Operation(summary, media_type="")
    out: dict[str, Any] = {"tags": [tag], "summary": op.summary}
    description = op.description
    if role is not None:
        description = f"Needs the `{role}` role or a higher one. {description}".strip()
        out["security"] = [{"bearer": []}]
        out["x-required-role"] = role
    else:
        out["security"] = []
    if description:
        out["description"] = description
    parameters = [_path_parameter(rule, name) for name in _path_names(rule)]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    statuses: set[int] = set(op.errors)
    if role is not None:
        statuses |= {401, 403, 503}
    if parameters and any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if op.query is not None or op.body is not None:
        statuses.add(422)
    if op.body is not None or (declared is None and method in ("POST", "PUT", "PATCH")):
        statuses |= {413, 422}
    responses: dict[str, Any] = {str(op.status): _success(op, declared is None)}
    for status in sorted(statuses - {op.status}):
        responses[str(status)] = _problem_response(status)
    if (rule.rule, method) == ("/readyz", "GET"):
        responses["503"] = _success(op, False) | {"description": "Not ready"}
    if declared is None:
        responses["default"] = _problem_response(None)
    out["responses"] = responses
    return out


def is_page(rule: Rule) -> bool:
    """The pages for a browser (``/ui/…``): HTML, signed in with a session, not the JSON API."""
    return rule.rule == PAGES_PREFIX or rule.rule.startswith(PAGES_PREFIX + "/")


def _page(rule: Rule, summary: str, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "description": (
            f"A page for a browser, signed in with an API key at {PAGES_PREFIX}/login "
            "(a session cookie); not part of the JSON API."
        ),
        "security": [],
        "x-page": True,
    }
    parameters = [_path_parameter(rule, name) for name in _path_names(rule)]
    if parameters:
        out["parameters"] = parameters
    out["responses"] = {
        "default": {
            "description": "The page, a redirect (to sign in), or an error page",
            "headers": _headers(),
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/problem+json": {"schema": _ref(Problem)},
            },
        }
    }
    return out


def _success(op: Operation, generic: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": op.summary, "headers": _headers()}
    if generic or not op.media_type:
        return response
    if op.media_type == "application/json":
        schema: dict[str, Any] = _ref(op.response) if op.response else {"type": "object"}
    elif op.media_type == "application/zip":
        schema = {"type": "string", "contentMediaType": "application/zip"}
    else:
        schema = {"type": "string"}
    response["content"] = {op.media_type: {"schema": schema}}
    return response


def _problem_response(status: int | None) -> dict[str, Any]:
    headers = _headers()
    if status == 401:
        headers["WWW-Authenticate"] = {"schema": {"type": "string"}, "required": True}
    if status == 503:
        headers["Retry-After"] = {"schema": {"type": "string"}, "required": True}
    return {
        "description": _ERROR_TITLES.get(status or 0, "An error"),
        "headers": headers,
        "content": {"application/problem+json": {"schema": _ref(Problem)}},
    }


def _headers() -> dict[str, Any]:
    return {
        "X-Request-ID": {
            "description": "The request's id: the client's X-Request-ID, or a new one.",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }
    }


def _path_names(rule: Rule) -> list[str]:
    return [m.group("name") for m in _PARAM.finditer(rule.rule)]


def _path_parameter(rule: Rule, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    description = None
    if name == "name":
        prop = v.ModelPath.model_json_schema()["properties"]["name"]
        description = prop.pop("description", None)
        prop.pop("title", None)
        schema = prop
    elif isinstance(rule._converters.get(name), IntegerConverter):
        schema = {"type": "integer", "minimum": 0}
    parameter = {"name": name, "in": "path", "required": True, "schema": schema}
    return parameter | ({"description": description} if description else {})


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if name not in required:
            parameter["allowEmptyValue"] = True  # an empty value counts as absent
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is one that may be left out, never a ``null``."""
    prop = dict(prop)
    branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
    if prop.get("default", ...) is None:
        del prop["default"]
    if len(branches) == 1:
        prop = branches[0] | prop
    elif branches:
        prop["anyOf"] = branches
    return prop


def _component_schemas(app: Flask) -> dict[str, Any]:
    requests = {op.body for op in OPERATIONS.values() if op.body is not None}
    responses = {op.response for op in OPERATIONS.values() if op.response is not None}
    responses |= set(_EXTRA_MODELS)
    _, top = models_json_schema(
        [(m, "validation") for m in sorted(requests, key=lambda m: m.__name__)]
        + [(m, "serialization") for m in sorted(responses, key=lambda m: m.__name__)],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    explain = schemas.get("ExplainRequest")
    if explain is not None:
        explain["properties"]["instances"]["maxItems"] = _settings(app).max_instances
    fairness = schemas.get("FairnessRequest")
    if fairness is not None:
        fairness["properties"]["records"]["maxItems"] = v.MAX_AUDIT_RECORDS
    return schemas


def _settings(app: Flask) -> Settings:
    return cast(AppState, app.extensions["crm_explain"]).settings


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation_id(rule: Rule, method: str) -> str:
    words: list[str] = re.findall(r"[A-Za-z0-9]+", f"{method.lower()} {openapi_path(rule)}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _unique(candidate: str, taken: set[str]) -> str:
    name, n = candidate, 2
    while name in taken:
        name, n = f"{candidate}{n}", n + 1
    taken.add(name)
    return name


def _version() -> str:
    try:
        return metadata.version("crm-explain")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _description(app: Flask) -> str:
    settings = _settings(app)
    return (
        "Explanations for the scoring models inside CRM systems.\n\n"
        "Errors are RFC 9457 `application/problem+json`; bad input is a 4xx naming each "
        "offending field in `errors[].field`. Limits: a request body holds at most "
        f"{settings.max_body_bytes} bytes and an explain request at most "
        f"{settings.max_instances} instances (413 beyond either); JSON nested deeper than "
        f"{v.MAX_JSON_DEPTH} levels is refused (422); the server gives a request at most 60 s."
    )


# -- the endpoint -----------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi_json() -> dict[str, Any]:
    """This document."""
    return openapi_spec(current_app)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions.setdefault(REQUEST_CHECKS, []).append(check_request)
