"""What every request can reach: settings, the service, the key ring."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import current_app, g, request

from explainer.config import Settings
from explainer.exceptions import ValidationError
from explainer.keys import KeyRing, Role
from explainer.service import ExplainerService
from explainer.validation import MAX_JSON_DEPTH, check_depth

F = TypeVar("F", bound=Callable[..., Any])

#: ``app.extensions`` key of the checks every authorized request passes before its view runs
#: (the parameters ``explainer.api.openapi`` declares for the operation).
REQUEST_CHECKS = "crm_explain.request_checks"


@dataclass
class AppState:
    settings: Settings
    service: ExplainerService
    keys: KeyRing


def state() -> AppState:
    return cast(AppState, current_app.extensions["crm_explain"])


def service() -> ExplainerService:
    return state().service


def requires(role: Role) -> Callable[[F], F]:
    """The one place an endpoint declares who may call it."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            g.api_key = state().keys.authorize(_bearer(), role)
            for check in current_app.extensions.get(REQUEST_CHECKS, ()):
                check()
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return cast(F, wrapped)

    return decorate


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def json_body() -> Any:
    if not request.is_json:
        raise ValidationError.for_field("body", "must be JSON (Content-Type: application/json)")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the parser gave up, far deeper than allowed
        raise ValidationError.for_field(
            "body", f"nests deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    if body is None:
        raise ValidationError.for_field("body", "is not valid JSON")
    check_depth(body)
    return body
