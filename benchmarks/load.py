"""Load test on loopback: registry token and contract-check paths, and a party's inference path.

Bounded in time (``--seconds`` per target). ``--clients`` concurrent clients (one
``httpx.AsyncClient`` each) in this process send requests back to back to server processes
started here; every second a thread samples the servers' resident memory (VmRSS of each server
process and its descendants, from ``/proc``). Per target: requests/s, p50/p95/p99 latency,
errors by status (or exception), memory at start and end, its maximum and its least-squares slope.

1. **registry** (``splice registry serve`` on a fresh PostgreSQL database, production argon2,
   rate limits out of reach as in ``benchmarks/registry.py``), once with one worker and once with
   ``--workers 4``: ``POST /oauth/token`` (client credentials for a ``party:call`` token under
   the contract and job) with ``client_secret_basic`` and with ``private_key_jwt`` (a fresh
   assertion per request: the registry's replay cache sees every one), and
   ``GET /v1/contracts/{id}/check`` with the paste supplier's registry token;
2. **predict**: a governed demo in miniature (plain cut layer, ``--boards`` boards, 2 epochs;
   real registry and party processes); after training, the OEM's clients call
   ``POST /v1/contracts/{id}/predict`` at the label party (``--predict-batch`` boards per call,
   each call metered), then wait until every usage event has reached the registry.

    python benchmarks/load.py --out benchmarks/results/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from rich.console import Console

import services.cli.demo as demo
from services.cli.governed import Governance
from services.cli.serving import Serving, shipped
from services.cli.serving import act as demo_act
from services.protocol.oauth_client import ClientCredentials, TokenSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import (  # noqa: E402  (benchmarks/registry.py: set-up over HTTP)
    PASTE,
    PASTE_URL,
    PCB,
    PRODUCTION_ARGON2,
    RegistryProcess,
    bearer,
    contract_and_job,
    database,
    free_port,
    onboard,
)

OUT_OF_REACH = {
    "SPLICE_REGISTRY_TOKEN_RATE_PER_CLIENT": "100000000",
    "SPLICE_REGISTRY_TOKEN_RATE_PER_IP": "100000000",
    "SPLICE_REGISTRY_API_RATE_PER_CLIENT": "100000000",
}
"""What ``RegistryProcess`` sets; the demo's registry inherits it from this process."""

Send = Callable[[httpx.AsyncClient], Awaitable[int]]
"""One request with a client's connection; answers the HTTP status."""


# --- memory ------------------------------------------------------------------------------------


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Every ``interval`` seconds, the RSS (MiB) of each named server: its process tree."""

    def __init__(self, roots: dict[str, int], interval: float = 1.0) -> None:
        self.roots, self.interval = roots, interval
        self.samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _sample(self) -> None:
        now = time.monotonic() - self._t0
        for name, root in self.roots.items():
            pids = _tree(root)
            self.samples[name].append((now, sum(_rss_kib(p) for p in pids) / 1024, len(pids)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, samples in self.samples.items():
            ts = [t for t, _, _ in samples]
            mb = [m for _, m, _ in samples]
            slope = statistics.linear_regression(ts, mb).slope if len(set(ts)) > 1 else 0.0
            out[name] = {
                "processes": max(n for _, _, n in samples),
                "samples": len(samples),
                "start_mb": round(mb[0], 1),
                "end_mb": round(mb[-1], 1),
                "max_mb": round(max(mb), 1),
                "slope_mb_per_min": round(slope * 60, 3),
            }
        return out


# --- the load loop -----------------------------------------------------------------------------


def pct(ms: list[float], q: int) -> float:
    if not ms:
        return float("nan")
    if len(ms) == 1:
        return ms[0]
    return statistics.quantiles(ms, n=100, method="inclusive")[q - 1]


async def load(
    send: Send, *, clients: int, seconds: float, base_url: str, auth: httpx.Auth | None = None
) -> dict[str, Any]:
    """``clients`` clients sending back to back for ``seconds``."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=60) as http:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status = str(await send(http))
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - t0)
                statuses[status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    ms = [s * 1e3 for s in latencies]
    errors = {k: v for k, v in sorted(statuses.items()) if k != "200"}
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(ms),
        "ok": statuses["200"],
        "rps": round(statuses["200"] / elapsed, 1),
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "errors": errors,
    }


