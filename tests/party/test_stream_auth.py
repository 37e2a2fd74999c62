"""Who may open a step stream, and that every message is checked again, with the party's real
token verification and contract rules; the registry's answers (its key set, the contract's
standing) come from this test, so it can revoke them mid-stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.party.app import create_app
from services.party.auth import Authorizer, ContractStanding
from services.party.caches import JwksCache
from services.party.settings import PartySettings
from services.protocol.errors import ErrorBody, ErrorCode
from services.protocol.messages import PrepareJob
from services.protocol.stream_client import StepStream
from tests.party.live import serve_in_thread
from tests.party.test_bad_input import JOB, frame, fwd, handles, prepare_spec
from tests.party.test_bad_input import table as table  # noqa: F401 - the module's data fixture
from tests.party.test_stream import _call, _message, _ws_url
from tests.protocol.test_jwt_verify import AUDIENCE, EC, ISSUER, JWKS, _sign


@dataclass
class Registry:
    """The registry's side of the story, as the party sees it."""

    active: bool = True
    checks: int = 0

    async def check(self, contract_id: str, org_id: str, job_id: str | None) -> ContractStanding:
        self.checks += 1
        known = (contract_id, org_id, job_id) == ("c-1", "org-pcb", JOB)
        return ContractStanding(
            active=self.active and known, caller_role="label", callee_role="feature", job_ok=known
        )


class _Link:
    """The part of a registry link the party's job endpoints use."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer


def token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-pcb",
        "client_id": "client-pcb",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": f"t-{time.monotonic_ns()}",
        "scope": "party:call",
        "org_id": "org-pcb",
        "contract_id": "c-1",
        "job_id": JOB,
    }
    claims.update(changes)
    return _sign({k: v for k, v in claims.items() if v is not None}, EC)


@pytest.fixture
def world(table: Path, tmp_path: Path) -> Iterator[tuple[str, Registry]]:  # noqa: F811
    registry = Registry()
    keys = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json=JWKS))
    )
    authorizer = Authorizer(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=JwksCache(keys, "http://registry/.well-known/jwks.json"),
        check=registry.check,
        check_ttl=0.0,  # ask on every call: a revocation shows on the next message
    )
    app = create_app(
        PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp_path / "p")
    )
    app.state.party.prepare(PrepareJob.model_validate(prepare_spec()))
    app.state.registry = _Link(authorizer)
    with serve_in_thread(app) as url:
        yield url, registry


def _refusal(exc: InvalidStatus) -> tuple[int, str]:
    body = ErrorBody.model_validate_json(exc.response.body or b"")
    return exc.response.status_code, body.code


@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        (None, 401, ErrorCode.UNAUTHENTICATED),
        ("not-a-jwt", 401, ErrorCode.INVALID_TOKEN),
        ({"job_id": "job-other"}, 403, ErrorCode.FORBIDDEN),
        ({"scope": "jobs:run"}, 403, ErrorCode.FORBIDDEN),
        ({"org_id": "org-other"}, 403, ErrorCode.FORBIDDEN),
        ({"aud": "someone-else"}, 401, ErrorCode.INVALID_TOKEN),
    ],
    ids=["no-token", "garbage", "other-job", "no-party-call", "not-a-party", "other-audience"],
)
async def test_upgrade_is_denied_like_an_http_call(
    world: tuple[str, Registry],
    claims: dict[str, str] | str | None,
    status: int,
    code: ErrorCode,
) -> None:
    url, _ = world
    # the token is made now, not at collection: a long suite must not outlive it
    headers = {}
    if claims is not None:
        bearer = claims if isinstance(claims, str) else token(**claims)
        headers = {"authorization": f"Bearer {bearer}"}
    with pytest.raises(InvalidStatus) as info:
        async with connect(_ws_url(url), additional_headers=headers):
            pass
    assert _refusal(info.value) == (status, code.value)


async def test_every_message_is_checked_against_the_contract(world: tuple[str, Registry]) -> None:
    url, registry = world
    auth = {"authorization": f"Bearer {token()}"}
    async with connect(_ws_url(url), additional_headers=auth) as ws:
        ok = _message("forward", frame(fwd(0), handles=handles(0, 1)))
        _, status, body = await _call(ws, ok)
        assert status == 200, body
        checks = registry.checks
        registry.active = False  # the contract is suspended while the stream is open
        embed = _message("embed", frame({"job_id": JOB}, handles=handles(0)), seq=2)
        _, status, body = await _call(ws, embed)
        assert (status, ErrorBody.model_validate_json(body).code) == (403, "forbidden")
        assert registry.checks > checks
        registry.active = True  # reinstated: the same stream serves again
        _, status, body = await _call(
            ws, _message("embed", frame({"job_id": JOB}, handles=handles(0)), seq=3)
        )
        assert status == 200, body


async def test_a_token_that_expires_ends_its_stream(world: tuple[str, Registry]) -> None:
    url, _ = world
    # valid for ~2 s more (30 s of clock-skew leeway are allowed after exp)
    expiring = token(exp=int(time.time()) - 28)
    async with connect(
        _ws_url(url), additional_headers={"authorization": f"Bearer {expiring}"}
    ) as ws:
        _, status, body = await _call(ws, _message("forward", frame(fwd(0), handles=handles(0))))
        assert status == 200, body
        time.sleep(2.5)
        message = _message("embed", frame({"job_id": JOB}, handles=handles(0)), seq=2)
        _, status, body = await _call(ws, message)
        assert (status, ErrorBody.model_validate_json(body).code) == (401, "invalid_token")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008


class _Renewing(httpx.Auth):
    """First the expiring token; after a 401 a fresh one (as the registry client does)."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.issued = 0

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {self.first}"
        response = yield request
        if response.status_code == 401:
            self.issued += 1
            request.headers["authorization"] = f"Bearer {token()}"
            yield request


async def test_the_label_party_reopens_the_stream_with_a_fresh_token(
    world: tuple[str, Registry],
) -> None:
    url, _ = world
    auth = _Renewing(token(exp=int(time.time()) - 28))
    stream = StepStream(url, JOB, auth=auth, tls=None, connect_timeout=5, read_timeout=10)
    try:
        status, body = await stream.call(
            "forward", frame(fwd(0), handles=handles(0, 1)), deadline_ms=None
        )
        assert status == 200, body
        time.sleep(2.5)
        status, body = await stream.call(
            "forward", frame(fwd(0, key="k-same-step-0"), handles=handles(0, 1)), deadline_ms=None
        )
        # a new stream, a fresh token; the step itself is refused as a replay (another key)
        assert auth.issued == 1
        assert (status, ErrorBody.model_validate_json(body).code) == (409, "step_conflict")
    finally:
        await stream.aclose()
