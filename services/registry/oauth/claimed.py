"""The client id a token request claims, read before (and without) authenticating it.

Used only to pick the rate-limit bucket: a forged claim can spend the named client's budget, but
never gets a token; the per-address limit bounds how fast anyone can do that.
"""

from __future__ import annotations

import base64
import binascii
import json

from services.registry.oauth.server import HttpRequest


def _basic_user(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def _assertion_subject(assertion: str) -> str | None:
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


def claimed_client_id(request: HttpRequest) -> str | None:
    """The client id of HTTP Basic, a client assertion's ``sub``, or the ``client_id`` field."""
    header = request.headers.get("authorization")
    if header:
        user = _basic_user(header)
        if user:
            return user
    for assertion in request.form.get("client_assertion", [])[:1]:
        sub = _assertion_subject(assertion)
        if sub:
            return sub
    for client_id in request.form.get("client_id", [])[:1]:
        if client_id:
            return client_id
    return None
