"""Logging for the services: one JSON object per line (``SPLICE_LOG_FORMAT=json``) or the human
format (default), the current correlation and job ids on every record, secrets scrubbed.

:func:`configure_logging` installs one root handler per process (idempotent); the
:class:`Redact` filter on it rewrites bearer tokens, ``client_secret`` and ``password`` values and
passwords in URLs in every message, its arguments and exception text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from services.protocol import correlation

FORMAT_ENV = "SPLICE_LOG_FORMAT"
LEVEL_ENV = "SPLICE_LOG_LEVEL"
MASK = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{MASK}"),
    # scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+):[^\s@/]*@"), rf"\1:{MASK}@"),
    # client_secret=..., "password": "...", access_token: ...
    (
        re.compile(
            r"(?i)((?:client_secret|password|passwd|access_token|refresh_token|secret)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        rf"\1{MASK}",
    ),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, secrets and URL passwords replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redact(logging.Filter):
    """Scrub secrets from a record's message, arguments (``SecretStr`` prints masked) and
    exception text, and stamp it with the current correlation and job ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string still gets logged, scrubbed
            message = f"{record.msg!s} {record.args!s}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation.correlation_id.get()
        if not hasattr(record, "job_id"):
            record.job_id = correlation.job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, correlation_id, job_id (and the
    exception text, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None),
        }
        job = getattr(record, "job_id", None)
        if job is not None:
            doc["job_id"] = job
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


def make_handler(fmt: str | None = None, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with the :class:`Redact` filter and the ``json`` or human formatter
    (``fmt`` default: ``$SPLICE_LOG_FORMAT``)."""
    kind = (fmt or os.environ.get(FORMAT_ENV, "human")).lower()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(Redact())
    handler.setFormatter(JsonFormatter() if kind == "json" else logging.Formatter(HUMAN_FORMAT))
    handler.set_name("splice")
    return handler


def configure_logging(fmt: str | None = None) -> None:
    """Install the Splice handler on the root logger once per process; with
    ``SPLICE_LOG_LEVEL`` set, also the root level. Uvicorn's loggers then propagate to it."""
    root = logging.getLogger()
    if any(h.get_name() == "splice" for h in root.handlers):
        return
    root.addHandler(make_handler(fmt))
    level = os.environ.get(LEVEL_ENV)
    if level:
        root.setLevel(level.upper())


def uvicorn_log_config() -> dict[str, object]:
    """A ``log_config`` for ``uvicorn.run`` that routes uvicorn's records through the root
    (Splice) handler instead of uvicorn's own, so they are scrubbed and, if asked, JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
