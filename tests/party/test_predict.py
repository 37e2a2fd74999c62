"""Metered joint inference at the label party, against a real registry (in-process).

A trained job's model serves only once deployed at the registry; its predictions equal the
trainer's own evaluation of the same rows (plain and ckks); every answer writes exactly one
usage event, and every refused request none; a feature party refuses to embed for a finished
job that is not the deployed one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pytest

from services.party.metering import UsageOutbox
from services.protocol.errors import SpliceError
from services.protocol.messages import JobState, PredictResponse, ProtectionMode, Task
from tests.conftest import InProcess
from tests.party.serving_world import World, registry, trained_world
from tests.party.test_training import spec_for, train
from tests.registry.contract_util import OWNER, PASTE, PCB
from tests.registry.matrix_world import TENSOR_HEADERS, embed_frame
from tests.registry.world import PASTE_URL
from tests.synthetic import Vertical


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    mode: ProtectionMode = getattr(request, "param", "plain")
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, mode)
        try:
            yield w
        finally:
            await w.parties.aclose()


def outbox(w: World) -> UsageOutbox:
    box: UsageOutbox = w.parties.pcb_app.state.outbox
    return box


async def predict(w: World, rows: list[dict[str, Any]], headers: dict[str, str]) -> Any:
    return await w.parties.pcb.post(
        f"/v1/contracts/{w.contract_id}/predict", json={"rows": rows}, headers=headers
    )


@pytest.mark.parametrize("world", ["plain", "ckks"], indirect=True)
async def test_predictions_equal_the_trainer_s_evaluation(world: World) -> None:
    w = world
    samples = w.test_samples(40)
    rows = w.rows(samples)
    buyer = await w.buyer()
    r = await predict(w, rows, buyer)
    assert r.status_code == 409 and r.json()["code"] == "model_not_deployed", r.text
    assert outbox(w).depth() == 0
    await w.deploy()
    started = time.perf_counter()
    r = await predict(w, rows[:1], buyer)
    single_ms = 1000 * (time.perf_counter() - started)
    assert r.status_code == 200, r.text
    r = await predict(w, rows, buyer)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_version"] == w.model_version and answer["contract_version"] == 1
    expected = await w.evaluation(samples)
    got = np.array([p["probability"] for p in answer["predictions"]])
    # the contract rounds probabilities to 4 decimals
    assert np.array_equal(got, np.round(got, 4))
    # plain: the same float32 arithmetic; ckks: fresh encryption noise and masks per evaluation
    tolerance = 5e-5 + 1e-5 if w.trainer.spec.protection.mode == "plain" else 2e-3
    np.testing.assert_allclose(got, expected, atol=tolerance)
    classes = w.trainer.data.labels.classes  # type: ignore[union-attr]
    assert [p["label"] for p in answer["predictions"]] == [classes[int(p >= 0.5)] for p in expected]
    assert set(answer["predictions"][0]) == {"status", "probability", "label"}
    assert (answer["rows"], answer["predicted"]) == (len(rows), len(rows))
    # one usage event per answer: the OEM's organisation, the rows it got
    events = outbox(w).pending()
    assert [e.count for e in events] == [1, len(rows)]
    assert events[-1].event_id == answer["event_id"]
    assert {e.caller_org for e in events} == {w.orgs[OWNER]}
    assert {(e.contract_id, e.contract_version, e.model_version) for e in events} == {
        (w.contract_id, 1, w.model_version)
    }
    health = (await w.parties.pcb.get("/v1/health")).json()
    assert health["outbox"]["pending"] == 2
    print(f"\nsingle prediction ({w.trainer.spec.protection.mode}): {single_ms:.1f} ms")


async def test_bad_input_and_refused_callers_write_no_event(world: World) -> None:
    w = world
    await w.deploy()
    rows = w.rows(w.test_samples(3))
    buyer = await w.buyer()
    key = "paste_lot_id"
    feature = next(c for c in rows[0] if c not in (key,) and isinstance(rows[0][c], float))

    cid = w.contract_id
    no_scope = await w.token(OWNER, scope="party:call", contract_id=cid)
    other_contract = await w.token(OWNER, scope="predict:call", contract_id="other")
    outsider = await w.buyer("outsider-gmbh")
    elsewhere = await w.token(OWNER, audience=PASTE_URL, scope="predict:call", contract_id=cid)
    no_key = {k: v for k, v in rows[0].items() if k != key}
    cases: list[tuple[object, dict[str, str], int, str]] = [
        ({"rows": []}, buyer, 422, "validation_error"),
        ({"rows": rows * 3334}, buyer, 422, "validation_error"),  # 10,002 rows
        ({"rows": rows, "extra": 1}, buyer, 422, "validation_error"),
        ({"rows": [{**rows[0], "board_id": "B-1"}]}, buyer, 422, "validation_error"),
        ({"rows": [no_key]}, buyer, 422, "validation_error"),
        ({"rows": [{**rows[0], feature: "high"}]}, buyer, 422, "validation_error"),
        ({"rows": [{**rows[0], key: None}]}, buyer, 422, "validation_error"),
        ({"rows": [{**rows[0], "line": "L9"}]}, buyer, 422, "schema_violation"),
        ({"rows": rows}, {}, 401, "unauthenticated"),
        ({"rows": rows}, no_scope, 403, "forbidden"),
        ({"rows": rows}, other_contract, 403, "forbidden"),
        ({"rows": rows}, outsider, 403, "forbidden"),
        ({"rows": rows}, elsewhere, 401, "invalid_token"),
    ]
    for body, headers, status, code in cases:
        r = await w.parties.pcb.post(
            f"/v1/contracts/{w.contract_id}/predict", json=body, headers=headers
        )
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert set(r.json()) == {"code", "message", "detail"}
    assert outbox(w).depth() == 0
    # the refusals name what is wrong
    r = await predict(w, [{**rows[0], "board_id": "B-1"}, rows[1]], buyer)
    assert "board_id" in r.json()["message"]
    assert r.json()["detail"]["unknown"] == {"board_id": {"rows": [0], "count": 1}}
    r = await w.parties.pcb.post(
        f"/v1/contracts/{w.contract_id}/predict",
        content=b'{"rows": []}',
        headers={**buyer, "content-type": "text/plain"},
    )
    assert r.status_code == 415
    # every party of the contract may ask, not only the owner
    for org in (PCB, PASTE):
        assert (await predict(w, rows, await w.buyer(org))).status_code == 200
    assert [e.count for e in outbox(w).pending()] == [3, 3]


async def test_serving_needs_the_deployed_job_loaded_and_the_outbox(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    await w.deploy()
    rows = w.rows(w.test_samples(2))
    buyer = await w.buyer()

    def broken(_: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(outbox(w), "append", broken)
    r = await predict(w, rows, buyer)
    assert r.status_code == 503 and r.json()["code"] == "metering_unavailable", r.text
    assert "predictions" not in r.text
    monkeypatch.undo()
    assert (await predict(w, rows, buyer)).status_code == 200
    runs = w.parties.pcb_app.state.runs.runs
    trainer = runs.pop(w.job_id)  # as after a restart: the process no longer holds the job
    try:
        r = await predict(w, rows, buyer)
        assert r.status_code == 409 and r.json()["code"] == "model_not_loaded", r.text
    finally:
        runs[w.job_id] = trainer
    assert outbox(w).depth() == 1


async def test_the_feature_party_embeds_for_a_finished_job_only_once_deployed(
    world: World,
) -> None:
    w = world
    label = await w.token(
        PCB, audience=PASTE_URL, scope="party:call", contract_id=w.contract_id, job_id=w.job_id
    )
    headers = {**label, **TENSOR_HEADERS}
    path = f"/v1/jobs/{w.job_id}/embed"
    r = await w.parties.paste.post(path, content=embed_frame(w.job_id), headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "model_not_deployed", r.text
    assert r.json()["detail"]["status"] == "finished"
    await w.deploy()
    r = await w.parties.paste.post(path, content=embed_frame(w.job_id), headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("task", [Task.MULTICLASS, Task.REGRESSION])
async def test_an_open_party_serves_its_latest_run(
    vertical: Vertical, in_process: InProcess, task: Task
) -> None:
    """Without a registry (local pilots) the latest finished run under the contract id, or the
    job id, serves as model version 1; answers are still metered, as the organisation "local"."""
    client = in_process(vertical)
    spec = spec_for(vertical, epochs=1, task=task)
    assert (await train(client, spec)).state is JobState.FINISHED
    table = pacsv.read_csv(vertical.label).to_pylist()
    rows = [
        {k: r[k] for k in ("a", "b", "c", "line", "lot")}
        for r in table
        if r["lot"].startswith("LOT-")
    ][:5]
    answer = PredictResponse.model_validate(
        (await client.request("POST", "/v1/contracts/job-1/predict", json={"rows": rows})).json()
    )
    assert (answer.model_version, answer.contract_version) == (1, 1)
    assert len(answer.predictions) == 5
    for p in answer.predictions:
        if task is Task.MULTICLASS:
            assert p.probabilities is not None and set(p.probabilities) == {"0", "1"}
            assert p.label == max(p.probabilities, key=lambda c: p.probabilities[c])  # type: ignore[index]
            assert sum(p.probabilities.values()) == pytest.approx(1.0)
        else:
            assert p.value is not None and p.label is None and p.probabilities is None
    assert (await client.health())["outbox"]["pending"] == 1
    with pytest.raises(SpliceError) as refused:
        await client.request("POST", "/v1/contracts/other/predict", json={"rows": rows})
    assert refused.value.code.value == "model_not_loaded"


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[World]:
    """A deployed model whose contract lets a caller name 6 distinct paste lots a month."""
    serving = {"max_keys_per_caller": 6, "period": "month"}
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, serving=serving)
        try:
            await w.deploy()
            yield w
        finally:
            await w.parties.aclose()


async def test_unaligned_keys_cost_an_answer_and_cannot_be_enumerated(limited: World) -> None:
    """No free membership test of the private intersection (issue 13): a row naming a lot the
    job did not align is answered ``no_prediction`` and metered like a prediction; every lot a
    caller names counts once a month, and past the contract's limit nothing more is told."""
    w = limited
    key = "paste_lot_id"
    samples = w.test_samples(40)
    rows = w.rows(samples)
    lots = list(dict.fromkeys(r[key] for r in rows))
    known = [next(r for r in rows if r[key] == lot) for lot in lots[:2]]
    probe = {**known[0], key: "PL-999999"}  # a lot the supplier does not hold
    buyer = await w.buyer()

    r = await predict(w, [*known, probe], buyer)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [p["status"] for p in answer["predictions"]] == ["predicted"] * 2 + ["no_prediction"]
    assert answer["predictions"][2] == {"status": "no_prediction"}  # nothing more about it
    assert (answer["rows"], answer["predicted"]) == (3, 2)
    assert (answer["keys_used"], answer["keys_limit"]) == (3, 6)
    assert outbox(w).pending()[-1].count == 3  # the unaligned row is billed like the others

    # the same lots again cost rows but no new keys; the allowance counts distinct lots
    r = await predict(w, [*known, probe], buyer)
    assert r.json()["keys_used"] == 3
    # an enumeration: one candidate lot id per request, as an attacker would
    told: dict[str, str] = {}
    refused = 0
    named = {*lots[:2], probe[key]}
    candidates = [c for c in (f"PL-{i:06d}" for i in range(100)) if c not in named][:12]
    for candidate in candidates:
        r = await predict(w, [{**known[0], key: candidate}], buyer)
        if r.status_code == 429:
            body = r.json()
            assert body["code"] == "key_limit_reached", body
            assert int(r.headers["retry-after"]) >= 1
            assert body["detail"]["limit"] == 6 and body["detail"]["used"] == 6
            refused += 1
            continue
        assert r.status_code == 200, r.text
        told[candidate] = r.json()["predictions"][0]["status"]
    assert len(told) == 3 and refused == 9  # 6 distinct lots in all, then nothing
    events = outbox(w).pending()
    assert len(events) == 2 + 3  # refused requests are not metered (and told nothing)
    # lots already named stay answerable after the limit
    r = await predict(w, known, buyer)
    assert r.status_code == 200 and r.json()["predicted"] == 2
    # another caller organisation has its own allowance
    assert (await predict(w, known, await w.buyer(PCB))).json()["keys_used"] == 2


