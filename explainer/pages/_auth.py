"""Signing in with an API key, signing out, and the role each page needs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from explainer.api._state import state
from explainer.exceptions import AuthError, Forbidden
from explainer.keys import Role, allows
from explainer.pages._blueprint import bp
from explainer.pages._security import new_csrf_token, seal_key, unseal_key

F = TypeVar("F", bound=Callable[..., Any])

#: Where each role starts, most capable first.
HOMES: tuple[tuple[Role, str], ...] = (
    ("auditor", "pages.audit"),
    ("analyst", "pages.importance"),
    ("crm", "pages.index"),
)


@dataclass(frozen=True)
class User:
    key_id: str
    role: Role

    def may(self, role: Role) -> bool:
        return allows(self.role, role)


def current_user() -> User | None:
    """The signed-in user, with the key checked against the key ring on every request."""
    if "user" in g:
        return cast(User | None, g.user)
    user = None
    sealed = session.get("key")
    if isinstance(sealed, str):
        plain = unseal_key(sealed)
        try:
            stored = state().keys.authenticate(plain)
            user = User(stored.id, stored.role)
        except AuthError:
            session.pop("key", None)  # revoked, expired or tampered with: signed out
    g.user = user
    return user


def page_requires(role: Role) -> Callable[[F], F]:
    """Signed-out visitors go to the sign-in page (and come back); a lesser role gets 403."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
            if not user.may(role):
                raise Forbidden(
                    f"This page needs the {role} role; you are signed in as {user.role}."
                )
            return view(*args, **kwargs)

        wrapped.page_role = role  # type: ignore[attr-defined]
        return cast(F, wrapped)

    return decorate


def safe_next(target: str | None) -> str | None:
    """A local page to return to, or None (never another site: no open redirect)."""
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/"):
        return None
    return target


def home_of(user: User) -> str:
    for role, endpoint in HOMES:
        if user.may(role):
            return url_for(endpoint)
    return url_for("pages.index")


@bp.get("/")
@page_requires("crm")
def index() -> str:
    """What the signed-in user may open."""
    service = state().service
    return render_template("pages/index.html", models=service.models())


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    next_page = safe_next(request.values.get("next"))
    if request.method == "GET":
        user = current_user()
        if user is not None and next_page is None:
            return redirect(home_of(user))
        return render_template("pages/login.html", next_page=next_page, error=None)
    try:
        stored = state().keys.authenticate(request.form.get("api_key", "").strip() or None)
    except AuthError:
        error = "That API key is not valid. Check it and try again."
        return render_template("pages/login.html", next_page=next_page, error=error), 401
    session.clear()  # a fresh session: no fixation of one made before signing in
    session["key"] = seal_key(request.form["api_key"].strip())
    new_csrf_token()
    g.user = User(stored.id, stored.role)
    return redirect(next_page or home_of(g.user))


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    new_csrf_token()
    return redirect(url_for("pages.login", signed_out=1))
