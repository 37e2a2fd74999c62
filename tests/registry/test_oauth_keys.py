"""Token signing keys: rotation, what the JWKS endpoint publishes, encryption at rest."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.protocol.jwt_verify import UnknownSigningKey, verify_access_token
from services.registry.db import make_engine
from services.registry.models import utcnow
from services.registry.models_oauth import SigningKey, SigningKeyStatus
from services.registry.oauth.keys import KeyVault, SigningKeyError
from services.registry.store import signing_keys
from tests.registry.conftest import ISSUER, KEY_ENCRYPTION_KEY, registry_settings
from tests.registry.oauth_util import decode_unverified, secret_client, token_for
from tests.registry.util import bearer


def _kid(token: str) -> str:
    kid: str = decode_unverified(token)[0]["kid"]
    return kid


async def _jwks(client: httpx.AsyncClient) -> dict[str, object]:
    r = await client.get("/.well-known/jwks.json")
    assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
    jwks: dict[str, object] = r.json()
    return jwks


def _published(jwks: dict[str, object]) -> list[str]:
    keys = jwks["keys"]
    assert isinstance(keys, list)
    return [k["kid"] for k in keys]


async def test_rotation_keeps_old_tokens_verifiable(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "Rotating Co")
    old_token = await token_for(app, who)
    old_kid = _kid(old_token)
    before = await _jwks(client)
    assert len(_published(before)) == 2  # active + next
    assert all("d" not in k for k in before["keys"])  # type: ignore[union-attr]
    next_kid = next(k for k in _published(before) if k != old_kid)

    r = await client.post("/v1/oauth/signing-keys/rotate", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    assert r.json()["active"] == next_kid  # the pre-published key signs now
    after = await _jwks(client)
    assert old_kid in _published(after) and len(_published(after)) == 3

    new_token = await token_for(app, who)
    assert _kid(new_token) == next_kid
    for token in (old_token, new_token):
        assert verify_access_token(token, after, issuer=ISSUER, audience=ISSUER)
        r = await client.get(f"/v1/organisations/{who.org_id}", headers=bearer(token))
        assert r.status_code == 200, r.text
    # A verifier holding the old document has the new key already: it was "next".
    assert verify_access_token(new_token, before, issuer=ISSUER, audience=ISSUER)

    # Once its tokens have expired, the retired key is no longer published...
    with app.state.sessions() as session:
        session.execute(
            update(SigningKey)
            .where(SigningKey.kid == old_kid)
            .values(retired_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    final = await _jwks(client)
    assert old_kid not in _published(final) and len(_published(final)) == 2
    # ...and its tokens fail everywhere (a party would refetch once, then refuse).
    with pytest.raises(UnknownSigningKey):
        verify_access_token(old_token, final, issuer=ISSUER, audience=ISSUER)
    r = await client.get(f"/v1/organisations/{who.org_id}", headers=bearer(old_token))
    assert r.status_code == 401

    r = await client.get("/v1/audit", headers=bearer(admin_token))
    actions = [e["action"] for e in r.json()]
    assert "signing_keys.created" in actions and "signing_keys.rotated" in actions


async def test_rotation_needs_an_operator(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "Curious Co")
    token = await token_for(app, who)
    r = await client.post("/v1/oauth/signing-keys/rotate", headers=bearer(token))
    assert r.status_code == 403
    r = await client.post("/v1/oauth/signing-keys/rotate")
    assert r.status_code == 401


def test_key_states_through_rotations(app: FastAPI) -> None:
    vault = app.state.vault
    with app.state.sessions() as session:
        first = signing_keys.active_signing_key(session, vault)
        assert signing_keys.active_signing_key(session, vault).kid == first.kid  # idempotent
        for _ in range(3):
            signing_keys.rotate_signing_keys(session, vault)
        session.commit()
        rows = session.scalars(select(SigningKey)).all()
        by_status = {s: [k for k in rows if k.status is s] for s in SigningKeyStatus}
        assert len(by_status[SigningKeyStatus.ACTIVE]) == 1
        assert len(by_status[SigningKeyStatus.NEXT]) == 1
        assert len(by_status[SigningKeyStatus.RETIRED]) == 3
        assert all(k.retired_at is not None for k in by_status[SigningKeyStatus.RETIRED])
        grace = timedelta(minutes=11)
        assert len(signing_keys.published_keys(session, retired_grace=grace)) == 5


def test_private_keys_are_encrypted_at_rest(app: FastAPI, migrated_url: str) -> None:
    with app.state.sessions() as session:
        signing_keys.active_signing_key(session, app.state.vault)
        session.commit()
        stored = session.scalars(select(SigningKey.private_key)).all()
    assert stored and all(s.startswith("fernet:") and "PRIVATE KEY" not in s for s in stored)

    # Another key encryption key cannot open them; listing the old one second still can.
    other = Fernet.generate_key().decode()
    stranger = KeyVault(SecretStr(other))
    with pytest.raises(SigningKeyError, match="KEY_ENCRYPTION_KEY"):
        stranger.unseal(stored[0])
    with pytest.raises(SigningKeyError, match="no key encryption key"):
        KeyVault(None).unseal(stored[0])
    rotated = KeyVault(SecretStr(f"{other},{KEY_ENCRYPTION_KEY}"))
    assert b"PRIVATE KEY" in rotated.unseal(stored[0])
    with app.state.sessions() as session:
        assert signing_keys.reseal_signing_keys(session, rotated) == len(stored)
        session.commit()
        resealed = session.scalars(select(SigningKey.private_key)).all()
    assert all(b"PRIVATE KEY" in stranger.unseal(s) for s in resealed)

    with pytest.raises(ValidationError, match="Fernet"):
        registry_settings(migrated_url, key_encryption_key=SecretStr("not-a-fernet-key"))


def test_without_a_key_encryption_key_keys_are_plain_pem() -> None:
    vault = KeyVault(None)
    assert not vault.encrypts
    assert vault.seal(b"-----BEGIN PRIVATE KEY-----\n").startswith("pem:")


def test_two_workers_create_one_active_key(app: FastAPI, migrated_url: str) -> None:
    vault = app.state.vault
    engines = [make_engine(migrated_url) for _ in range(2)]
    try:
        first = Session(engines[0])
        created = signing_keys.active_signing_key(first, vault).kid

        def second_worker() -> str:
            with Session(engines[1]) as session:
                kid = signing_keys.active_signing_key(session, vault).kid
                session.commit()
                return kid

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(second_worker)
            time.sleep(0.3)
            assert not pending.done()  # waiting for the first worker's lock
            first.commit()
            first.close()
            assert pending.result(timeout=30) == created
        with Session(engines[0]) as session:
            statuses = session.scalars(select(SigningKey.status)).all()
        assert sorted(statuses) == [SigningKeyStatus.ACTIVE, SigningKeyStatus.NEXT]
    finally:
        for engine in engines:
            engine.dispose()
