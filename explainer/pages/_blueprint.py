"""The pages' blueprint; the views in the other modules attach to it."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "pages",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
