"""The audit log's hash chain verifies, and any edit, deletion or reordering breaks it."""

from __future__ import annotations

import threading

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, update

from services.registry.models import AuditEntry
from services.registry.store import audit
from tests.registry.util import bearer, onboard


async def _verify(client: httpx.AsyncClient, token: str) -> dict[str, object]:
    r = await client.get("/v1/audit/verify", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def _tamper(app: FastAPI, statement: object) -> None:
    with app.state.sessions() as session:
        session.execute(statement)
        session.commit()


async def test_edited_row_fails_verification(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    await onboard(client, admin_token, "Chain Co")
    report = await _verify(client, admin_token)
    assert report["ok"] is True and report["entries"] == 5 and report["first_bad_seq"] is None

    _tamper(
        app,
        update(AuditEntry)
        .where(AuditEntry.seq == 3)
        .values(payload={"name": "Someone Else", "kind": "oem"}),
    )
    report = await _verify(client, admin_token)
    assert report["ok"] is False and report["first_bad_seq"] == 3
    assert report["entries"] == 2
    assert "hash" in str(report["reason"])


async def test_rehashed_edit_and_deletion_are_caught(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    await onboard(client, admin_token, "Chain Co")
    with app.state.sessions() as session:
        entry = session.get_one(AuditEntry, 2)
        forged = audit.entry_hash(
            entry.prev_hash,
            seq=2,
            at=entry.at,
            actor="admin:someone-else",
            action=entry.action,
            subject=entry.subject,
            payload=entry.payload,
        )
    # A forger who recomputes the edited row's own hash breaks the next link instead.
    _tamper(
        app,
        update(AuditEntry)
        .where(AuditEntry.seq == 2)
        .values(actor="admin:someone-else", hash=forged),
    )
    report = await _verify(client, admin_token)
    assert report["ok"] is False and report["first_bad_seq"] == 3

    _tamper(app, delete(AuditEntry).where(AuditEntry.seq == 2))
    report = await _verify(client, admin_token)
    assert report["first_bad_seq"] == 3 and "gap" in str(report["reason"])


def test_concurrent_appends_never_fork_the_chain(app: FastAPI, admin_token: str) -> None:
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                with app.state.sessions() as session:
                    audit.append(session, actor=f"t{n}", action="test.append", subject=str(i))
                    session.commit()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with app.state.sessions() as session:
        report = audit.verify(session)
    assert report.ok and report.entries == 1 + 6 * 5
