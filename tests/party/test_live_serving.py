"""Live data at the feature party and incremental alignment at serving time (issue 18), in one
process: new lots are checked and appended, boards naming them are predicted exactly as boards
naming a training-aligned lot with the same features, keys the supplier does not hold are
answered per row, and no key or feature value of the rounds crosses the wire."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sklearn.metrics import roc_auc_score

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.messages import JobState, PredictRequest
from services.protocol.peers import PartyClient, SegmentClient
from tests.conftest import key_master
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical

CANARY = 9137.424242421
NEW = 30


@dataclass
class World:
    label: PartyClient
    feature: httpx.AsyncClient
    label_app: FastAPI
    feature_app: FastAPI
    wire: list[bytes]


@pytest.fixture
async def world(vertical: Vertical, tmp_path: Path) -> AsyncIterator[World]:
    wire: list[bytes] = []
    f_app = create_app(
        PartySettings(
            name="f0",
            table=vertical.features["f0"],
            key_column="lot",
            data_dir=tmp_path / "f0",
            key_master=SecretStr(key_master("f0")),
            he_workers=1,
        )
    )
    inner = httpx.ASGITransport(app=f_app)

    class Recorder(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            wire.append(request.url.query + request.content)
            response = await inner.handle_async_request(request)
            body = await response.aread()
            wire.append(body)
            return httpx.Response(response.status_code, headers=response.headers, content=body)

    label_app = create_app(
        PartySettings(
            name="maker",
            table=vertical.label,
            data_dir=tmp_path / "maker",
            key_master=SecretStr(key_master("maker")),
        ),
        client_factory=lambda url, _: SegmentClient(url, transport=Recorder()),
    )
    label = PartyClient("http://maker", transport=httpx.ASGITransport(app=label_app))
    feature = httpx.AsyncClient(transport=httpx.ASGITransport(app=f_app), base_url="http://f0")
    try:
        yield World(label, feature, label_app, f_app, wire)
    finally:
        await label.aclose()
        await feature.aclose()


def new_lots(v: Vertical, aligned: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """30 new lots copying aligned lots' features (new key -> the copied lot) and one canary."""
    table = pacsv.read_csv(v.features["f0"]).to_pylist()
    by_key = {r["lot"]: r for r in table}
    copies = {f"NEWLOT-{i:04d}-ZQX": aligned[i] for i in range(NEW)}
    rows = [{**by_key[old], "lot": new} for new, old in copies.items()]
    rows.append({**by_key[aligned[0]], "lot": "NEWLOT-CANARY-ZQX", "x2": CANARY})
    return rows, copies


async def test_new_lots_are_served_like_aligned_ones(vertical: Vertical, world: World) -> None:
    w = world
    spec = spec_for(vertical, epochs=2)
    status = await train(w.label, spec)
    assert status.state is JobState.FINISHED, status.error
    runs = w.label_app.state.runs
    model = w.label_app.state.predictor.model_for(runs.runs[spec.job_id])
    columns = model.schema.columns
    aligned = sorted(model.schema.key_handles["f0"])
    boards = pacsv.read_csv(vertical.label).select(columns).to_pylist()
    boards = [b for b in boards if b["lot"] in set(aligned[:NEW])][:200]
    assert len(boards) > 50
    known = await w.label.predict(spec.job_id, PredictRequest(rows=boards))
    assert known.predicted == len(boards)

    rows, copies = new_lots(vertical, aligned)
    # a malformed version is refused whole, naming its rows; nothing is loaded
    bad = [*rows[:3], {**rows[3], "x0": "high"}, {**rows[4], "lot": aligned[0]}, {"lot": "X"}]
    r = await w.feature.post("/v1/table/rows", json={"rows": bad})
    assert r.status_code == 422 and r.json()["code"] == "rows_refused", r.text
    assert [p["row"] for p in r.json()["detail"]["problems"]] == [3, 4, 5]
    assert (await w.feature.get("/v1/table")).json()["version"] == 1
    r = await w.feature.post("/v1/table/rows", json={"rows": rows})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["added"]) == (2, NEW + 1)

    back = {v: k for k, v in copies.items()}
    renamed = [{**b, "lot": back[b["lot"]]} for b in boards]
    unknown = {**boards[0], "lot": "NOPE-0001-ZQX"}
    before, start = len(w.wire), w.label_app.state.predictor.aligner.rounds
    answer = await w.label.predict(spec.job_id, PredictRequest(rows=[*renamed, unknown]))
    assert answer.rows == len(renamed) + 1 and answer.predicted == len(renamed)
    assert answer.predictions[-1].status == "no_prediction"
    got = [p.probability for p in answer.predictions[:-1]]
    # the same features through a serving round's handle: the same float32 arithmetic
    assert got == [p.probability for p in known.predictions]
    aligner = w.label_app.state.predictor.aligner
    assert aligner.rounds == start + 1 and aligner.keys_asked == NEW + 1
    # cached handles: no second round for the same keys
    again = await w.label.predict(spec.job_id, PredictRequest(rows=renamed[:5]))
    assert [p.probability for p in again.predictions] == got[:5]
    assert aligner.rounds == start + 1
    # after the TTL the keys are asked again: the supplier answers the same handles
    later = aligner.clock() + aligner.ttl + 1
    aligner.clock = lambda: later
    again = await w.label.predict(spec.job_id, PredictRequest(rows=renamed[:5]))
    assert [p.probability for p in again.predictions] == got[:5]
    assert aligner.rounds == start + 2
    canary_board = {**boards[0], "lot": "NEWLOT-CANARY-ZQX"}
    one = await w.label.predict(spec.job_id, PredictRequest(rows=[canary_board]))
    assert one.predicted == 1 and one.predictions[0].probability != got[0]
    rounds = w.wire[before:]
    assert len(rounds) >= 8
    for canary in [b"NEWLOT", b"NOPE-", b"ZQX", repr(CANARY).encode(), struct.pack("<d", CANARY)]:
        assert not [i for i, body in enumerate(rounds) if canary in body], canary
    assert struct.pack("<f", np.float32(CANARY)) not in b"".join(rounds)
    # a whole new table file: known rows unchanged, two new lots; a changed known row is refused
    current = pacsv.read_csv(vertical.features["f0"]).to_pylist() + rows
    extra = [{**current[0], "lot": f"NEWLOT-FILE-{i}"} for i in range(2)]
    changed = [{**current[0], "x0": 99.0}, *current[1:], *extra]
    for table, expected in ((changed, 422), ([*current, *extra], 200)):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(pa.Table.from_pylist(table), sink)
        r = await w.feature.post(
            "/v1/table/versions",
            content=sink.getvalue().to_pybytes(),
            headers={"content-type": "text/csv"},
        )
        assert r.status_code == expected, r.text
    assert (r.json()["version"], r.json()["added"]) == (3, 2)


