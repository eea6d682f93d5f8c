"""Structured logs: one JSON object per line (ts, level, event, fields).

Why: log collectors parse JSON without regexes, and a fixed `event` name per situation
makes reloads and errors countable. Request bodies are never logged (they hold user data);
only events the API itself emits (startup, reloads, errors) and uvicorn's lifecycle lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "churn.api"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; structured fields come from `extra={"fields": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def _iso_utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int((created % 1) * 1000):03d}Z"


def configure_logging(level: str = "INFO") -> None:
    """Send every logger (ours and uvicorn's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields (never pass request bodies here)."""
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": fields})
