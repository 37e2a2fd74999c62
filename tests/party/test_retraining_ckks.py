"""Retraining from the champion in ckks mode (issue 18), in one process.

The job names every party's columns, as a contract's job does, so the feature party is asked to
prepare it through the contract's terms (the path that used to drop ``warm_start``, leaving the
feature party's share fresh while the label party's was the champion's). The warm-started job
carries the whole model: bottoms, top and both shares of the interactive weights, so its first
epoch on the recent window scores like the champion, not like a fresh model; and a feature party
that did not start from the champion is refused at the first cut.
"""

from __future__ import annotations

from typing import Any

import httpx
import pyarrow.csv as pacsv
import pytest

from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    OptimizerSpec,
    SegmentSpec,
    TopSpec,
    TrainingSpec,
    WarmStart,
)
from tests.party.test_retraining import RECENT, Parties, parties  # noqa: F401
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical

CKKS = {"mode": "ckks", "defence": {"enabled": True, "max_norm": 4.0, "noise_multiplier": 0.25}}


def contract_like(v: Vertical, **kw: Any) -> TrainingSpec:
    """The demo contract's shape, small: every party's columns named, the supplier's bottom an
    identity, SGD at 0.8 with momentum 0.9 on the shared interactive weights."""
    label_cols = pacsv.read_csv(v.label).column_names
    own = [c for c in label_cols if c not in {"y", "row_id", *v.keys.values()}]
    refs = [
        FeaturePartyRef(
            name=n,
            url=f"http://{n}",
            key_column=v.keys[n],
            columns=[c for c in pacsv.read_csv(p).column_names if c != v.keys[n]],
        )
        for n, p in v.features.items()
    ]
    model = ModelSpec(
        bottom={"maker": SegmentSpec(hidden=[32], out=8), "f0": SegmentSpec(kind="identity")},
        top=TopSpec(interactive=8, hidden=[8]),
        interactive_optimizer=OptimizerSpec(name="sgd", lr=0.8, momentum=0.9),
    )
    spec = spec_for(v, batch_size=256, protection=CKKS, **kw)
    return spec.model_copy(update={"model": model, "columns": own, "feature_parties": refs})


async def _add_recent_boards(p: Parties, v: Vertical) -> None:
    recent = pacsv.read_csv(v.label).to_pylist()[:RECENT]
    recent = [{**r, "row_id": f"recent-{i}"} for i, r in enumerate(recent)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=p.label_app), base_url="http://maker"
    ) as label_http:
        r = await label_http.post("/v1/table/rows", json={"rows": recent})
    assert r.status_code == 200, r.text


async def test_a_ckks_retraining_starts_from_the_whole_champion(
    vertical: Vertical,
    parties: Parties,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = parties
    champion_spec = contract_like(vertical, epochs=6)
    champion = await train(p.label, champion_spec)
    assert champion.state is JobState.FINISHED, champion.error
    await _add_recent_boards(p, vertical)
    warm = WarmStart(job_id=champion_spec.job_id, from_row=champion.rows["label_rows"], epochs=1)

    status = await train(p.label, contract_like(vertical, job_id="job-2", warm_start=warm))
    assert status.state is JobState.FINISHED, status.error
    # the feature party started from its share of the champion (its request named the champion)
    f_state = p.feature_app.state.party
    assert f_state.jobs["job-2"].spec.warm_start == champion_spec.job_id
    cold = await train(p.label, contract_like(vertical, job_id="job-3", epochs=1))
    assert cold.state is JobState.FINISHED, cold.error
    first, last = status.history[0].validation["auc"], champion.history[-1].validation["auc"]
    fresh = cold.history[0].validation["auc"]
    print(f"\nckks: champion {last:.4f}, warm first epoch {first:.4f}, fresh {fresh:.4f}")
    assert first >= last - 0.03
    assert first > fresh + 0.05

    # a feature party that ignores the champion (fresh share and segment) is refused at the
    # first cut, before any step: its share would not complete the champion's W_A
    monkeypatch.setattr("services.party.state.warm", lambda job, champion: None)
    refused = await train(p.label, contract_like(vertical, job_id="job-4", warm_start=warm))
    assert refused.state is JobState.FAILED
    assert "did not start from the champion" in (refused.error or "")
    assert refused.step == 0