async def test_key_allowance_survives_a_restart_and_resets_each_period(tmp_path: Path) -> None:
    """The counts are durable, all-or-nothing per request, and per period."""
    from datetime import UTC, datetime

    from services.party.inference.quota import KeyLimitReached, KeyQuota, key_digests

    path = tmp_path / "keys.sqlite3"
    quota = KeyQuota(path)
    may = datetime(2026, 5, 31, 23, 0, tzinfo=UTC)
    first = key_digests("c1", [("paste", "PL-1"), ("paste", "PL-2")])
    assert quota.admit("c1", "oem", first, limit=3, period="month", now=may).used == 2
    quota.close()
    quota = KeyQuota(path)  # a restarted party
    three = key_digests("c1", [("paste", "PL-3"), ("paste", "PL-4")])
    with pytest.raises(KeyLimitReached) as exc:
        quota.admit("c1", "oem", three, limit=3, period="month", now=may)
    assert exc.value.retry_after == 3600 and exc.value.detail["new_keys"] == 2
    # all or nothing: PL-3 was not counted by the refused request
    again = key_digests("c1", [("paste", "PL-3")])
    assert quota.admit("c1", "oem", again, limit=3, period="month", now=may).used == 3
    june = datetime(2026, 6, 1, 0, 0, 1, tzinfo=UTC)
    assert quota.admit("c1", "oem", three, limit=3, period="month", now=june).used == 2
    # a day period, and another contract, are counted apart
    assert quota.admit("c2", "oem", three, limit=3, period="day", now=june).period == "2026-06-01"
    quota.close()
