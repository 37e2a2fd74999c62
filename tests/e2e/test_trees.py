"""The tree family through real party processes (issue 20): a ``gbdt`` job is aligned by PSI,
trained by the label party through the feature party's tree endpoints, checkpointed per tree;
the feature party killed (SIGKILL) between trees and restarted, the run resumes from its last
tree and ends with the model of an uninterrupted run of the same job (plain mode is exact). The
uninterrupted run is the same job id on a second pair of processes with the same key masters,
so both runs hold the same job keys: another job id would give the feature party another
private feature order, which decides exact ties between its features. The label party killed
after training serves the same predictions once restarted (its model from the last tree
checkpoint)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.cluster import LocalCluster, PartyLaunch
from services.engine.tabular import read_table
from services.protocol.errors import SpliceError
from services.protocol.messages import (
    FeaturePartyRef,
    GbdtModelSpec,
    JobState,
    PredictRequest,
    Task,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import ScenarioFiles, generate

pytestmark = pytest.mark.e2e

TREES = 12
LABEL = {"SPLICE_PARTY_KEY_MASTER": "tree-tests-label", "SPLICE_PARTY_RESUME_TIMEOUT_SECONDS": "60"}
PASTE = {"SPLICE_PARTY_KEY_MASTER": "tree-tests-paste"}


class World:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp
        self.files: ScenarioFiles = generate(tmp / "data", boards=600, lots=30, seed=3)
        self.cluster = LocalCluster(tmp / "cluster")
        self.paste = PartyLaunch("paste", self.files.paste_supplier, self.files.key_paste, PASTE)
        self.label = PartyLaunch("pcb", self.files.pcb_maker, env=LABEL)
        self.parties = self.cluster.start_all([self.label, self.paste])

    def spec(self, job_id: str, paste_url: str, mode: str = "plain") -> TrainingSpec:
        f = self.files
        return TrainingSpec(
            job_id=job_id,
            task=Task.BINARY,
            label_column=f.label_binary,
            party="pcb",
            feature_parties=[FeaturePartyRef(name="paste", url=paste_url, key_column=f.key_paste)],
            model=GbdtModelSpec(family="gbdt", trees=TREES, depth=2, bins=16),
            seed=7,
            id_column=f.id_column,
            exclude_columns=[f.label_multiclass],
            protection={"mode": mode},
            alignment="psi",
        )

    def restart_pcb(self) -> None:
        port = int(self.parties["pcb"].url.rsplit(":", 1)[1])
        self.parties["pcb"] = self.cluster.start(self.label, port=port)

    def rows(self) -> list[dict[str, Any]]:
        """Label-party rows of a prediction request (its features and the paste lot)."""
        f = self.files
        drop = [f.id_column, f.label_binary, f.label_multiclass]
        return read_table(f.pcb_maker).drop_columns(drop).to_pylist()[:60]

    def restart_paste(self) -> None:
        port = int(self.parties["paste"].url.rsplit(":", 1)[1])
        self.parties["paste"] = self.cluster.start(self.paste, port=port)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("trees"))
    try:
        yield w
    finally:
        w.cluster.close()


async def _follow(
    client: PartyClient, spec: TrainingSpec, kill: World | None = None
) -> TrainingStatus:
    """Run ``spec`` to its end; with ``kill``, SIGKILL its feature party once a tree is done."""
    status = await client.start_training(spec)
    deadline = time.monotonic() + 180
    while status.state not in (JobState.FINISHED, JobState.FAILED):
        assert time.monotonic() < deadline, "the run did not end"
        await asyncio.sleep(0.01)
        status = await client.training(spec.job_id)
        if kill is not None and len(status.history) >= 2:
            assert len(status.history) < TREES, "the run ended too soon to be interrupted"
            kill.cluster.stop("paste", kill=True)
            await asyncio.to_thread(kill.restart_paste)
            kill = None
    return status


async def _predict(url: str, job_id: str, rows: list[dict[str, Any]]) -> list[Any]:
    async with PartyClient(url) as client:
        for _ in range(1200):  # a restarted label party serves once its run is reloaded
            try:
                answer = await client.predict(job_id, PredictRequest(rows=rows))
            except SpliceError as exc:
                assert exc.code.value in {"model_not_loaded", "peer_unavailable"}, exc
                await asyncio.sleep(0.1)
                continue
            return [p.model_dump() for p in answer.predictions]
    raise AssertionError("the label party did not serve again")


async def test_tree_job_trains_resumes_after_a_kill_and_serves_after_a_restart(
    world: World,
) -> None:
    twin = World(world.root / "uninterrupted")
    try:
        async with PartyClient(twin.parties["pcb"].url) as client:
            reference = await _follow(client, twin.spec("trees", twin.parties["paste"].url))
    finally:
        await asyncio.to_thread(twin.cluster.close)
    assert reference.state is JobState.FINISHED, reference.error
    assert len(reference.history) == TREES and reference.resumes == 0
    assert reference.test["auc"] > 0.6
    assert set(reference.contributions["shapley"]) == {"paste"}
    async with PartyClient(world.parties["pcb"].url) as client:
        resumed = await _follow(client, world.spec("trees", world.parties["paste"].url), world)
    assert resumed.state is JobState.FINISHED, resumed.error
    assert resumed.resumes >= 1
    # plain trees are exact: the resumed run grew the uninterrupted run's model
    assert resumed.test == reference.test
    assert [h.epoch for h in resumed.history] == list(range(1, TREES + 1))
    for got, want in zip(resumed.history, reference.history, strict=True):
        assert got.validation == pytest.approx(want.validation, rel=1e-9)
    # the label party killed after training serves the resumed model again once restarted
    rows = world.rows()
    before = await _predict(world.parties["pcb"].url, "trees", rows)
    served = [p for p in before if p["status"] != "no_prediction"]
    assert len(served) > 10 and len({p["probability"] for p in served}) > 1
    world.cluster.stop("pcb", kill=True)
    await asyncio.to_thread(world.restart_pcb)
    assert await _predict(world.parties["pcb"].url, "trees", rows) == before
