"""``/docs``: the API reference as one web page, rendered on the server from ``/openapi.json``.

No script and nothing from another site: the page and its stylesheet (``static/docs.css``)
come from this service, so it works where a CDN cannot be reached, and a strict
Content-Security-Policy holds. Unauthenticated, like the document it renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, url_for
from markupsafe import Markup, escape

from explainer.api.openapi import openapi_spec

__all__ = ["init_app", "render"]

bp = Blueprint("docs", __name__, static_folder="static", static_url_path="/docs/assets")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_METHOD_ORDER = ("get", "post", "put", "patch", "delete")


@bp.get("/docs")
def docs() -> Response:
    """The API reference, as a web page."""
    page = render(openapi_spec(current_app), stylesheet=url_for("docs.static", filename="docs.css"))
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def render(spec: Mapping[str, Any], *, stylesheet: str) -> str:
    info = spec.get("info", {})
    operations = list(_operations(spec))
    schemas = spec.get("components", {}).get("schemas", {})
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(info.get('title', 'API'))} API reference</title>",
        f'<link rel="stylesheet" href="{escape(stylesheet)}"></head><body>',
        "<header>",
        f"<h1>{escape(info.get('title', 'API'))} <small>{escape(info.get('version', ''))}"
        "</small></h1>",
        *(f"<p>{_inline(p)}</p>" for p in str(info.get("description", "")).split("\n\n")),
        _auth(spec),
        '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a> '
        f"(OpenAPI {escape(spec.get('openapi', ''))}).</p>",
        "</header>",
        "<nav><h2>Operations</h2><ul>",
        *(
            f'<li><a href="#{escape(op["operationId"])}"><span class="method {m}">{m.upper()}'
            f"</span> <code>{escape(path)}</code></a> {escape(op.get('summary', ''))}</li>"
            for path, m, op in operations
        ),
        "</ul></nav><main>",
        *(_operation(path, m, op) for path, m, op in operations),
        "<section><h2>Schemas</h2>",
        *(_schema_section(name, schema) for name, schema in schemas.items()),
        "</section></main></body></html>",
    ]
    return "\n".join(parts)


def _operations(spec: Mapping[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in spec.get("paths", {}).items():
        for method in _METHOD_ORDER:
            if method in item:
                yield path, method, item[method]


def _auth(spec: Mapping[str, Any]) -> str:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return "".join(
        f"<p><strong>Authentication</strong> ({escape(name)}): "
        f"{_inline(scheme.get('description', ''))}</p>"
        for name, scheme in schemes.items()
    )


def _operation(path: str, method: str, op: Mapping[str, Any]) -> str:
    role = op.get("x-required-role")
    access = (
        f'<span class="role">role: {escape(role)}</span>'
        if role
        else '<span class="role open">no key needed</span>'
    )
    parts = [
        f'<section class="operation" id="{escape(op["operationId"])}">',
        f'<h3><span class="method {method}">{method.upper()}</span> <code>{escape(path)}</code>'
        f" {access}</h3>",
        f"<p>{escape(op.get('summary', ''))}</p>",
    ]
    if op.get("description"):
        parts.append(f"<p>{_inline(op['description'])}</p>")
    if op.get("parameters"):
        parts.append(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>"
            "<th>description</th></tr>"
        )
        for p in op["parameters"]:
            required = " <em>required</em>" if p.get("required") else ""
            parts.append(
                f"<tr><td><code>{escape(p['name'])}</code>{required}</td>"
                f"<td>{escape(p['in'])}</td><td>{_type(p.get('schema', {}))}</td>"
                f"<td>{_inline(p.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            optional = "" if body.get("required") else " (optional)"
            parts.append(
                f"<h4>Request body{optional}</h4><p><code>{escape(media)}</code>: "
                f"{_type(content.get('schema', {}))}</p>"
            )
    parts.append("<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        bodies = ", ".join(
            f"<code>{escape(media)}</code> {_type(content.get('schema', {}))}"
            for media, content in response.get("content", {}).items()
        )
        parts.append(
            f"<tr><td>{escape(status)}</td><td>{escape(response.get('description', ''))}</td>"
            f"<td>{bodies}</td></tr>"
        )
    parts.append("</table></section>")
    return "\n".join(parts)


def _schema_section(name: str, schema: Mapping[str, Any]) -> str:
    parts = [f'<section class="schema" id="schema-{escape(name)}"><h3>{escape(name)}</h3>']
    if schema.get("description"):
        parts.append(f"<p>{_inline(schema['description'])}</p>")
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", ()))
        parts.append("<table><tr><th>field</th><th>type</th><th>description</th></tr>")
        for prop, sub in properties.items():
            mark = " <em>required</em>" if prop in required else ""
            parts.append(
                f"<tr><td><code>{escape(prop)}</code>{mark}</td><td>{_type(sub)}</td>"
                f"<td>{_inline(sub.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    extra = schema.get("additionalProperties")
    if extra is False:
        parts.append("<p>No other fields are accepted.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _type(schema: Mapping[str, Any]) -> Markup:
    """A schema in a few words: ``string (1-128 characters)``, ``array of <a>Instance</a>``."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return Markup('<a href="#schema-{0}">{0}</a>').format(name)
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return Markup(" | ").join(_type(s) for s in schema[keyword])
    if "enum" in schema:
        return Markup("one of ") + Markup(", ").join(
            Markup("<code>{}</code>").format(repr(e) if not isinstance(e, str) else e)
            for e in schema["enum"]
        )
    if "const" in schema:
        return Markup("<code>{}</code>").format(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        text = Markup("array of ") + _type(schema.get("items", {}))
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = Markup("object of ") + _type(schema["additionalProperties"])
    else:
        text = Markup(escape(kind if isinstance(kind, str) else " | ".join(kind)))
    limits = _limits(schema)
    return text + (Markup(" <small>({})</small>").format(limits) if limits else "")


def _limits(schema: Mapping[str, Any]) -> str:
    words = []
    for key, text in (
        ("minimum", "≥ {}"),
        ("maximum", "≤ {}"),
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("pattern", "matching {}"),
        ("default", "default {}"),
    ):
        if key in schema:
            words.append(text.format(schema[key]))
    return ", ".join(words)


def _inline(text: str) -> Markup:
    """Plain text with `code` spans."""
    pieces = str(text).split("`")
    return Markup("").join(
        Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(pieces)
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
