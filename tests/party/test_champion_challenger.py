"""Retraining under a registry and champion/challenger shadow scoring (issue 18): the contract's
retraining policy opens a warm-started job on the PCB maker's recent rows; the challenger it
produces is scored beside the deployed champion on the same outcome window, in shadow mode (no
usage event, no serving call recorded by the supplier); only the label party may ask."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from services.engine.tabular import read_table
from services.party.inference import shadow as shadow_module
from services.protocol.messages import JobState
from tests.party.serving_world import registry, trained_world
from tests.registry.contract_util import OWNER, PCB, document
from tests.registry.world import PASTE_URL

RECENT = 300


async def test_a_retrained_challenger_is_shadow_scored_against_the_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fine-tune the policy states (batch 32, half the learning rates): every party applies
    # it, the paste supplier after deriving it from the contract it fetched itself
    policy = {"on_alert": False, "cadence_days": 1, "epochs": 2, "batch_size": 32, "lr_factor": 0.5}
    training = {**document()["training"], "retraining": policy}
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, "plain", training=training)
        try:
            base = f"/v1/contracts/{w.contract_id}"
            operator = await w.token(PCB, scope="jobs:run")
            # no deployed version yet: nothing to retrain from
            r = await w.parties.pcb.post(
                f"{base}/retrainings",
                json={"feature_urls": {"paste": PASTE_URL}},
                headers=operator,
            )
            assert r.status_code == 409 and r.json()["code"] == "retraining_not_allowed", r.text
            await w.deploy()
            buyer = await w.buyer()
            samples = w.test_samples(150)
            rows = w.rows(samples)
            assert w.trainer.data is not None
            table = read_table(w.files.pcb_maker).take(pa.array(w.trainer.data.rows[samples]))
            truth = [str(v) for v in table.column(w.files.label_binary).to_pylist()]
            ids = [str(i) for i in table.column(w.files.id_column).to_pylist()]
            r = await w.parties.pcb.post(
                f"{base}/predict", json={"rows": rows, "row_ids": ids}, headers=buyer
            )
            assert r.status_code == 200, r.text
            live_answer = r.json()
            outcomes = [{"row_id": i, "outcome": t} for i, t in zip(ids, truth, strict=True)]
            r = await w.parties.pcb.post(
                f"{base}/outcomes", json={"outcomes": outcomes}, headers=buyer
            )
            assert r.status_code == 200, r.text
            live = (await w.parties.pcb.get(f"{base}/quality", headers=buyer)).json()
            (champion_live,) = live["versions"]

            # the PCB maker's recent boards (with their inspection results) join its table
            full = read_table(w.files.pcb_maker)
            recent = full.slice(full.num_rows - RECENT).to_pylist()
            recent = [{**b, w.files.id_column: f"recent-{i}"} for i, b in enumerate(recent)]
            r = await w.parties.pcb.post("/v1/table/rows", json={"rows": recent}, headers=operator)
            assert r.status_code == 200, r.text

            r = await w.parties.pcb.post(
                f"{base}/retrainings",
                json={"feature_urls": {"paste": PASTE_URL}},
                headers=operator,
            )
            assert r.status_code == 202, r.text
            job = r.json()["job_id"]
            runs = w.parties.pcb_app.state.runs
            for _ in range(2400):
                if runs.runs[job].status.state in (JobState.FINISHED, JobState.FAILED):
                    break
                await asyncio.sleep(0.05)
            status = runs.runs[job].status
            assert status.state is JobState.FINISHED, status.error
            spec = runs.runs[job].spec
            assert spec.warm_start is not None and spec.warm_start.job_id == w.job_id
            assert (status.epochs, len(status.history)) == (2, 2)
            assert spec.warm_start.batch_size == 32 and spec.warm_start.lr_factor == 0.5
            prepared = w.parties.paste_app.state.party.jobs[job].spec
            champion_prepared = w.parties.paste_app.state.party.jobs[w.job_id].spec
            assert prepared.batch_size == 32
            assert champion_prepared.batch_size != 32  # the training's own
            assert prepared.interactive_optimizer.lr == pytest.approx(
                champion_prepared.interactive_optimizer.lr * 0.5
            )
            assert runs.runs[job].spec.batch_size == 32  # the label party's run, in lockstep
            assert status.rows["label_rows"] == RECENT
            for _ in range(200):  # the registry holds the challenger's model version
                r = await client.get(f"{base}/model-versions", headers=w.orgs.auth(PCB))
                if any(m["job_id"] == job for m in r.json()):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the parties' cached contract checks see it finished

            usage, observed = w.usage(), w.parties.paste_app.state.observer.observed
            events = w.parties.pcb_app.state.predictor.served
            shadow = f"{base}/challengers/{job}/shadow"
            body = {"rows": rows, "row_ids": ids}
            r = await w.parties.pcb.post(shadow, json=body, headers=buyer)  # the OEM: refused
            assert r.status_code == 403, r.text
            label = await w.token(PCB, scope="predict:call", contract_id=w.contract_id)
            r = await w.parties.pcb.post(shadow, json=body, headers=label)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["metered"] is False
            assert answer["champion"]["model_version"] == w.model_version
            # the champion scores exactly as it did live, on the rows the challenger's alignment
            # shared too (a challenger aligns no new key at serving time)
            shared = runs.runs[job].key_handles["paste"]
            both = [str(row[w.files.key_paste]) in shared for row in rows]
            assert answer["compared"] == sum(both) > 100
            assert champion_live["outcomes"] == len(rows)
            probs = [p["probability"] for p in live_answer["predictions"]]
            picked = [(t == "1", q) for t, q, b in zip(truth, probs, both, strict=True) if b]
            expected = roc_auc_score([t for t, _ in picked], [q for _, q in picked])
            # (the live answers' probabilities are rounded to the contract's decimals)
            assert abs(answer["champion"]["auc"] - expected) < 2e-3
            assert np.isfinite(answer["challenger"]["auc"])
            assert answer["challenger_better"] == (
                answer["challenger"]["auc"] > answer["champion"]["auc"]
            )
            # nothing was sold: no usage event, no serving call recorded by the supplier
            await asyncio.sleep(0.3)
            assert w.usage() == usage
            assert w.parties.paste_app.state.observer.observed == observed
            assert w.parties.pcb_app.state.predictor.served == events
            # shadow scoring is no free prediction channel: rows without a recorded outcome are
            # not predicted, a request holds at most MAX_SHADOW_ROWS rows (413) and a challenger
            # is scored on at most MAX_SHADOW_PER_CHALLENGER rows in all (409, nothing counted)
            ungraded = {"rows": rows[:20], "row_ids": [f"nobody-{i}" for i in range(20)]}
            r = await w.parties.pcb.post(shadow, json=ungraded, headers=label)
            assert r.status_code == 200 and r.json()["graded"] == r.json()["compared"] == 0
            many = (shadow_module.MAX_SHADOW_ROWS // len(rows) + 1) * len(rows)
            big = {"rows": (rows * many)[:many], "row_ids": (ids * many)[:many]}
            r = await w.parties.pcb.post(shadow, json=big, headers=label)
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large", r.text
            used = answer["graded"]
            assert used == len(rows)  # every row sent had its outcome recorded
            monkeypatch.setattr(shadow_module, "MAX_SHADOW_PER_CHALLENGER", used + 10)
            r = await w.parties.pcb.post(shadow, json=body, headers=label)
            assert r.status_code == 409 and r.json()["code"] == "shadow_limit_reached", r.text
            assert r.json()["detail"]["used"] == used
            small = {"rows": rows[:10], "row_ids": ids[:10]}  # the refusal counted nothing
            r = await w.parties.pcb.post(shadow, json=small, headers=label)
            assert r.status_code == 200 and r.json()["graded"] == 10, r.text
            r = await w.parties.pcb.post(shadow, json=small, headers=label)
            assert r.status_code == 409, r.text
            # the deployed model is no challenger of itself
            r = await w.parties.pcb.post(
                f"{base}/challengers/{w.job_id}/shadow", json=body, headers=label
            )
            assert r.status_code == 409, r.text
            # deployed only after the contract's approvals; rollback stays one call
            versions = (await client.get(f"{base}/model-versions", headers=w.orgs.auth(PCB))).json()
            (challenger,) = [int(m["version"]) for m in versions if m["job_id"] == job]
            # each version keeps the contributions measured by its own job (the revenue reports
            # of contribution-sharing contracts split by model version use them)
            metrics = {int(m["version"]): m["metrics"] for m in versions}
            for v in (w.model_version, challenger):
                assert {"shapley.pcb", "shapley.paste"} <= set(metrics[v]), metrics[v]
            assert metrics[challenger]["shapley.paste"] != metrics[w.model_version]["shapley.paste"]
            for approver, org in (("pcb", PCB), ("oem", OWNER)):
                r = await client.post(
                    f"{base}/model-versions/{challenger}/approvals",
                    json={"approver": approver},
                    headers=w.orgs.auth(org),
                )
                assert r.status_code == 200, r.text
                if approver == "pcb":
                    assert r.json()["status"] != "deployed"
            assert r.json()["status"] == "deployed"
            r = await client.post(f"{base}/deployment/rollback", headers=w.orgs.auth(OWNER))
            assert r.status_code == 200 and int(r.json()["version"]) == w.model_version, r.text
        finally:
            await w.parties.aclose()
