"""A run waiting for a lost feature party gives up at the contract's training deadline when that
comes before the resume timeout, and says so."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

from services.engine.tabular import read_table
from services.party.app import create_app
from services.party.settings import PartySettings
from services.party.training.driver import SplitTrainer
from services.protocol.messages import JobState
from services.protocol.peers import SegmentClient
from tests.conftest import key_master
from tests.party.test_training import spec_for
from tests.synthetic import make_vertical


class GoesDown(httpx.AsyncBaseTransport):
    """The feature party, unreachable from its ``after``-th training forward on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, after: int) -> None:
        self.inner, self.after, self.forwards = inner, after, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/forward"):
            self.forwards += 1
        if self.forwards >= self.after:
            raise httpx.ConnectError("the party is down")
        return await self.inner.handle_async_request(request)


async def test_the_wait_ends_at_the_contracts_training_deadline(tmp_path: Path) -> None:
    v = make_vertical(tmp_path / "data", rows=300, lots=40)
    ((name, table),) = v.features.items()
    app = create_app(
        PartySettings(
            name=name,
            table=table,
            key_column=v.keys[name],
            data_dir=tmp_path / name,
            key_master=SecretStr(key_master(name)),
        )
    )
    client = SegmentClient(
        f"http://{name}", transport=GoesDown(httpx.ASGITransport(app=app), after=6), retries=0
    )
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)

    async def training_deadline() -> datetime | None:
        return deadline

    trainer = SplitTrainer(
        spec_for(v, epochs=50),
        read_table(v.label),
        {name: client},
        resume_timeout=600.0,
        training_deadline=training_deadline,
    )
    t0 = time.monotonic()
    status = await trainer.run()
    await client.aclose()
    assert status.state is JobState.FAILED
    assert status.error is not None
    assert "did not come back within the contract's training deadline" in status.error
    assert deadline.isoformat() in status.error
    assert time.monotonic() - t0 < 30  # not the 600 s resume timeout
