"""OAuth endpoints as a penetration tester tried them (issue 14).

* Two client authentication methods in one request were accepted (RFC 6749 section 2.3 allows
  one): HTTP Basic plus a client assertion, or plus a ``client_secret`` in the body. Now a 400
  ``invalid_request`` on the token, introspection and revocation endpoints, whichever would
  have succeeded.
* Any client could introspect any other's token (RFC 7662 expects the endpoint limited to the
  resource servers a token is for). Now only the client that holds the token's audience as a
  registered resource, and the operator, learn anything; anyone else is told ``active: false``.
"""

from __future__ import annotations

import secrets
import time

import httpx
from fastapi import FastAPI
from joserfc import jwt

from tests.registry.oauth_util import (
    INTROSPECT_URL,
    REVOKE_URL,
    TOKEN_URL,
    Registered,
    key_client,
    secret_client,
    token_for,
)
from tests.registry.util import bearer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _assertion(who: Registered, audience: str = TOKEN_URL) -> str:
    assert who.key is not None
    now = int(time.time())
    claims = {
        "iss": who.client_id,
        "sub": who.client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode({"alg": "ES256", "kid": who.key.kid or "k"}, claims, who.key)


async def test_two_client_authentication_methods_are_refused(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    basic = await secret_client(client, admin_token, "Basic Co", "jobs:run")
    keyed = await key_client(client, admin_token, "Keyed Co", "jobs:run")
    assert basic.secret is not None
    token = await token_for(app, basic)
    for url, form in (
        (TOKEN_URL, {"grant_type": "client_credentials"}),
        (INTROSPECT_URL, {"token": token}),
        (REVOKE_URL, {"token": token}),
    ):
        attempts = {
            "basic + assertion": (
                httpx.BasicAuth(basic.client_id, basic.secret),
                {"client_assertion_type": ASSERTION_TYPE, "client_assertion": _assertion(keyed)},
            ),
            "basic + client_secret": (
                httpx.BasicAuth(basic.client_id, basic.secret),
                {"client_id": basic.client_id, "client_secret": basic.secret},
            ),
            "assertion + client_secret": (
                None,
                {
                    "client_id": keyed.client_id,
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": _assertion(keyed),
                    "client_secret": "spl_cs_whatever",
                },
            ),
        }
        for name, (auth, extra) in attempts.items():
            r = await client.post(url, data={**form, **extra}, auth=auth)
            assert r.status_code == 400, (url, name, r.text)
            assert r.json()["error"] == "invalid_request", (url, name, r.text)
        # one method alone still works
        r = await client.post(url, data=form, auth=httpx.BasicAuth(basic.client_id, basic.secret))
        assert r.status_code == 200, (url, r.text)
    # the refused requests revoked nothing: the token was revoked by the last, valid call only
    r = await client.get(f"/v1/organisations/{basic.org_id}", headers=bearer(token))
    assert r.status_code == 401
