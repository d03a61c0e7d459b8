"""Prometheus metrics at ``/metrics`` (unauthenticated), and the access log line of each request.

    crm_explain_http_requests_total{method, endpoint, status}
    crm_explain_http_request_duration_seconds{method, endpoint, status}     (histogram)
    crm_explain_explanations_total{model, method, output}
    crm_explain_explain_request_duration_seconds{model, method}             (histogram)

``endpoint`` is the URL rule (``/v1/models/<name>/explain``), never the raw path; a path that
matches no rule counts as ``<unmatched>``. No label holds customer data, and no label takes
values a client can make up: a model's name is recorded only for a successful explanation, so
only registered models appear; an unusual HTTP method counts as ``OTHER``.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder the
workers can write, *before* the server starts: each worker then writes its samples there and
``/metrics`` adds them up across the workers (``prometheus_client``'s multiprocess mode). Empty
the folder between runs. Without the variable, each app counts in its own registry, so a test
may create as many apps as it likes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from explainer import logs
from explainer.validation import MODEL_NAME_PATTERN

__all__ = ["Metrics", "init_app", "metrics_of"]

bp = Blueprint("metrics", __name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_KEY = "crm_explain.metrics"
_STARTED = "crm_explain_started"
#: Endpoints (Flask's names) whose successes count as explanations.
EXPLAIN_ENDPOINTS = frozenset({"explain.explain"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_EXPLAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Metrics:
    """The service's metrics, in ``registry`` (None in multiprocess mode: they go to files)."""

    registry: CollectorRegistry | None
    requests: Counter
    latency: Histogram
    explanations: Counter
    explain_latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> Metrics:
        return cls(
            registry=registry,
            requests=Counter(
                "crm_explain_http_requests",
                "HTTP requests answered, by method, URL rule and status.",
                ("method", "endpoint", "status"),
                registry=registry,
            ),
            latency=Histogram(
                "crm_explain_http_request_duration_seconds",
                "Time to answer an HTTP request, by method, URL rule and status.",
                ("method", "endpoint", "status"),
                registry=registry,
            ),
            explanations=Counter(
                "crm_explain_explanations",
                "Explanations handed out, by model, method and output space.",
                ("model", "method", "output"),
                registry=registry,
            ),
            explain_latency=Histogram(
                "crm_explain_explain_request_duration_seconds",
                "Time to answer a successful explain request, by model and method.",
                ("model", "method"),
                buckets=_EXPLAIN_BUCKETS,
                registry=registry,
            ),
        )

    def exposition(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


_shared: Metrics | None = None


def _metrics_for_new_app() -> Metrics:
    """Multiprocess mode: one set per process (they write to the shared files).
    Otherwise: a fresh registry per app."""
    global _shared
    if not os.environ.get(MULTIPROC_ENV):
        return Metrics.create(CollectorRegistry(auto_describe=True))
    if _shared is None:
        _shared = Metrics.create(None)
    return _shared


def metrics_of(app: Flask) -> Metrics:
    metrics: Metrics = app.extensions[_KEY]
    return metrics


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus metrics."""
    body = metrics_of(current_app).exposition()
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _start() -> None:
    g.setdefault(_STARTED, time.perf_counter())


def _observe(response: Response) -> Response:
    started = g.get(_STARTED)
    elapsed = time.perf_counter() - started if started is not None else 0.0
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    method = request.method if request.method in _METHODS else "OTHER"
    status = response.status_code
    metrics = metrics_of(current_app)
    metrics.requests.labels(method, rule, str(status)).inc()
    metrics.latency.labels(method, rule, str(status)).observe(elapsed)
    model = _model_name()
    if request.endpoint in EXPLAIN_ENDPOINTS and status == 200 and model is not None:
        _count_explanations(metrics, model, elapsed)
    key = g.get("api_key")
    logs.log_request(
        request_id=g.get("request_id"),
        method=method,
        rule=rule,
        status=status,
        duration_ms=round(elapsed * 1000, 3),
        model=model,
        role=getattr(key, "role", None),
        key_id=getattr(key, "id", None),
    )
    return response


def _model_name() -> str | None:
    name = (request.view_args or {}).get("name")
    return name if isinstance(name, str) and _MODEL_NAME.match(name) else None


def _count_explanations(metrics: Metrics, model: str, elapsed: float) -> None:
    body: Any = request.get_json(silent=True)  # parsed (and cached) by the view
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        return
    method = body.get("method") or "shap"
    output = body.get("output") or "probability"
    metrics.explanations.labels(model, method, output).inc(len(body["instances"]))
    metrics.explain_latency.labels(model, method).observe(elapsed)


def init_app(app: Flask) -> None:
    app.extensions[_KEY] = _metrics_for_new_app()
    app.register_blueprint(bp)
    app.before_request(_start)
    app.after_request(_observe)
    logs.configure()