async def measured(
    name: str,
    send: Send,
    roots: dict[str, int],
    args: argparse.Namespace,
    base_url: str,
    auth: httpx.Auth | None = None,
) -> dict[str, Any]:
    if args.warmup > 0:  # connections, caches, the servers' first allocations
        await load(send, clients=args.clients, seconds=args.warmup, base_url=base_url, auth=auth)
    cpu = time.process_time()
    with MemorySampler(roots) as memory:
        result = await load(
            send, clients=args.clients, seconds=args.seconds, base_url=base_url, auth=auth
        )
    result["generator_cpu_seconds"] = round(time.process_time() - cpu, 1)
    result["memory"] = memory.summary()
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


# --- registry ----------------------------------------------------------------------------------


def token_sender(creds: ClientCredentials, cid: str, job: str) -> Send:
    """A fresh party:call token for the paste supplier under the contract and job."""

    async def send(http: httpx.AsyncClient) -> int:
        form = {
            "grant_type": "client_credentials", "audience": PASTE_URL, "scope": "party:call",
            "contract_id": cid, "job_id": job,
        }  # fmt: skip
        auth = TokenSource(creds, http).authenticate(form)  # a fresh assertion for a JWT client
        if auth is None:
            resp = await http.post(creds.token_url, data=form)
        else:
            resp = await http.post(creds.token_url, data=form, auth=auth)
        return resp.status_code

    return send


async def registry_targets(
    reg: RegistryProcess, admin: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=reg.url, timeout=60) as http:
        orgs = await onboard(http, reg.url, admin, work)
        cid, job = await contract_and_job(http, reg.url, orgs)
        own = await TokenSource(orgs[PASTE].clients["private_key_jwt"], http).token(
            reg.url, "party:call"
        )
    assert reg.process is not None
    roots = {"registry": reg.process.pid}
    out: dict[str, Any] = {}
    for method in ("client_secret_basic", "private_key_jwt"):
        send = token_sender(orgs[PCB].clients[method], cid, job)
        out[f"token_{method}"] = await measured(f"token {method}", send, roots, args, reg.url)

    params = {"party": "paste", "job_id": job}

    async def check(http: httpx.AsyncClient) -> int:
        resp = await http.get(f"/v1/contracts/{cid}/check", params=params, headers=bearer(own))
        return resp.status_code

    out["check"] = await measured("check", check, roots, args, reg.url)
    return out


def run_registry(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"registry on PostgreSQL, {workers} worker(s):", flush=True)
    with tempfile.TemporaryDirectory(prefix="splice-bench-load-") as tmp:
        work = Path(tmp)
        with database("postgresql", work, args.postgres) as (url, admin):
            reg = RegistryProcess(
                url, free_port(), work / "registry.log", PRODUCTION_ARGON2,
                Fernet.generate_key().decode(), workers=workers,
            )  # fmt: skip
            try:
                reg.start()
                return {"workers": workers, **asyncio.run(registry_targets(reg, admin, work, args))}
            finally:
                reg.stop()


# --- a party's inference path ------------------------------------------------------------------


def _party_pids() -> dict[str, int]:
    """This process's party children by ``--name``."""
    me, out = os.getpid(), {}
    for pid in _tree(me)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().decode().split("\0")
        except OSError:
            continue
        if "party" in argv and "--name" in argv:
            out[f"party_{argv[argv.index('--name') + 1]}"] = pid
    return out