async def test_outcomes_live_metric_and_drift(vertical: Vertical, world: World) -> None:
    w = world
    spec = spec_for(vertical, epochs=2)
    assert (await train(w.label, spec)).state is JobState.FINISHED
    model = w.label_app.state.predictor.model_for(w.label_app.state.runs.runs[spec.job_id])
    table = pacsv.read_csv(vertical.label)
    aligned = set(model.schema.key_handles["f0"])
    every = [r for r in table.to_pylist() if r["lot"] in aligned][:300]
    rows = [{c: r[c] for c in model.schema.columns} for r in every]
    ids = [r["row_id"] for r in every]
    answer = await w.label.predict(spec.job_id, PredictRequest(rows=rows, row_ids=ids))
    base = f"/v1/contracts/{spec.job_id}"
    truth = [str(r["y"]) for r in every]
    half = len(rows) // 2
    outcomes = [{"row_id": ids[i], "outcome": int(truth[i])} for i in range(half)] + [
        {"prediction_id": f"{answer.event_id}:{i}", "outcome": truth[i]}
        for i in range(half, len(rows))
    ]
    wrong = "0" if truth[0] == "1" else "1"
    bad = [
        outcomes[0],
        {"prediction_id": "nope:1", "outcome": "1"},
        outcomes[0],
        {"row_id": ids[1], "outcome": "7"},
    ]
    r = await w.label._http.post(f"{base}/outcomes", json={"outcomes": bad})
    assert r.status_code == 422 and r.json()["code"] == "outcomes_refused", r.text
    assert [p["row"] for p in r.json()["detail"]["problems"]] == [1, 2, 3]
    q = (await w.label._http.get(f"{base}/quality")).json()
    assert q["versions"][0]["outcomes"] == 0  # nothing of the refused batch was stored
    r = await w.label._http.post(f"{base}/outcomes", json={"outcomes": outcomes})
    assert r.status_code == 200 and r.json() == {"recorded": len(rows), "unchanged": 0}, r.text
    r = await w.label._http.post(f"{base}/outcomes", json={"outcomes": outcomes[:10]})
    assert r.json() == {"recorded": 0, "unchanged": 10}
    r = await w.label._http.post(
        f"{base}/outcomes", json={"outcomes": [{"row_id": ids[0], "outcome": wrong}]}
    )
    assert r.status_code == 422 and "contradicts" in r.text
    q = (await w.label._http.get(f"{base}/quality")).json()
    live = q["versions"][0]
    probs = [p.probability for p in answer.predictions]
    expected = roc_auc_score([t == "1" for t in truth], probs)
    assert live["outcomes"] == len(rows) and live["auc"] == round(expected, 4)
    assert live["deployed"] and live["metric"] == "auc"
    assert q["status"] == "ok", q["alerts"]
    # canary: the drift report crosses the wire as scores only, no key and no feature value
    drift_wire = b"".join(w.wire[-2:])
    assert b'"psi"' in drift_wire
    supplier = pacsv.read_csv(vertical.features["f0"]).to_pylist()[:50]
    for row in supplier:
        assert row["lot"].encode() not in drift_wire
        assert repr(row["x0"]).encode() not in drift_wire
        assert struct.pack("<f", np.float32(row["x0"])) not in drift_wire
    assert {d["party"] for d in q["drift"]} == {"maker", "f0"}
    feature = next(d for d in q["drift"] if d["party"] == "f0")
    assert feature["rows_serving"] > 0 and all(
        set(c) == {"column", "psi", "ks"} for c in feature["columns"]
    )
    # the process drifts: column a shifts by three standard deviations
    shifted = [{**row, "a": row["a"] + 3.0} for row in rows]
    await w.label.predict(spec.job_id, PredictRequest(rows=shifted))
    q = (await w.label._http.get(f"{base}/quality")).json()
    own = next(d for d in q["drift"] if d["party"] == "maker")
    by_column = {c["column"]: c for c in own["columns"]}
    assert by_column["a"]["psi"] > 0.25 and by_column["a"]["ks"] > 0.4
    assert by_column["b"]["psi"] < 0.25
    assert q["status"] == "alert" and any("maker" in a and " a " in a for a in q["alerts"])
    assert w.label_app.state.monitor.events[-1]["raised"] is True
