"""The HTTP API: ``create_app`` builds a Flask app on the service; one blueprint per area."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, g, request

from explainer.api import (
    audit,
    docs,
    errors,
    explain,
    fairness,
    health,
    metrics,
    models,
    openapi,
    oversight,
)
from explainer.api._state import AppState
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.pages import bp as pages_bp
from explainer.service import ExplainerService

__all__ = ["create_app"]

REQUEST_ID_HEADER = "X-Request-ID"


def create_app(
    settings: Settings | None = None,
    *,
    service: ExplainerService | None = None,
    keys: KeyRing | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.url_rule_class = openapi.ModelNameRule  # <name> matches only a valid model name
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["crm_explain"] = AppState(
        settings=settings,
        service=service or ExplainerService.from_settings(settings),
        keys=keys or default_keys(settings),
    )
    errors.init_app(app)
    for blueprint in (health.bp, models.bp, explain.bp, audit.bp, oversight.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(fairness.bp)  # fairness audits, transparency reports (analyst)
    openapi.init_app(app)  # /openapi.json, and the checks of the parameters it declares
    docs.init_app(app)  # /docs
    metrics.init_app(app)  # /metrics, and one JSON access-log line per request
    app.register_blueprint(pages_bp)  # /ui: the pages for people (explainer.pages)
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    return app


def default_keys(settings: Settings) -> KeyRing:
    if settings.api_keys:
        return KeyRing.from_plain(settings.api_keys)
    return KeyRing.load(settings.home)


def _assign_request_id() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    return response


logging.getLogger("crm_explain").addHandler(logging.NullHandler())
