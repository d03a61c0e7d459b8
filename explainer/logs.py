"""Structured logs: one JSON object per line, on standard error.

The API logs one line per request (``crm_explain.access``)::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "info", "logger": "crm_explain.access",
     "message": "request", "request_id": "9f1c…", "method": "POST",
     "rule": "/v1/models/<name>/explain", "status": 200, "duration_ms": 41.7,
     "model": "churn", "role": "crm", "key_id": "env-0"}

It never holds feature values, customer ids or bodies: the URL *rule* is logged, not the path
(``/v1/subjects/<customer_id>``), and of the path's parameters only a model's name.
Other ``crm_explain`` loggers (warnings, server errors) use the same format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "configure", "log_request"]

ACCESS_LOGGER = "crm_explain.access"
_ROOT_LOGGER = "crm_explain"

#: Fields a request line may carry; anything else given to ``log_request`` is dropped.
REQUEST_FIELDS = (
    "request_id",
    "method",
    "rule",
    "status",
    "duration_ms",
    "model",
    "role",
    "key_id",
)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=True)


class _StandardError(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Send ``crm_explain`` logs, as JSON lines, to standard error; once per process."""
    logger = logging.getLogger(_ROOT_LOGGER)
    if not any(isinstance(h, _StandardError) for h in logger.handlers):
        handler = _StandardError()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)


def log_request(**fields: Any) -> None:
    """One access line; only the :data:`REQUEST_FIELDS` are kept."""
    access = logging.getLogger(ACCESS_LOGGER)
    if access.isEnabledFor(logging.INFO):
        kept = {k: fields[k] for k in REQUEST_FIELDS if fields.get(k) is not None}
        access.info("request", extra={"fields": kept})
