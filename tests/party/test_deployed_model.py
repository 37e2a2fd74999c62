"""A deployed model is what the registry recorded, on the data it was trained on (issue 15).

In-process registry (SQLite) and parties: the model version says what it is (contract version,
task, columns, spec digest, every party's segment digest, model digest) and prediction answers
carry its model digest; a job with an approved or deployed model version is immutable at every
party; a party whose segment is not the recorded one refuses to serve; a party restarted on a
re-ordered table serves the same predictions, and on an edited one refuses with ``data_changed``
naming itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from contracts.job import job_terms, spec_digest
from services.engine.tabular import read_table
from services.protocol.terms import model_digest
from tests.party.serving_world import World, registry, trained_world
from tests.registry.contract_util import OWNER, PCB, contract_of
from tests.registry.world import PASTE_URL, fast_document, prepare_body, training_spec


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, "plain")
        try:
            yield w
        finally:
            await w.parties.aclose()


async def _predict(w: World, rows: list[dict[str, Any]]) -> Any:
    return await w.parties.pcb.post(
        f"/v1/contracts/{w.contract_id}/predict", json={"rows": rows}, headers=await w.buyer()
    )


async def _approve(w: World, approver: str, org: str) -> dict[str, Any]:
    r = await w.registry.post(
        f"/v1/contracts/{w.contract_id}/model-versions/{w.model_version}/approvals",
        json={"approver": approver},
        headers=w.orgs.auth(org),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _perturbed(path: Path, prefix: str) -> None:
    """Change the weights named ``prefix...`` of a safetensors file a little (a swapped
    segment), keeping everything else."""
    with safe_open(path, framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(path)
    for name, value in tensors.items():
        if name.startswith(prefix) and value.is_floating_point():
            tensors[name] = value + 0.01
    save_file(tensors, path, metadata=metadata)


async def test_a_deployed_model_says_what_it_is_and_never_changes(world: World) -> None:
    w = world
    doc = fast_document(epochs=2, mode="plain")
    trainer = w.trainer
    status = trainer.status
    # the model version says what it is (the registry derived task and columns itself)
    record = await _approve(w, "pcb", PCB)
    terms = job_terms(contract_of(doc))
    assert record["contract_version"] == 1 and record["task"] == "binary"
    assert record["columns"] == terms.columns
    assert record["spec_digest"] == status.spec_digest == spec_digest(contract_of(doc))
    assert record["segment_digests"] == status.segment_digests
    assert set(record["segment_digests"]) == {"pcb", "paste"}
    assert record["model_digest"] == model_digest(record["spec_digest"], status.segment_digests)
    # the label party trained on the contract's columns only: not the label proxy defect_type
    assert trainer.data is not None and trainer.data.encoder is not None
    own = [c.name for c in trainer.data.encoder.state.columns]
    assert own == terms.columns["pcb"] and "defect_type" not in own

    # approved by one approver: already immutable at every party
    label = await w.token(
        PCB, audience=PASTE_URL, scope="party:call", contract_id=w.contract_id, job_id=w.job_id
    )
    path = f"/v1/jobs/{w.job_id}"
    body = prepare_body(doc, w.job_id, ["PL-000001"])
    for r in (
        await w.parties.paste.delete(path, headers=label),
        await w.parties.paste.put(path, json=body, headers=label),
        await w.parties.pcb.post(
            "/v1/trainings",
            json=training_spec(w.job_id, w.contract_id, doc),
            headers=await w.token(PCB, scope="jobs:run"),
        ),
    ):
        assert r.status_code == 409 and r.json()["code"] == "model_immutable", r.text
    assert w.job_id in w.parties.paste_app.state.party.jobs

    await _approve(w, "oem", OWNER)
    await w.deploy()
    rows = w.rows(w.test_samples(30))
    served = await _predict(w, rows)
    assert served.status_code == 200, served.text
    assert served.json()["model_digest"] == record["model_digest"]
    # a column the contract does not name is no input of the model: a request naming it is refused
    leaky = [{**row, "defect_type": "none"} for row in rows[:2]]
    r = await _predict(w, leaky)
    assert r.status_code == 422 and "defect_type" in r.json()["detail"]["unknown"], r.text

    # a swapped segment is refused at serving, by the party holding it
    best = w.tmp / "paste" / "jobs" / w.job_id / "best.safetensors"
    original = best.read_bytes()
    _perturbed(best, "model.")
    await w.restart()
    r = await _predict(w, rows)
    assert r.status_code == 409 and r.json()["code"] == "segment_mismatch", r.text
    assert r.json()["detail"]["party"] == "paste"
    best.write_bytes(original)
    model = w.tmp / "pcb" / "trainings" / w.job_id / "model.safetensors"
    _perturbed(model, "top.")
    await w.restart()
    r = await _predict(w, rows)
    assert r.status_code == 409 and r.json()["code"] == "segment_mismatch", r.text
    assert r.json()["detail"]["party"] == "pcb"


def _reordered(table: pa.Table, path: Path, seed: int) -> Path:
    order = np.random.default_rng(seed).permutation(table.num_rows)
    shuffled = table.take(pa.array(order))
    shuffled = shuffled.select(list(reversed(shuffled.column_names)))
    pacsv.write_csv(shuffled, path)
    return path


def _edited(table: pa.Table, path: Path, column: str, value: Any) -> Path:
    values = table.column(column).to_pylist()
    values[0] = value
    index = table.column_names.index(column)
    pacsv.write_csv(table.set_column(index, column, pa.array(values)), path)
    return path


async def test_predictions_are_bound_to_the_data_they_were_trained_on(world: World) -> None:
    w = world
    await w.deploy()
    rows = w.rows(w.test_samples(40))
    before = await _predict(w, rows)
    assert before.status_code == 200, before.text
    pcb, paste = read_table(w.files.pcb_maker), read_table(w.files.paste_supplier)

    # both tables re-exported in another order (rows and columns), both parties restarted:
    # every row is found by key, encoded as in training: the very same predictions
    await w.restart(
        pcb=_reordered(pcb, w.tmp / "pcb-reordered.csv", 1),
        paste=_reordered(paste, w.tmp / "paste-reordered.csv", 2),
    )
    after = await _predict(w, rows)
    assert after.status_code == 200, after.text
    assert after.json()["predictions"] == before.json()["predictions"]
    assert after.json()["model_digest"] == before.json()["model_digest"]

    # a column the job does not use (the label proxy) changes: nothing the job used changed
    await w.restart(pcb=_edited(pcb, w.tmp / "pcb-proxy.csv", "defect_type", "bridging"))
    assert (await _predict(w, rows)).json()["predictions"] == before.json()["predictions"]

    # a row the job trained on is edited, at either party: refused, naming that party
    viscosity = float(paste.column("viscosity_pa_s")[0].as_py() or 150.0) + 10.0
    await w.restart(paste=_edited(paste, w.tmp / "paste-edited.csv", "viscosity_pa_s", viscosity))
    r = await _predict(w, rows)
    assert r.status_code == 409 and r.json()["code"] == "data_changed", r.text
    assert r.json()["detail"]["party"] == "paste"
    temperature = float(pcb.column("ambient_temp_c")[0].as_py() or 20.0) + 1.5
    await w.restart(pcb=_edited(pcb, w.tmp / "pcb-edited.csv", "ambient_temp_c", temperature))
    r = await _predict(w, rows)
    assert r.status_code == 409 and r.json()["code"] == "data_changed", r.text
    assert r.json()["detail"]["party"] == "pcb"
