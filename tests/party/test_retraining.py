"""Retraining from the champion (issue 18), in one process: a warm-started job starts every
party from the champion's weights and encoders, trains the policy's few epochs on the recent
window only (the label party's rows added after the champion trained), and a job that names no
finished job of the same model is refused before anything starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.csv as pacsv
import pytest
import torch
from fastapi import FastAPI
from pydantic import SecretStr

from services.party.app import create_app
from services.party.settings import PartySettings
from services.party.training.align import prepare_job
from services.protocol.errors import SpliceError
from services.protocol.messages import JobState, SegmentSpec, WarmStart, nn_model
from services.protocol.peers import PartyClient, SegmentClient
from tests.conftest import key_master
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical

RECENT = 400


@dataclass
class Parties:
    label: PartyClient
    label_app: FastAPI
    feature_app: FastAPI


@pytest.fixture
async def parties(vertical: Vertical, tmp_path: Path) -> AsyncIterator[Parties]:
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
    label_app = create_app(
        PartySettings(
            name="maker",
            table=vertical.label,
            data_dir=tmp_path / "maker",
            key_master=SecretStr(key_master("maker")),
        ),
        client_factory=lambda url, _: SegmentClient(url, transport=httpx.ASGITransport(app=f_app)),
    )
    label = PartyClient("http://maker", transport=httpx.ASGITransport(app=label_app))
    try:
        yield Parties(label, label_app, f_app)
    finally:
        await label.aclose()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


async def test_retraining_warm_starts_on_the_recent_window(
    vertical: Vertical, parties: Parties
) -> None:
    p = parties
    champion_spec = spec_for(vertical, epochs=3)
    champion = await train(p.label, champion_spec)
    assert champion.state is JobState.FINISHED, champion.error
    rows = champion.rows["label_rows"]

    # the recent window: boards the label party's table gained after the champion trained
    recent = pacsv.read_csv(vertical.label).to_pylist()[:RECENT]
    recent = [{**r, "row_id": f"recent-{i}"} for i, r in enumerate(recent)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=p.label_app), base_url="http://maker"
    ) as label_http:
        r = await label_http.post("/v1/table/rows", json={"rows": recent})
    assert r.status_code == 200, r.text
    assert r.json()["boundaries"] == [rows, rows + RECENT]

    # a job naming no finished job of this party is refused; nothing starts
    bad = spec_for(vertical, job_id="job-bad", warm_start=WarmStart(job_id="nope", from_row=rows))
    with pytest.raises(SpliceError) as refused:
        await p.label.start_training(bad)
    assert refused.value.code == "warm_start_refused"
    assert "job-bad" not in p.label_app.state.runs.runs

    # the policy's fine-tune: batches of 16 (the job's 64), every learning rate times 0.25
    warm = WarmStart(
        job_id=champion_spec.job_id, from_row=rows, epochs=2, batch_size=16, lr_factor=0.25
    )
    spec = spec_for(vertical, job_id="job-2", epochs=50, warm_start=warm)
    f_state = p.feature_app.state.party
    status = await train(p.label, spec)
    assert status.state is JobState.FINISHED, status.error
    # the policy's epochs, not the contract's 50; only the recent window's rows
    assert status.epochs == 2 and len(status.history) == 2
    assert status.rows["label_rows"] == RECENT
    assert status.rows["aligned"] <= RECENT
    assert status.steps_per_epoch is not None and status.steps_per_epoch > RECENT // 2 // 16
    # the feature party steps in lockstep: the same batch size and scaled learning rates
    prepared = f_state.jobs["job-2"].spec
    assert prepared.batch_size == 16 and prepared.terms == f_state.jobs["job-1"].spec.terms
    model = nn_model(spec.model)
    base = model.optimizer.lr, model.interactive_optimizer.lr
    tuned = prepared.optimizer.lr, prepared.interactive_optimizer.lr
    assert tuned == pytest.approx((base[0] * 0.25, base[1] * 0.25))
    trainer = p.label_app.state.runs.runs["job-2"]
    assert trainer.spec.batch_size == 16
    assert nn_model(trainer.spec.model).interactive_optimizer.lr == pytest.approx(tuned[1])
    # the feature party encoded as the champion did
    old, new = f_state.jobs[champion_spec.job_id], f_state.jobs["job-2"]
    assert new.encoder.state == old.encoder.state
    cold = await train(p.label, spec_for(vertical, job_id="job-3", epochs=1, warm_start=None))
    # warm: after one epoch on the window the model scores like the champion (a random top or
    # bottom would not), and better than a cold job after one epoch on the whole table
    first = status.history[0].validation["auc"]
    assert first >= champion.history[-1].validation["auc"] - 0.05
    assert first > cold.history[0].validation["auc"] + 0.05


async def test_a_warm_started_segment_starts_from_the_champion(
    vertical: Vertical, parties: Parties
) -> None:
    """The feature party's side: the new job's segment and interactive weights are the
    champion's before any step, and a champion of another model is refused."""
    p = parties
    spec = spec_for(vertical, epochs=2)
    assert (await train(p.label, spec)).state is JobState.FINISHED
    f_state = p.feature_app.state.party
    champion = f_state.jobs[spec.job_id]
    keys = [f"L{i}" for i in range(5)]
    warm = WarmStart(job_id=spec.job_id, from_row=0)
    again = spec_for(vertical, job_id="job-2", alignment="keys", warm_start=warm)
    f_state.prepare(prepare_job(again, "f0", keys))
    new = f_state.jobs["job-2"]
    assert _same(new.model.state_dict(), champion.model.state_dict())
    theirs, ours = champion.protection.state(), new.protection.state()
    assert theirs.keys() == ours.keys() and all((theirs[k] == ours[k]).all() for k in theirs)
    cold = spec_for(vertical, job_id="job-3", alignment="keys")
    f_state.prepare(prepare_job(cold, "f0", keys))
    assert not _same(f_state.jobs["job-3"].model.state_dict(), champion.model.state_dict())

    other = spec.model.model_copy(
        update={"bottom": {**spec.model.bottom, "f0": SegmentSpec(hidden=[12], out=8)}}
    )
    wrong = spec_for(vertical, job_id="job-4", alignment="keys", warm_start=warm)
    wrong = wrong.model_copy(update={"model": other})
    with pytest.raises(SpliceError) as refused:
        f_state.prepare(prepare_job(wrong, "f0", keys))
    assert refused.value.code == "warm_start_refused"
    assert not f_state.exists("job-4")
