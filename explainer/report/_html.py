"""The transparency report as one self-contained, accessible HTML page.

Self-contained: the CSS is inline, there is no script and no URL to another host, so the
page renders offline, from a file, an e-mail attachment or an audit bundle. Accessible: a
``lang`` attribute, one ``h1`` and an ``h2`` per section (with a table of contents), tables
with captions and header cells, text colours with at least 7:1 contrast on their background,
and every bar in a chart also written out as a number.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["render_html"]


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("explainer.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    environment.globals.update(num=_number, pct=_percent)
    return environment


def render_html(report: Mapping[str, Any]) -> str:
    """The page for a report as :func:`explainer.report.build_report` made it."""
    from explainer.report._build import SECTIONS

    template = _environment().get_template("report.html")
    return str(template.render(r=report, sections=SECTIONS))


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:,.{digits}f}"


def _percent(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{100 * value:.1f}%"
