"""Latency of predictions naming new paste lots (issue 18): incremental alignment at serving time.

Real party processes on loopback, open mode (no registry): the pcb-paste scenario trains one
epoch; the paste supplier then adds new lots through its ingestion endpoint (copies of lots the
boards use, under new ids) and the PCB maker asks for predictions naming them, each new lot
aligned by one serving round. ``--supplier-lots`` pads the supplier's table with lots no board
uses (the key book then holds that many points). Before timing, one prediction naming a
warm-up new lot builds the supplier's key book (reported as ``book_warmup_s``).

* plain, single rows: ``known_p50_ms`` (a lot the training aligned) against ``new_p50_ms`` (a
  lot never asked before, so each call runs a round); ``ratio`` = new / known.
* ckks, batches: ``batch_s`` of 1,000 boards of which ``new_lots`` name new lots (fresh ones
  per batch, so every batch runs a round).

Called by ``benchmarks/predict_latency.py --new-lots``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv

from services.cli.cluster import LocalCluster, PartyLaunch, PartyProcess
from services.protocol.messages import JobState, PredictRequest
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import generate
from services.scenario.serving_job import board_rows, serving_job

pc = time.perf_counter


class _Cluster(LocalCluster):
    """Parties get four minutes to start (a loaded machine imports torch slowly)."""

    def _wait_ready(self, party: PartyProcess, timeout: float = 240.0) -> None:
        super()._wait_ready(party, timeout)


def _pad(path: Path, key: str, lots: int) -> int:
    """Pad the supplier's table to ``lots`` rows with lots no board uses; its row count."""
    table = pacsv.read_csv(path)
    extra = lots - table.num_rows
    if extra > 0:
        take = pa.array([i % table.num_rows for i in range(extra)])
        pad = table.take(take)
        ids = pa.array([f"PL-PAD-{i:07d}" for i in range(extra)])
        pad = pad.set_column(pad.column_names.index(key), key, ids)
        table = pa.concat_tables([table, pad])
        pacsv.write_csv(table, path)
    return int(table.num_rows)


async def _run(tmp: Path, mode: str, supplier_lots: int, boards: int, calls: int) -> dict[str, Any]:
    files = generate(tmp / "data", boards=boards, lots=400, seed=11)
    key = files.key_paste
    held = _pad(files.paste_supplier, key, supplier_lots)
    out: dict[str, Any] = {"mode": mode, "supplier_lots": held, "boards": boards}
    with _Cluster(tmp / "cluster") as cluster:
        parties = cluster.start_all(
            [PartyLaunch("pcb", files.pcb_maker), PartyLaunch("paste", files.paste_supplier, key)]
        )
        spec = serving_job(
            files,
            f"bench-{mode}",
            parties["paste"].url,
            seed=11,
            width=16,
            batch_size=128,
            mode="ckks" if mode == "ckks" else "plain",
        )
        async with PartyClient(parties["pcb"].url, timeout=120.0) as pcb:
            t = pc()
            status = await pcb.train(spec)
            assert status.state is JobState.FINISHED, status.error
            out["train_s"] = round(pc() - t, 1)
            rows = board_rows(files)
            lots = {r[key]: r for r in pacsv.read_csv(files.paste_supplier).to_pylist()}
            used = sorted({r[key] for r in rows if r[key] in lots})
            fresh = 1 + (calls if mode == "plain" else 50 * calls)
            new_ids = [f"PL-NEW-{i:06d}" for i in range(fresh)]
            added = [{**lots[used[i % len(used)]], key: n} for i, n in enumerate(new_ids)]
            async with httpx.AsyncClient(base_url=parties["paste"].url, timeout=60) as supplier:
                r = await supplier.post("/v1/table/rows", json={"rows": added})
                assert r.status_code == 200, r.text

            async def predict(batch: list[dict[str, Any]]) -> tuple[float, int]:
                t0 = pc()
                answer = await pcb.predict(spec.job_id, PredictRequest(rows=batch))
                return pc() - t0, answer.predicted

            await predict(rows[:1])  # tokens, connections, the model's first call
            warm, _ = await predict([{**rows[0], key: new_ids[0]}])
            out["book_warmup_s"] = round(warm, 3)
            known = [rows[i] for i in range(len(rows)) if rows[i][key] in lots]
            if mode == "plain":
                k, n = [], []
                for i in range(calls):  # interleaved, so load changes hit both alike
                    k.append((await predict([known[i]]))[0])
                    seconds, got = await predict([{**known[i], key: new_ids[1 + i]}])
                    assert got == 1
                    n.append(seconds)
                out["known_p50_ms"] = round(1000 * statistics.median(k), 2)
                out["new_p50_ms"] = round(1000 * statistics.median(n), 2)
                out["ratio"] = round(statistics.median(n) / statistics.median(k), 2)
            else:
                seconds_list = []
                for c in range(calls):
                    batch = [dict(known[(c * 1000 + i) % len(known)]) for i in range(1000)]
                    for j in range(50):  # every 19th board names one of 50 fresh new lots
                        batch[j * 19][key] = new_ids[1 + 50 * c + j]
                    seconds, got = await predict(batch)
                    assert got == len(batch), (got, len(batch))
                    seconds_list.append(seconds)
                out["new_lots"] = 50
                out["batch_rows"] = 1000
                out["batch_s"] = [round(s, 3) for s in seconds_list]
                out["batch_s_median"] = round(statistics.median(seconds_list), 3)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(f"  {out}")
    return out


def measure_new_lots(
    mode: str, supplier_lots: int, *, boards: int = 3000, calls: int = 20
) -> dict[str, Any]:
    """One configuration (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix=f"splice-bench-newlots-{mode}-") as tmp:
        return asyncio.run(_run(Path(tmp), mode, supplier_lots, boards, calls))
