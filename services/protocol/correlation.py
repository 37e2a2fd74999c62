"""The correlation id that ties one request, or one training job, together across services.

A context variable holds the id of the work in progress: the service middleware sets it from the
``X-Correlation-ID`` request header (or makes one), a label party sets it to the job id for a
training run, and every :class:`services.protocol.client.ServiceClient` call sends it on, so the
logs of all parties of a job carry the same id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

import httpx

HEADER = "X-Correlation-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

correlation_id: ContextVar[str | None] = ContextVar("splice_correlation_id", default=None)
job_id: ContextVar[str | None] = ContextVar("splice_job_id", default=None)


def valid(value: str | None) -> str | None:
    """``value`` if it is a usable correlation id (1-128 of ``A-Za-z0-9._:-``), else ``None``."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return None


def new_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


def current() -> str | None:
    """The correlation id of the work in progress, if any."""
    return correlation_id.get()


def bind_job(job: str) -> tuple[Token[str | None], Token[str | None]]:
    """Make ``job`` the current job and correlation id (for this task and the tasks it starts)."""
    return correlation_id.set(valid(job) or new_id()), job_id.set(job)


async def send_header(request: httpx.Request) -> None:
    """An ``httpx`` request hook: send the current correlation id, if any, with ``request``."""
    cid = correlation_id.get()
    if cid is not None and HEADER not in request.headers:
        request.headers[HEADER] = cid
