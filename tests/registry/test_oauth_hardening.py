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


async def _introspect(
    client: httpx.AsyncClient, who: Registered | str, token: str
) -> dict[str, object]:
    if isinstance(who, str):  # the operator's admin token
        r = await client.post(INTROSPECT_URL, data={"token": token}, headers=bearer(who))
    else:
        assert who.secret is not None
        auth = httpx.BasicAuth(who.client_id, who.secret)
        r = await client.post(INTROSPECT_URL, data={"token": token}, auth=auth)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def _claim(
    client: httpx.AsyncClient, app: FastAPI, who: Registered, resource: str
) -> httpx.Response:
    auth = bearer(await token_for(app, who, scope="party:call"))
    return await client.post(
        f"/v1/oauth/clients/{who.client_id}/resources", json={"resource": resource}, headers=auth
    )


async def test_only_the_tokens_audience_and_the_operator_may_introspect_it(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    caller = await secret_client(client, admin_token, "Caller Co", "party:call predict:call")
    party = await secret_client(client, admin_token, "Party Co", "party:call")
    other = await secret_client(client, admin_token, "Other Co", "party:call")
    token = await token_for(
        app, caller, scope="predict:call", resource="https://party.example", contract_id="c-1"
    )
    # nobody holds the audience yet: every client is told nothing
    for asker in (caller, party, other):
        assert await _introspect(client, asker, token) == {"active": False}
    r = await _claim(client, app, party, "https://party.example")
    assert r.status_code == 200 and r.json()["resources"] == ["https://party.example"], r.text
    body = await _introspect(client, party, token)
    assert body["active"] is True and body["aud"] == "https://party.example"
    assert body["org_id"] == caller.org_id and body["contract_id"] == "c-1"
    # the token's own client and any other client still learn nothing
    for asker in (caller, other):
        assert await _introspect(client, asker, token) == {"active": False}
    # another organisation cannot take the resource over
    r = await _claim(client, app, other, "https://party.example")
    assert r.status_code == 409 and r.json()["code"] == "resource_taken", r.text
    # a client without party:call cannot claim one for itself
    reader = await secret_client(client, admin_token, "Reader Co", "reports:read")
    auth = bearer(await token_for(app, reader))
    r = await client.post(
        f"/v1/oauth/clients/{reader.client_id}/resources",
        json={"resource": "https://reader.example"},
        headers=auth,
    )
    assert r.status_code == 403
    # the operator introspects with its admin token; an unknown admin token is refused
    assert (await _introspect(client, admin_token, token))["active"] is True
    r = await client.post(
        INTROSPECT_URL, data={"token": token}, headers=bearer("spl_adm_" + "x" * 43)
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # a registry-audience token is introspected by the operator only
    registry_token = await token_for(app, caller, scope="party:call")
    assert await _introspect(client, party, registry_token) == {"active": False}
    assert (await _introspect(client, admin_token, registry_token))["active"] is True
