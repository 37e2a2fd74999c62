"""Quality alerts reach the organisations' webhooks (issue 18).

A local HTTP receiver stands for the OEM's webhook: when the label party reports a change of a
model version's quality status, the registry POSTs the event there, signed with its token signing
key (verified against its published JWKS; a tampered body fails), retrying a receiver that
answered 503 first. A report that does not change the status sends nothing; only the
organisation's admin registers a webhook, and a plain-http URL off this machine is refused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from joserfc.jwk import KeySet

from services.registry import webhooks
from tests.registry.contract_util import OWNER, PASTE, PCB, Orgs, model_version_body
from tests.registry.test_jobs import active  # noqa: F401


class Receiver:
    """A webhook receiver on loopback that answers 503 to its first ``fail`` requests."""

    def __init__(self, fail: int = 1) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(503)
                else:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/splice-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


async def test_a_quality_alert_is_posted_signed_to_the_webhooks(
    client: httpx.AsyncClient,
    active: tuple[str, Orgs],  # noqa: F811
    receiver: Receiver,
) -> None:
    cid, orgs = active
    hook = f"/v1/organisations/{orgs[OWNER]}/webhook"
    # only the organisation's admin registers it; cleartext off this machine is refused
    r = await client.put(hook, json={"url": receiver.url}, headers=orgs.auth(OWNER))
    assert r.status_code == 403, r.text
    manager = await orgs.auth_with(OWNER, "org:admin")
    r = await client.put(hook, json={"url": "http://events.example.com/x"}, headers=manager)
    assert r.status_code == 400 and r.json()["detail"]["field"] == "url", r.text
    r = await client.get(hook, headers=orgs.auth(OWNER))
    assert r.status_code == 200 and r.json() is None, r.text
    r = await client.put(hook, json={"url": receiver.url}, headers=manager)
    assert r.status_code == 200 and r.json()["url"] == receiver.url, r.text
    r = await client.get(f"/v1/organisations/{orgs[PASTE]}/webhook", headers=orgs.auth(OWNER))
    assert r.status_code == 403, r.text

    pcb = orgs.auth(PCB)
    job = (await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb)).json()["id"]
    await client.post(f"/v1/jobs/{job}/progress", json={"status": "finished"}, headers=pcb)
    body = await model_version_body(client, pcb, job)
    r = await client.post(f"/v1/jobs/{job}/model-versions", json=body, headers=pcb)
    assert r.status_code == 201, r.text
    report = {"status": "alert", "alerts": ["party pcb: PSI 1.18 of squeegee_pressure_n_mm"]}
    r = await client.put(f"/v1/jobs/{job}/quality", json=report, headers=pcb)
    assert r.status_code == 200, r.text
    for _ in range(100):
        if receiver.got:
            break
        await asyncio.sleep(0.05)
    ((headers, raw),) = receiver.got  # delivered once, after one 503
    assert receiver.fail == 0
    keys = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
    event = webhooks.verify(raw, headers["splice-signature"], keys)
    assert event["event"] == "model.quality_alert" and event["contract_id"] == cid
    assert event["org_id"] == orgs[OWNER] and event["model_version"] == 1
    assert event["alerts"] == report["alerts"] and event["id"] == headers["splice-event-id"]
    with pytest.raises(ValueError):
        webhooks.verify(raw.replace(b"alert", b"ok"), headers["splice-signature"], keys)

    # the same status again is no change: no event; back to ok is one
    r = await client.put(f"/v1/jobs/{job}/quality", json=report, headers=pcb)
    assert r.status_code == 200, r.text
    r = await client.put(f"/v1/jobs/{job}/quality", json={"status": "ok"}, headers=pcb)
    assert r.status_code == 200, r.text
    for _ in range(100):
        if len(receiver.got) > 1:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert [webhooks.verify(b, h["splice-signature"], keys)["event"] for h, b in receiver.got] == [
        "model.quality_alert",
        "model.quality_ok",
    ]
    r = await client.delete(hook, headers=manager)
    assert r.status_code == 204, r.text
    assert (await client.get(hook, headers=orgs.auth(OWNER))).json() is None
