"""OpenAPI documentation of the error answers every route can give."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.protocol.errors import ErrorBody


class OAuthErrorBody(BaseModel):
    """An RFC 6749 (section 5.2) error answer of an OAuth endpoint."""

    error: str
    error_description: str | None = None
    error_uri: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorBody,
        "description": "The request was refused: `{code, message, detail}` says why (401 also "
        "sends `WWW-Authenticate`, 429 `Retry-After`).",
    },
    "5XX": {
        "model": ErrorBody,
        "description": "The service failed or cannot serve now (`{code, message, detail}`, "
        "never a traceback).",
    },
}
"""App-wide ``responses`` of a Splice service (pass to ``FastAPI(responses=...)``)."""

OAUTH_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": OAuthErrorBody | ErrorBody,
        "description": "An OAuth error (RFC 6749 `{error, error_description}`), or "
        "`{code, message, detail}` for a wrong content type (415) or too many requests (429, "
        "with `Retry-After`).",
    },
}
"""``responses`` of an OAuth endpoint, replacing the app-wide 4XX entry."""
