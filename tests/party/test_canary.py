"""Issue 5's canary: no raw key and no feature value ever crosses the wire.

Unique ids and feature values are planted in both parties' tables; every byte the label party
and the feature party exchange during alignment (PSI), training, evaluation and inference is
captured, in plain and in ckks mode, and scanned for them (as text and as float32/float64 bytes).
Issue 18: the feature party then adds new lots (new canary ids, a new canary value) and the
label party predicts boards naming them (an incremental alignment round at serving time) and
reads the feature party's drift scores; those messages are scanned too.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from services.party.settings import PartySettings
from services.protocol.messages import JobState, PredictRequest
from tests.conftest import InProcess
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.party.trees_world import TREES, feature_app, feature_client, runs_of, tree_spec
from tests.synthetic import Vertical

CANARY_VALUE = 7321.123456789
NEW_VALUE = 8421.987654321


def plant(v: Vertical, tmp: Path) -> tuple[Vertical, list[bytes]]:
    """Copies of the tables whose keys are unique canary ids and with one canary value."""
    key = v.keys["f0"]
    label, feature = pacsv.read_csv(v.label), pacsv.read_csv(v.features["f0"])
    old = feature.column(key).to_pylist()
    rename = {k: f"CANARY-{i:05d}-ZQX" for i, k in enumerate(old)}
    feature = feature.set_column(
        feature.column_names.index(key), key, pa.array([rename[k] for k in old])
    )
    refs = label.column(key).to_pylist()
    label = label.set_column(
        label.column_names.index(key),
        key,
        pa.array([rename.get(k, f"{k}-ZQX-LABELONLY") for k in refs]),
    )
    first = next(n for n in feature.column_names if n != key and pa.types.is_floating(
        feature.schema.field(n).type))  # fmt: skip
    values = feature.column(first).to_pylist()
    values[0] = CANARY_VALUE
    feature = feature.set_column(feature.column_names.index(first), first, pa.array(values))
    pacsv.write_csv(label, tmp / "label.csv")
    pacsv.write_csv(feature, tmp / "f0.csv")
    # long enough that random ciphertext bytes never match by chance (>= 7 bytes each)
    canaries = [b"CANARY-", b"-ZQX-LABELONLY", repr(CANARY_VALUE).encode()]
    canaries += [f"CANARY-{i:05d}-ZQX".encode() for i in range(len(old))]
    canaries += [struct.pack("<d", CANARY_VALUE)]
    return Vertical(tmp / "label.csv", {"f0": tmp / "f0.csv"}, dict(v.keys)), canaries


def record(runs: Any) -> list[bytes]:
    """Every request and answer body between the label party of ``runs`` and its peers."""
    wire: list[bytes] = []
    factory = runs.client_factory

    def recording(url: str, settings: PartySettings) -> Any:
        inner = factory(url, settings)
        transport = inner._http._transport

        class Recorder(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                wire.append(request.content)
                response = await transport.handle_async_request(request)
                body = await response.aread()
                wire.append(body)
                return httpx.Response(response.status_code, headers=response.headers, content=body)

        inner._http._transport = Recorder()
        return inner

    runs.client_factory = recording
    return wire


@pytest.mark.parametrize("mode", ["plain", "ckks"])
async def test_no_key_or_feature_value_crosses_the_wire(
    vertical: Vertical, in_process: InProcess, tmp_path: Path, mode: str
) -> None:
    v, canaries = plant(vertical, tmp_path)
    client = in_process(v)
    runs = client._http._transport.app.state.runs  # type: ignore[attr-defined]
    factory = runs.client_factory
    wire = record(runs)
    recording = runs.client_factory
    spec = protected(v, mode, epochs=2)
    assert spec.alignment == "psi"
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error
    assert status.rows["f0_shared"] > 0 and status.test  # aligned, trained and evaluated
    assert len(wire) > 20 and sum(map(len, wire)) > 10_000
    # inference too: predictions for aligned rows travel over the same links
    before = len(wire)
    app = client._http._transport.app  # type: ignore[attr-defined]
    columns = app.state.predictor.model_for(runs.runs[spec.job_id]).schema.columns
    table = pacsv.read_csv(v.label)
    key = v.keys["f0"]
    shared = [r for r in table.select(columns).to_pylist() if "LABELONLY" not in str(r[key])]
    answer = await client.predict(spec.job_id, PredictRequest(rows=shared[:50]))
    assert len(answer.predictions) == 50 and len(wire) > before  # the feature party was asked

    # issue 18: new lots at the feature party, aligned at serving time; its drift scores
    f0 = factory("http://f0", app.state.party.settings)
    f0_app = f0._http._transport.app
    rows = pacsv.read_csv(v.features["f0"]).to_pylist()[:5]
    value = next(k for k, x in rows[0].items() if k != key and isinstance(x, float))
    new = [{**r, key: f"CANARY-NEW-{i:03d}-ZQX"} for i, r in enumerate(rows)]
    new[0][value] = NEW_VALUE
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=f0_app), base_url="http://f0"
    ) as http:
        r = await http.post("/v1/table/rows", json={"rows": new})
    assert r.status_code == 200, r.text
    canaries += [b"CANARY-NEW-", repr(NEW_VALUE).encode(), struct.pack("<d", NEW_VALUE)]
    boards = [{**b, key: n[key]} for b, n in zip(shared[:5], new, strict=True)]
    rounds = app.state.predictor.aligner.rounds
    answer = await client.predict(spec.job_id, PredictRequest(rows=boards))
    assert answer.predicted == 5 and app.state.predictor.aligner.rounds == rounds + 1
    drift = await recording("http://f0", app.state.party.settings).drift(spec.job_id)
    assert drift["columns"], drift
    for canary in canaries:
        leaks = [i for i, body in enumerate(wire) if canary in body]
        assert not leaks, f"{canary!r} crossed the wire in message(s) {leaks[:5]}"
    # the planted value really is in the feature party's table, so the scan can fail
    assert np.isclose(CANARY_VALUE, float(repr(CANARY_VALUE)))
    assert CANARY_VALUE in pacsv.read_csv(v.features["f0"]).column(1).to_pylist()


@pytest.mark.parametrize("mode", ["plain", "ckks"])
async def test_tree_family_sends_no_key_value_threshold_or_plain_gradient(
    vertical: Vertical, in_process: InProcess, tmp_path: Path, mode: str
) -> None:
    """The tree family over the same wire (issue 20): PSI, tree training, prediction. Neither
    a key, a feature value nor a threshold (the feature party's bin edges) ever crosses; in
    ckks mode no plaintext gradient or hessian either (in plain mode they do, by design: the
    scan finds them, so it can fail)."""
    v, canaries = plant(vertical, tmp_path)
    client = in_process(v)
    runs = runs_of(client)
    feature = feature_app(feature_client(client))  # before recording wraps the transports
    wire = record(runs)
    spec = tree_spec(v, mode)
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error
    assert len(status.history) == TREES and status.test["auc"] > 0.5
    app = client._http._transport.app  # type: ignore[attr-defined]
    columns = app.state.predictor.model_for(runs.runs[spec.job_id]).schema.columns
    table = pacsv.read_csv(v.label)
    key = v.keys["f0"]
    shared = [r for r in table.select(columns).to_pylist() if "LABELONLY" not in str(r[key])]
    before = len(wire)
    answer = await client.predict(spec.job_id, PredictRequest(rows=shared[:50]))
    assert len(answer.predictions) == 50 and len(wire) > before
    role = feature.state.tree_roles.roles[spec.job_id]
    edges = [float(e) for fb in role.edges for e in fb.upper if np.isfinite(e)]
    assert len(edges) > 10 and role.splits, "the feature party made splits with thresholds"
    secrets = [*canaries, *(struct.pack("<d", e) for e in edges)]
    for secret in secrets:
        leaks = [i for i, body in enumerate(wire) if secret in body]
        assert not leaks, f"{secret!r} crossed the wire in message(s) {leaks[:5]}"
    # the first tree's gradients and hessians (binary: p0 - y and p0 (1 - p0))
    p0 = 1.0 / (1.0 + np.exp(-float(runs.runs[spec.job_id].model.base[0])))
    plain_values = [struct.pack("<d", x) for x in (p0, p0 - 1.0, p0 * (1.0 - p0))]
    found = [any(value in body for body in wire) for value in plain_values]
    assert found == ([True, True, True] if mode == "plain" else [False, False, False])
