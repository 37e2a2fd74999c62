"""Helpers of the tree family's in-process tests: a tree job over the synthetic vertical data,
and a client to a feature party of an in-process build."""

from __future__ import annotations

from typing import Any

import httpx

from services.party.settings import PartySettings
from services.protocol.messages import GbdtModelSpec, TrainingSpec
from services.protocol.peers import PartyClient, SegmentClient
from tests.party.test_training import spec_for
from tests.synthetic import Vertical

TREES, DEPTH = 3, 2


def tree_spec(v: Vertical, mode: str, job_id: str = "trees-1") -> TrainingSpec:
    """A small ``gbdt`` job (3 trees of depth 2, 16 bins) in protection ``mode``."""
    model = GbdtModelSpec(family="gbdt", trees=TREES, depth=DEPTH, bins=16)
    spec = spec_for(v, job_id=job_id, model=model)
    return spec.model_copy(update={"protection": spec.protection.model_validate({"mode": mode})})


def runs_of(client: PartyClient) -> Any:
    """The label party's training runs (an in-process build)."""
    return client._http._transport.app.state.runs  # type: ignore[attr-defined]


def feature_client(client: PartyClient, name: str = "f0") -> SegmentClient:
    """A client to feature party ``name`` of the label party ``client``'s in-process build."""
    runs = runs_of(client)
    settings: PartySettings = runs.state.settings
    return runs.client_factory(f"http://{name}", settings)  # type: ignore[no-any-return]


def feature_app(peer: SegmentClient) -> Any:
    """The app behind an in-process feature client."""
    transport = peer._http._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


async def tree_call(peer: SegmentClient, job_id: str, kind: str, body: bytes) -> httpx.Response:
    """One raw tree request (no error raised: the test reads the answer)."""
    return await peer._http.post(
        f"/v1/jobs/{job_id}/trees/{kind}",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
