"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from pydantic import SecretStr

from services.engine.keyed import JobKey
from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.peers import PartyClient, SegmentClient
from tests.synthetic import Vertical, make_vertical

torch.set_num_threads(1)


@pytest.fixture
def vertical(tmp_path: Path) -> Vertical:
    """One feature party, keys repeating, partial overlap."""
    return make_vertical(tmp_path / "data", rows=1500, lots=120, seed=3, parties=1)


InProcess = Callable[..., PartyClient]
"""``build(vertical, **feature_settings)``: a label party whose feature parties run in process."""


def key_master(party: str) -> str:
    """The key master the test parties are configured with (so baselines can match them)."""
    return f"test-key-master-{party}"


def job_keys(parties: list[str], job_id: str) -> dict[str, JobKey]:
    """The job keys test parties configured by :func:`key_master` derive for ``job_id``."""
    return {p: JobKey.derive(key_master(p).encode(), job_id) for p in parties}


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[InProcess]:
    """Build a label party whose feature parties are in-process apps (ASGI transport)."""
    clients: list[PartyClient] = []

    def build(v: Vertical, **feature_settings: Any) -> PartyClient:
        # each build's parties have their own disks: two builds may run the same job id
        root = tmp_path / f"parties-{len(clients)}"
        apps = {
            name: create_app(
                PartySettings(
                    name=name,
                    table=path,
                    key_column=v.keys[name],
                    data_dir=root / name,
                    key_master=SecretStr(key_master(name)),
                    he_workers=1,
                    **feature_settings,
                )
            )
            for name, path in v.features.items()
        }

        def factory(url: str, _: PartySettings) -> SegmentClient:
            host = httpx.URL(url).host
            return SegmentClient(url, transport=httpx.ASGITransport(app=apps[host]))

        label = create_app(
            PartySettings(
                name="maker",
                table=v.label,
                data_dir=root / "maker",
                key_master=SecretStr(key_master("maker")),
            ),
            client_factory=factory,
        )
        client = PartyClient("http://maker", transport=httpx.ASGITransport(app=label))
        clients.append(client)
        return client

    yield build
    for c in clients:
        await c.aclose()
