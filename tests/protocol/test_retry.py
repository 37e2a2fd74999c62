"""The one retry policy (services/protocol/retry.py) as every service client applies it."""

from __future__ import annotations

import time

import httpx
import pytest

from services.protocol.client import ServiceClient
from services.protocol.errors import ErrorCode, NotFound, PeerError, SpliceError
from services.protocol.retry import Retryable, RetryPolicy


def _server(answers: list[int], retry_after: str | None, seen: list[float]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        if code == 200:
            return httpx.Response(200, json={"ok": True})
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        body = {"code": "not_now", "message": f"answer {code}"}
        return httpx.Response(code, json=body, headers=headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_replaces_the_backoff(status: int) -> None:
    seen: list[float] = []
    transport = _server([status, 200], "0.3", seen)
    async with ServiceClient("http://x", transport=transport, backoff=0.001) as client:
        assert (await client.request("POST", "/v1/x", json={}, retry_reads=False)).json() == {
            "ok": True
        }
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 0.29  # the computed backoff would have been ~1 ms


async def test_retry_after_is_capped() -> None:
    seen: list[float] = []
    transport = _server([503, 200], "3600", seen)
    async with ServiceClient("http://x", transport=transport, backoff_cap=0.05) as client:
        await client.get_json("/")
    assert len(seen) == 2 and seen[1] - seen[0] < 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
async def test_refusals_are_not_retried(status: int) -> None:
    seen: list[float] = []
    transport = _server([status], None, seen)
    async with ServiceClient("http://x", transport=transport, backoff=0.001) as client:
        with pytest.raises(SpliceError) as err:
            await client.get_json("/")
    assert len(seen) == 1
    assert err.value.status == status
    if status == 404:
        assert isinstance(err.value, NotFound)


async def test_attempts_are_bounded_and_the_last_answer_is_raised() -> None:
    seen: list[float] = []
    transport = _server([503], "0", seen)
    async with ServiceClient("http://x", transport=transport, retries=3, backoff=0.001) as c:
        with pytest.raises(SpliceError) as err:
            await c.get_json("/")
    assert len(seen) == 4 and err.value.status == 503


async def test_a_lost_answer_is_retried_only_for_idempotent_requests() -> None:
    calls: list[str] = []

    def lost(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadError("reset after the request was sent")

    transport = httpx.MockTransport(lost)
    async with ServiceClient("http://x", transport=transport, retries=2, backoff=0.001) as c:
        with pytest.raises(PeerError) as err:
            await c.request("POST", "/", json={}, retry_reads=False)
        assert calls == ["POST"] and err.value.code is ErrorCode.PEER_UNAVAILABLE
        with pytest.raises(PeerError):
            await c.request("PUT", "/", json={}, retry_reads=True)
    assert calls == ["POST", "PUT", "PUT", "PUT"]


async def test_policy_call_retries_only_retryable_failures() -> None:
    policy = RetryPolicy(retries=2, backoff=0.001)
    tries: list[int] = []

    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise Retryable("not yet")
        return "done"

    assert await policy.call(flaky) == "done" and len(tries) == 3

    async def broken() -> str:
        tries.append(1)
        raise ValueError("a bug, not a transient failure")

    tries.clear()
    with pytest.raises(ValueError):
        await policy.call(broken)
    assert len(tries) == 1


def test_background_waits_grow_are_capped_and_honour_retry_after() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_cap=30.0)
    waits = [policy.wait(n) for n in range(10)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0
    assert all(15.0 <= w <= 30.0 for w in waits[5:])
    assert policy.wait(0, retry_after=12.5) == 12.5
    assert policy.wait(0, retry_after=3600) == 30.0
