"""A feature party lost in the middle of a serving-time alignment round (issue 18).

The label party has sent the round's first message and received the evaluated points (so its
copy of the feature party's key book has grown) when the feature party goes away: every later
call fails as a dead process's would. The prediction must fail as a whole with a clear 502,
leave nothing half-aligned behind, and succeed on retry once the feature party answers again,
with the same predictions the same features give under keys aligned at training time.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pyarrow.csv as pacsv
import pytest

from services.party.settings import PartySettings
from services.protocol.errors import ErrorCode, SpliceError
from services.protocol.messages import JobState, PredictRequest
from tests.conftest import InProcess
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.synthetic import Vertical


class Outage:
    """Fails every peer call after the first serving-round call while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.rounds_seen = 0
        self.refused = 0

    def wrap(self, factory: Any) -> Any:
        outage = self

        def client(url: str, settings: PartySettings) -> Any:
            inner = factory(url, settings)
            transport = inner._http._transport

            class Flaky(httpx.AsyncBaseTransport):
                async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                    if outage.armed:
                        if "/serving-psi" in request.url.path and outage.rounds_seen == 0:
                            outage.rounds_seen += 1  # step 1 reaches the party and is answered
                        else:
                            outage.refused += 1
                            raise httpx.ConnectError("the feature party is gone", request=request)
                    response = await transport.handle_async_request(request)
                    body = await response.aread()
                    return httpx.Response(
                        response.status_code, headers=response.headers, content=body
                    )

            inner._http._transport = Flaky()
            return inner

        return client


async def test_a_feature_party_lost_mid_round_fails_cleanly_and_the_retry_serves(
    vertical: Vertical, in_process: InProcess
) -> None:
    client = in_process(vertical)
    app = client._http._transport.app  # type: ignore[attr-defined]
    runs = app.state.runs
    factory = runs.client_factory
    outage = Outage()
    runs.client_factory = outage.wrap(factory)
    spec = protected(vertical, "plain", epochs=2)
    assert spec.alignment == "psi"
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error

    key = vertical.keys["f0"]
    columns = app.state.predictor.model_for(runs.runs[spec.job_id]).schema.columns
    boards = [
        r
        for r in pacsv.read_csv(vertical.label).select(columns).to_pylist()
        if "LABELONLY" not in str(r[key])
    ][:5]
    known = await client.predict(spec.job_id, PredictRequest(rows=boards))
    assert known.predicted == len(boards)

    # the feature party learns five new lots: copies of the boards' lots under new keys
    lots = {r[key]: r for r in pacsv.read_csv(vertical.features["f0"]).to_pylist()}
    new = {b[key]: f"LOT-MIDROUND-{i:03d}" for i, b in enumerate(boards)}
    f0 = factory("http://f0", app.state.party.settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=f0._http._transport.app), base_url="http://f0"
    ) as http:
        r = await http.post(
            "/v1/table/rows", json={"rows": [{**lots[k], key: v} for k, v in new.items()]}
        )
    assert r.status_code == 200, r.text
    renamed = [{**b, key: new[b[key]]} for b in boards]

    aligner = app.state.predictor.aligner
    rounds, asked = aligner.rounds, aligner.keys_asked
    outage.armed = True
    with pytest.raises(SpliceError) as failed:
        await client.predict(spec.job_id, PredictRequest(rows=renamed))
    assert failed.value.status in (502, 503), failed.value
    assert failed.value.code == ErrorCode.PEER_UNAVAILABLE, failed.value
    assert outage.rounds_seen == 1 and outage.refused >= 1  # lost between step 1 and step 3

    outage.armed = False  # the feature party is back
    answer = await client.predict(spec.job_id, PredictRequest(rows=renamed))
    assert answer.predicted == len(renamed), answer
    assert aligner.rounds > rounds and aligner.keys_asked > asked
    got = np.array([p.probability for p in answer.predictions], dtype=np.float64)
    expected = np.array([p.probability for p in known.predictions], dtype=np.float64)
    np.testing.assert_allclose(got, expected, atol=1e-6)