async def _aligned(label: httpx.AsyncClient, path: str, rows: list[dict[str, Any]]) -> list[Any]:
    """The rows the label party can answer (the job aligned their paste lot)."""
    r = await label.post(path, json={"rows": rows})
    r.raise_for_status()
    kept = [
        row
        for row, p in zip(rows, r.json()["predictions"], strict=True)
        if p["status"] == "predicted"
    ]
    if not kept:
        raise RuntimeError("no row of the sample is aligned")
    return kept


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
    print(f"predict: governed demo, plain, {args.boards} boards, 2 epochs", flush=True)
    result: dict[str, Any] = {}

    async def act(
        gov: Governance,
        who: Serving,
        rows: list[dict[str, Any]],
        out: Path,
        console: Console,
        batch: int = 50,
    ) -> dict[str, Any]:
        """The demo's serving act (deploy, a few predictions, revenue), then the load."""
        serving = await demo_act(gov, who, rows, out, console, batch)
        auth = gov.auth(who.owner_org, who.label_url, "predict:call")
        auth.contract_id = gov.contract_id
        path = f"/v1/contracts/{gov.contract_id}/predict"
        async with httpx.AsyncClient(base_url=who.label_url, auth=auth, timeout=60) as label:
            rows = await _aligned(label, path, rows)
        calls = itertools.count()

        async def predict(http: httpx.AsyncClient) -> int:
            size = args.predict_batch
            start = next(calls) * size % max(1, len(rows) - size)
            resp = await http.post(path, json={"rows": rows[start : start + size]})
            return resp.status_code

        assert gov.process is not None
        roots = {**_party_pids(), "registry": gov.process.pid}
        loaded = await measured("predict", predict, roots, args, who.label_url, auth)
        t0 = time.perf_counter()
        await shipped(gov, who, timeout=300)
        loaded.update(
            batch=args.predict_batch,
            distinct_rows=len(rows),
            usage_drain_seconds=round(time.perf_counter() - t0, 2),
        )
        result.update(loaded)
        return serving

    demo.act = act  # type: ignore[attr-defined]  # run_demo calls the act it imported
    try:
        with tempfile.TemporaryDirectory(prefix="splice-bench-load-predict-") as tmp:
            quiet = Console(file=io.StringIO(), width=120)
            demo.run_demo(
                Path(tmp), boards=args.boards, epochs=2, console=quiet, mode="plain",
                serve_rows=400, serve_batch=50,
            )  # fmt: skip
    finally:
        demo.act = demo_act  # type: ignore[attr-defined]
    if not result:
        raise RuntimeError("the demo did not reach serving")
    print(f"  usage events shipped {result['usage_drain_seconds']} s after the load", flush=True)
    return result


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load per target")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of unrecorded load before each target")  # fmt: skip
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--boards", type=int, default=3000)
    parser.add_argument("--predict-batch", type=int, default=1, help="boards per predict call")
    parser.add_argument("--targets", nargs="+", default=["registry", "predict"],
                        choices=["registry", "predict"])  # fmt: skip
    parser.add_argument("--postgres", default=os.environ.get(
        "SPLICE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="maintenance database URL (splice_bench_<hex> is created, then dropped)")  # fmt: skip
    args = parser.parse_args()
    os.environ.update(OUT_OF_REACH)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    if "registry" in args.targets:
        for workers in args.workers:
            results[f"registry_{workers}_worker{'s' if workers > 1 else ''}"] = run_registry(
                workers, args
            )
    if "predict" in args.targets:
        results["predict"] = run_predict(args)

    summary: dict[str, Any] = {}
    errors = 0
    for key, res in results.items():
        targets = {"predict": res} if key == "predict" else {
            k: v for k, v in res.items() if isinstance(v, dict)
        }  # fmt: skip
        for name, t in targets.items():
            errors += sum(t["errors"].values())
            tag = name if key == "predict" else f"{key}_{name}"
            summary[f"{tag}_rps"] = t["rps"]
            summary[f"{tag}_p95_ms"] = t["p95_ms"]
            for server, mem in t["memory"].items():
                summary[f"{tag}_{server}_rss_slope_mb_per_min"] = mem["slope_mb_per_min"]
    for key in results:  # headline: private_key_jwt (basic is bound by argon2)
        if key.startswith("registry_"):
            n = key.removeprefix("registry_")
            summary[f"registry_token_rps_{n}"] = results[key]["token_private_key_jwt"]["rps"]
            summary[f"registry_token_basic_rps_{n}"] = results[key]["token_client_secret_basic"][
                "rps"
            ]
            summary[f"check_rps_{n}"] = results[key]["check"]["rps"]
    if "predict" in results:
        summary["predict_rps"] = results["predict"]["rps"]
    summary["errors"] = errors
    doc = {
        "benchmark": "load",
        "command": f"python benchmarks/load.py --seconds {args.seconds:g} --warmup "
        f"{args.warmup:g} --clients {args.clients} --workers {' '.join(map(str, args.workers))} "
        f"--boards {args.boards} --predict-batch {args.predict_batch}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": round(load_before, 2),
        },
        "setup": (
            "servers in their own processes on loopback; load from this process "
            f"({args.clients} httpx.AsyncClient clients); RSS sampled every second"
        ),
        "summary": summary,
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out} ({doc['total_seconds']} s)")


if __name__ == "__main__":
    main()
