"""A party configured with a wrong client id (issue 19): not ready, and the error names the
party's credentials, not the caller's token; with the right one it is ready."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from services.party.app import create_app
from services.party.settings import PartySettings
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import OWNER, PASTE, Orgs, onboard_example_orgs
from tests.registry.oauth_util import token_for
from tests.registry.util import bearer
from tests.registry.world import PASTE_URL


def _party(registry: FastAPI, orgs: Orgs, tmp: Path, client_id: str) -> FastAPI:
    tmp.mkdir(parents=True)
    table = tmp / "paste.csv"
    table.write_text("lot,viscosity\nPL-1,1.5\nPL-2,1.7\n")
    who = orgs.clients[PASTE]
    assert who.secret is not None
    settings = PartySettings(
        name="paste",
        table=table,
        key_column="lot",
        data_dir=tmp / "paste",
        registry_url=ISSUER,
        public_url=PASTE_URL,
        allow_insecure_http=True,
        org_id=who.org_id,
        client_id=client_id,
        client_secret=SecretStr(who.secret),
        metrics_enabled=False,
        # the registry runs in this process: under a loaded CI runner its secret hashing can
        # take more than the 2 s production default, and the check would then report a timeout
        # instead of the wrong client id this test is about (seen once in CI)
        readiness_timeout_seconds=30.0,
    )
    return create_app(settings, registry_transport=httpx.ASGITransport(app=registry))


async def test_a_wrong_client_id_is_not_ready_and_blames_the_party(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path
) -> None:
    orgs = await onboard_example_orgs(app, client, admin_token)
    wrong = _party(app, orgs, tmp_path / "wrong", "no-such-client")
    oem_token = await token_for(app, orgs.clients[OWNER], audience=PASTE_URL)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrong), base_url=PASTE_URL
    ) as party:
        r = await party.get("/readyz")
        assert r.status_code == 503, r.text
        checks = r.json()["detail"]["checks"]
        assert checks["table"]["ok"] and checks["registry"]["ok"]
        assert not checks["credentials"]["ok"]
        assert "party 'paste'" in checks["credentials"]["error"]
        assert "no-such-client" in checks["credentials"]["error"]
        # the OEM's valid token is not what is wrong: the answer says whose credentials are
        r = await party.get("/v1/jobs/some-job", headers=bearer(oem_token))
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["detail"]["at_fault"] == "party_credentials"
        assert (
            "no-such-client" in body["message"]
            and "caller's token is not at fault" in (body["message"])
        )
    await wrong.state.registry.aclose()

    right = _party(app, orgs, tmp_path / "right", orgs.clients[PASTE].client_id)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=right), base_url=PASTE_URL
    ) as party:
        r = await party.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["credentials"]["ok"]
    await right.state.registry.aclose()
