"""Secrets are shown once and stored only as hashes: no plain secret is anywhere in the database."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from tests.registry.oauth_util import Registered, token_for
from tests.registry.util import bearer, dump_tables, invite, onboard, register


async def test_no_plain_secret_is_stored(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    admin = bearer(admin_token)
    shown = [admin_token, await invite(client, admin_token)]
    org_id, initial_token = await onboard(client, admin_token, "Reflow Ltd")
    registered = (await register(client, initial_token)).json()
    who = Registered(org_id, registered["client_id"], registered["client_secret"])
    own = bearer(await token_for(app, who))  # a client rotates its own secret
    r = await client.post(f"/v1/oauth/clients/{registered['client_id']}/rotate", headers=own)
    r2 = await client.post(f"/v1/organisations/{org_id}/initial-access-tokens", headers=admin)
    shown += [initial_token, registered["client_secret"], r.json()["client_secret"]]
    shown.append(r2.json()["initial_access_token"])
    assert all(len(s) > 40 for s in shown)

    tables = dump_tables(migrated_url)
    text = repr(tables)
    for secret in shown:
        assert secret not in text
        assert secret.split("_", 2)[2] not in text  # not even without its prefix
    (client_row,) = tables["oauth_clients"]
    assert client_row["secret_hash"].startswith("$argon2id$")
    assert all(len(row["token_hash"]) == 64 for row in tables["initial_access_tokens"])

    url = make_url(migrated_url)
    if url.get_backend_name() == "sqlite":
        # Also the raw bytes, write-ahead log included, of the database file.
        db = Path(url.database or "")
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert raw, "expected a database file"
        for secret in shown:
            assert secret.encode() not in raw
