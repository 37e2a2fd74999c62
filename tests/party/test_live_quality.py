"""Live quality under a registry (issue 18): outcomes of the deployed model's predictions give its
live metric at the label party, which keeps the registry's record of the deployed model version
current; a status change is an audit event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from services.engine.tabular import read_table
from tests.party.serving_world import registry, trained_world
from tests.registry.contract_util import PCB


async def test_live_quality_is_kept_with_the_deployed_version(tmp_path: Path) -> None:
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, "plain")
        try:
            await w.deploy()
            buyer = await w.buyer()
            samples = w.test_samples(120)
            rows = w.rows(samples)
            assert w.trainer.data is not None
            table = read_table(w.files.pcb_maker).take(pa.array(w.trainer.data.rows[samples]))
            truth = [str(v) for v in table.column(w.files.label_binary).to_pylist()]
            ids = table.column(w.files.id_column).to_pylist()
            base = f"/v1/contracts/{w.contract_id}"
            r = await w.parties.pcb.post(
                f"{base}/predict", json={"rows": rows, "row_ids": ids}, headers=buyer
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            outcomes = [{"row_id": i, "outcome": t} for i, t in zip(ids, truth, strict=True)]
            r = await w.parties.pcb.post(
                f"{base}/outcomes", json={"outcomes": outcomes}, headers=buyer
            )
            assert r.json() == {"recorded": len(rows), "unchanged": 0}, r.text
            # an outcome for a prediction the caller never got is refused, nothing changes
            bad = [{"prediction_id": f"{answer['event_id']}:{len(rows)}", "outcome": "1"}]
            r = await w.parties.pcb.post(f"{base}/outcomes", json={"outcomes": bad}, headers=buyer)
            assert r.status_code == 422 and r.json()["code"] == "outcomes_refused"
            r = await w.parties.pcb.get(f"{base}/quality", headers=buyer)
            assert r.status_code == 200, r.text
            quality = r.json()
            (live,) = quality["versions"]
            probs = [p["probability"] for p in answer["predictions"]]
            positive = [t == "1" for t in truth]
            assert live["auc"] == round(roc_auc_score(positive, probs), 4)
            assert live["model_version"] == w.model_version and live["deployed"]
            # the registry keeps the report with the deployed model version
            version = f"{base}/model-versions/{w.model_version}"
            record = (await client.get(version, headers=w.orgs.auth(PCB))).json()
            assert record["quality_status"] == quality["status"]
            assert record["quality"]["live"]["auc"] == live["auc"]
            assert {d["party"] for d in record["quality"]["drift"]} == {"pcb", "paste"}
            assert np.isfinite(record["quality"]["drift"][0]["rows_train"])
            # the contract states no retraining policy: a retraining is refused, nothing starts
            operator = await w.token(PCB, scope="jobs:run")
            runs = set(w.parties.pcb_app.state.runs.runs)
            r = await w.parties.pcb.post(
                f"{base}/retrainings",
                json={"feature_urls": {"paste": "http://paste"}},
                headers=operator,
            )
            assert r.status_code == 409 and r.json()["code"] == "retraining_not_allowed", r.text
            assert set(w.parties.pcb_app.state.runs.runs) == runs
            # without outcomes or a registry token nobody reads it
            r = await w.parties.pcb.get(f"{base}/quality")
            assert r.status_code == 401
        finally:
            await w.parties.aclose()
