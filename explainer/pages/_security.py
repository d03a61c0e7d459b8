"""What keeps the pages safe: the session's secret key, the cookie, CSRF tokens, headers.

* The Flask secret key lives in ``$CRM_EXPLAIN_HOME/ui_session.key``, made once with mode 0600
  (atomically, so workers starting together agree on it), unless the app already has one.
* The session cookie is HttpOnly, SameSite=Lax (``SESSION_COOKIE_SAMESITE`` may make it
  Strict), scoped to ``/ui`` and Secure whenever the request came over https (directly or, as
  ``X-Forwarded-Proto`` says, through a proxy) or ``SESSION_COOKIE_SECURE`` is set.
* The API key a user signs in with is kept in the session encrypted (Fernet, a key derived
  from the secret key) and checked against the key ring on every request, so a revoked key
  ends its sessions; a session lasts at most :data:`SESSION_TTL_S` seconds.
* Every POST carries the session's CSRF token in the form field ``csrf_token``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from flask import Flask, Response, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

log = logging.getLogger("crm_explain.pages")

SECRET_KEY_FILE = "ui_session.key"
#: A signed-in session lasts this long at most (seconds).
SESSION_TTL_S = 8 * 3600
CSRF_FIELD = "csrf_token"
COOKIE_NAME = "crm_explain_ui"

_ORIGIN = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_BASE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors {ancestors}"
)


def load_or_create_secret_key(home: Path) -> bytes:
    """The pages' secret key from ``home``; made once, mode 0600, never half-written."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / SECRET_KEY_FILE
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another worker made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    key = bytes.fromhex(path.read_text("ascii").strip())
    if len(key) < 32:
        raise ValueError(f"{path} must hold at least 32 random bytes, in hex")
    return key


class PagesSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request itself was secure."""

    def get_cookie_secure(self, app: Flask) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return bool(super().get_cookie_secure(app) or request.is_secure or forwarded == "https")


def configure(app: Flask, home: Path) -> None:
    if not app.secret_key:
        app.secret_key = load_or_create_secret_key(home)
    app.session_interface = PagesSessionInterface()
    app.config["SESSION_COOKIE_NAME"] = COOKIE_NAME
    app.config["SESSION_COOKIE_PATH"] = "/ui"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") not in ("Lax", "Strict"):
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


# -- the API key in the session ----------------------------------------------------------------
def _fernet() -> Fernet:
    secret = current_app.secret_key
    raw = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
    digest = hashlib.sha256(raw + b"|crm-explain pages: api key in the session").digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal_key(api_key: str) -> str:
    return _fernet().encrypt(api_key.encode()).decode("ascii")


def unseal_key(token: str) -> str | None:
    """The API key sealed in ``token``; None when it was tampered with or is too old."""
    try:
        return _fernet().decrypt(token.encode("ascii"), ttl=SESSION_TTL_S).decode()
    except (InvalidToken, UnicodeError, ValueError):
        return None


# -- CSRF -----------------------------------------------------------------------------------------
def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def new_csrf_token() -> None:
    session["csrf"] = secrets.token_urlsafe(32)


def csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


# -- response headers -------------------------------------------------------------------------
def frame_ancestors(origins: Iterable[str]) -> str:
    """``'self'`` and the CRM origins that may embed a page; malformed origins are skipped."""
    allowed = ["'self'"]
    for origin in origins:
        if _ORIGIN.match(origin):
            allowed.append(origin)
        else:
            log.warning("CRM_EXPLAIN_EMBED_ORIGINS: %r is not an origin; it is ignored", origin)
    return " ".join(allowed)


def secure_headers(response: Response, *, embed_origins: Iterable[str] | None) -> Response:
    """``embed_origins`` None: the page may not be framed at all; otherwise by those origins."""
    ancestors = "'none'" if embed_origins is None else frame_ancestors(embed_origins)
    response.headers["Content-Security-Policy"] = _BASE_POLICY.format(ancestors=ancestors)
    if embed_origins is None:
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
