"""The one table from exceptions to RFC 9457 problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json
from werkzeug.exceptions import HTTPException

from explainer.exceptions import (
    AuthError,
    Conflict,
    ExplainerError,
    Forbidden,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ValidationError,
)
from model_store.errors import ArtifactIntegrityError, InvalidModel, ModelNotFound, StoreError

log = logging.getLogger("crm_explain.api")

#: exception class -> (HTTP status, title). The most specific class listed wins.
PROBLEMS: dict[type[Exception], tuple[int, str]] = {
    PayloadTooLarge: (413, "Request too large"),
    ValidationError: (422, "Invalid request"),
    Forbidden: (403, "Forbidden"),
    AuthError: (401, "Unauthorized"),
    NotFound: (404, "Not found"),
    ModelNotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    InvalidModel: (422, "Invalid model"),
    ArtifactIntegrityError: (503, "Model refused"),
    IntegrityError: (409, "Integrity check failed"),
    Unavailable: (503, "Service unavailable"),
}


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> Response:
    body = {
        "type": f"https://crm-explain.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="crm-explain"'
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _for_class(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    raise LookupError(type(exc))


def handle_known(exc: ExplainerError | StoreError) -> Response:
    status, title = _for_class(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationError) and exc.errors:
        extra["errors"] = [e.to_dict() for e in exc.errors]
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return problem(status, title, exc.message, exc.code, **extra)


def handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        log.error(
            "server error",
            exc_info=exc.original_exception if hasattr(exc, "original_exception") else exc,
        )
    detail = {
        404: "There is no such resource.",
        405: "This resource does not take that method.",
        413: "The request body is larger than the service accepts.",
        400: "The request body is not valid JSON.",
    }.get(status, exc.description or exc.name)
    response = problem(status, exc.name, detail, exc.name.lower().replace(" ", "_"))
    for name, value in exc.get_headers():  # e.g. the Allow header a 405 must carry
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(ExplainerError, handle_known)
    app.register_error_handler(StoreError, handle_known)
    app.register_error_handler(HTTPException, handle_http)
