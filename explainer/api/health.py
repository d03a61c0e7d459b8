"""Liveness and readiness, unauthenticated."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from explainer.api._state import service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    report = service().readiness()
    return report, 200 if report["ready"] else 503
