"""Transparency reports of model versions: JSON for machines, one HTML page for people.

    report = build_report(record=record, generated_at=now, importance=table, ...)
    html = render_html(report)

The service (``ExplainerService.report``) gathers the parts; the API serves them at
``GET /v1/models/{name}/report`` and ``/report.html``; ``crm-explain report`` writes them;
audit bundles carry the JSON of every model version in its model card.
"""

from explainer.report._build import FORMAT_VERSION, SECTIONS, build_report
from explainer.report._html import render_html

__all__ = ["FORMAT_VERSION", "SECTIONS", "build_report", "render_html"]
