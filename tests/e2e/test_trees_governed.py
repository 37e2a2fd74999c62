"""A tree contract end to end with real processes (issue 20): the registry (SQLite), the PCB
maker (label party) and the paste supplier (feature party) under a signed ``gbdt`` contract
(ckks, 3 trees of depth 2). ``splice job start`` trains it through the parties, reporting each
tree; the model version is registered with each party's contribution; both approvers deploy it;
predictions walk the trees through the parties, carry the recorded model digest and are
metered (every answer's usage event reaches the registry)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.cli.demo import OEM, PASTE, PCB
from services.cli.governed import start_registry
from services.engine.tabular import read_table
from services.scenario.pcb_paste import generate
from tests.e2e.test_contract_jobs import _approve, _cli, _model_version, _predict, _setup
from tests.e2e.test_metering_outage import _drained

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TREES = 3


def tree_contract(directory: Path) -> Path:
    """The example tree contract with a model that trains in seconds."""
    doc = yaml.safe_load((ROOT / "contracts/examples/pcb-paste-trees.yaml").read_text())
    doc["model"] = {"family": "gbdt", "trees": TREES, "depth": 2, "bins": 16}
    path = directory / "contract-trees.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_tree_contract_trains_deploys_and_serves_metered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLICE_REGISTRY_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("SPLICE_REGISTRY_ARGON2_MEMORY_KIB", "8192")
    gov, admin = start_registry(tmp_path / "registry")
    try:
        asyncio.run(_setup(gov, admin, tree_contract(tmp_path)))
        files = generate(tmp_path / "data", boards=500, lots=30, seed=5)
        ports = {"pcb": free_port(), "paste": free_port()}
        ttl = {"SPLICE_PARTY_CONTRACT_CHECK_TTL_SECONDS": "0.5"}
        with LocalCluster(tmp_path / "cluster") as cluster:
            urls = {n: cluster.url(p) for n, p in ports.items()}
            peers = {"SPLICE_PARTY_PEERS": json.dumps({"paste": urls["paste"]})}
            # two histogram workers even for this small job: the service starts them as
            # subprocesses (ckks_worker), which this run then goes through
            paste_env = gov.party_env(PASTE, urls["paste"]) | ttl | {"SPLICE_GBDT_WORKERS": "2"}
            cluster.start_all(
                [
                    PartyLaunch(
                        "pcb", files.pcb_maker, env=gov.party_env(PCB, urls["pcb"]) | ttl | peers
                    ),
                    PartyLaunch("paste", files.paste_supplier, files.key_paste, paste_env),
                ],
                ports=ports,
            )
            out = _cli(gov, PCB, "job", "start", gov.contract_id, "--label-url", urls["pcb"],
                       "--job", gov.job_id, "--json")  # fmt: skip
            status = json.loads(out[out.index("{") :])
            assert status["state"] == "finished", status
            assert status["mode"] == "ckks"
            assert [h["epoch"] for h in status["history"]] == list(range(1, TREES + 1))
            assert all("auc" in h["validation"] for h in status["history"])
            assert 0.5 < status["test"]["auc"] <= 1.0
            assert set(status["contributions"]["shapley"]) == {"paste"}

            shown = asyncio.run(_model_version(gov))
            assert shown["model_digest"] == status["model_digest"]
            assert "shapley.paste" in shown["metrics"], shown["metrics"]
            asyncio.run(_approve(gov, PCB, "pcb"))
            assert "deployed" in _cli(
                gov, OEM, "model", "approve", gov.contract_id, "1", "--approver", "oem"
            )

            lots = set(read_table(files.paste_supplier).column("paste_lot_id").to_pylist())
            boards = read_table(files.pcb_maker).drop_columns(["board_id", "defect", "defect_type"])
            request = [r for r in boards.to_pylist() if r["paste_lot_id"] in lots][:40]
            asyncio.run(asyncio.sleep(1.0))  # cached contract checks see the deployment
            first = asyncio.run(_predict(gov, urls["pcb"], request))
            assert first.status_code == 200, first.text
            answer = first.json()
            assert answer["model_digest"] == shown["model_digest"]
            probabilities = [p["probability"] for p in answer["predictions"]]
            assert len(probabilities) == 40 and all(0 < p < 1 for p in probabilities)
            assert len(set(probabilities)) > 1, "the trees split the rows"
            again = asyncio.run(_predict(gov, urls["pcb"], request))
            assert again.json()["predictions"] == answer["predictions"]
            asyncio.run(_drained(urls["pcb"]))
        stored = sqlite3.connect(tmp_path / "registry" / "registry.db").execute(
            "SELECT event_id, count FROM usage_events"
        )
        events = dict(stored.fetchall())
        assert set(events) == {answer["event_id"], again.json()["event_id"]}
        assert sum(events.values()) == 80
    finally:
        gov.stop()
