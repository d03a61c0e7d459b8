"""Server-rendered pages for people: a "why this score" card a CRM embeds, global importances
side by side, and the archive for auditors. Signed in with an API key, in a session cookie.

    /ui/login                      sign in with an API key (POST), sign out: POST /ui/logout
    /ui/why/<name>?customer_id=…&<feature>=<value>…   the why card (crm); contest form on it
    /ui/importance?models=churn@1,churn@2             importances and rank changes (analyst)
    /ui/audit                      filter, open a record, export, verify, open cases (auditor)

Templates and stylesheet ship in the package; charts are inline SVG drawn on the server, and
nothing is loaded from another site, so a strict Content-Security-Policy holds. Only the card
(and the sign-in it may need) can be framed, and only by ``CRM_EXPLAIN_EMBED_ORIGINS``.
Registering :data:`bp` on an app made by ``explainer.api.create_app`` is all it takes.
"""

from __future__ import annotations

from typing import cast

from flask import Flask, Response, current_app, render_template, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from explainer.api._state import AppState, state
from explainer.api.errors import PROBLEMS
from explainer.exceptions import ExplainerError
from explainer.pages import _audit, _auth, _importance, _why
from explainer.pages._blueprint import bp
from explainer.pages._charts import when
from explainer.pages._security import (
    CSRF_FIELD,
    configure,
    csrf_ok,
    csrf_token,
    secure_headers,
)
from model_store.errors import StoreError

__all__ = ["EMBEDDABLE", "bp"]

#: The pages a CRM may show in an iframe: the card, what its form leads to, and signing in.
EMBEDDABLE = frozenset({"pages.why", "pages.contest", "pages.login", "pages.logout"})

_ = (_audit, _auth, _importance, _why)  # their views are attached to ``bp``


@bp.record_once
def _setup(setup: BlueprintSetupState) -> None:
    app = cast(Flask, setup.app)
    app_state: AppState = app.extensions["crm_explain"]
    configure(app, app_state.settings.home)


@bp.before_request
def _check_csrf() -> tuple[str, int] | None:
    if request.method == "POST" and not csrf_ok():
        message = (
            "This form has expired or did not come from this site. "
            "Go back, reload the page and try again."
        )
        return _error_page(400, "Form expired", message)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    if request.endpoint == "pages.static":
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
    embeddable = request.endpoint in EMBEDDABLE
    return secure_headers(
        response, embed_origins=state().settings.embed_origins if embeddable else None
    )


@bp.context_processor
def _template_globals() -> dict[str, object]:
    return {
        "csrf_token": csrf_token,
        "csrf_field": CSRF_FIELD,
        "user": _auth.current_user(),
        "when": when,
    }


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("pages/error.html", status=status, title=title, message=message), status


@bp.errorhandler(ExplainerError)
@bp.errorhandler(StoreError)
def _known(exc: ExplainerError | StoreError) -> tuple[str, int]:
    """The API's one table of statuses, as a page instead of problem+json."""
    status, title = next(
        (PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS), (500, "Server error")
    )
    if status >= 500:
        current_app.logger.warning("%s: %s", type(exc).__name__, exc.message)
    return _error_page(status, title, exc.message)


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return _error_page(status, exc.name, exc.description or exc.name)
