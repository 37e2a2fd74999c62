"""The feature party's histogram work spread over worker processes of its own.

SEAL calls hold the GIL, so threads do not help; the nodes of a tree level are independent, and
one node's chunks split into ranges whose folded partial sums add up to its histogram. Each worker
is forked once per job with the label party's public bundle and the party's bin codes (nothing is
pickled: requests and replies are the tree protocol's framing of raw bytes over a pipe), builds its
own :class:`FeatureEvaluator` and pre-encodes its diagonals. The party's own process keeps one
evaluator without diagonals to check uploads and to add the partials of a split node.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import weakref
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import messages as msg
from services.engine.gbdt.ckks import FeatureEvaluator
from services.engine.gbdt.ckks_plan import HistPlan
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.he import seal

I64 = npt.NDArray[np.int64]
Node = tuple[list[bytes], I64 | None]
WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Worker processes per feature party and job (``SPLICE_GBDT_WORKERS`` overrides; 1: none)."""


def default_workers() -> int:
    """Worker count from ``SPLICE_GBDT_WORKERS`` or :data:`WORKERS`."""
    raw = os.environ.get("SPLICE_GBDT_WORKERS", "")
    return max(1, int(raw)) if raw.isdigit() else WORKERS


def _serve(
    conn: Connection, inherited: list[Connection], bundle: bytes, rows: int, width: int, codes: I64
) -> None:
    """A worker: evaluate chunk ranges until the pipe closes."""
    for other in inherited:  # the party's ends of every pipe so far: else no EOF ever comes
        other.close()
    try:
        ev = FeatureEvaluator(bundle, HistPlan(rows, width), codes)
        ev.prepare()
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                head, sections = msg.decode(data, "part")
                n_rows = msg.field(head, "rows", int, "part")
                node = None
                if n_rows >= 0:
                    node = np.frombuffer(sections[0], dtype="<i4").astype(np.int64)
                    sections = sections[1:]
                out = ev.partial(
                    sections,
                    node,
                    msg.field(head, "first", int, "part"),
                    msg.field(head, "chunks", int, "part"),
                    msg.field(head, "zero", bool, "part"),
                )
                conn.send_bytes(msg.encode({"kind": "part", "ok": True}, out))
            except Exception as exc:  # a defect is reported to the party, never a hang
                conn.send_bytes(msg.encode({"kind": "part", "ok": False, "error": str(exc)}))
    finally:
        shutil.rmtree(seal._scratch_dir(), ignore_errors=True)  # noqa: SLF001 (no atexit here)


def _stop(procs: list[BaseProcess], conns: list[Connection]) -> None:
    for conn in conns:
        conn.close()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()


class EvaluatorPool:
    """Evaluates a level's nodes over ``workers`` processes (in process when 1)."""

    def __init__(self, bundle: bytes, plan: HistPlan, codes: I64, workers: int) -> None:
        self.plan = plan
        self.local = FeatureEvaluator(bundle, plan, codes)  # checks the bundle here, loudly
        self._conns: list[Connection] = []
        if workers <= 1:
            self.local.prepare()
            return
        ctx = multiprocessing.get_context("fork")
        procs: list[BaseProcess] = []
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(theirs, [*self._conns, mine], bundle, plan.rows, plan.width, codes),
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            self._conns.append(mine)
        self._finalizer = weakref.finalize(self, _stop, procs, self._conns)

    def close(self) -> None:
        """End the workers (also done when the pool is garbage-collected)."""
        if self._conns:
            self._finalizer()

    def evaluate(self, nodes: list[Node]) -> list[list[bytes]]:
        """Per node ``(chunk ciphertexts, compact rows or None)``: its result blobs."""
        units: list[tuple[int, int, int, bool]] = []  # node, first chunk, end chunk, zero
        for i, (blobs, rows) in enumerate(nodes):
            chunks = self.local.node_chunks(rows)
            if len(blobs) != chunks:
                raise GbdtMessageError(f"expected {chunks} ciphertexts, got {len(blobs)}")
            parts = 1
            if self._conns and len(nodes) < len(self._conns):
                parts = min(chunks, len(self._conns) // len(nodes))
            cuts = [chunks * k // parts for k in range(parts + 1)]
            units += [(i, cuts[k], cuts[k + 1], k == 0) for k in range(parts)]
        if not self._conns:
            return [self.local.evaluate(blobs, rows) for blobs, rows in nodes]
        results = self._run(nodes, units)
        out = []
        for i in range(len(nodes)):
            mine = [results[u] for u, unit in enumerate(units) if unit[0] == i]
            out.append(mine[0] if len(mine) == 1 else self.local.combine(mine))
        return out

    def _run(self, nodes: list[Node], units: list[tuple[int, int, int, bool]]) -> list[list[bytes]]:
        order = sorted(range(len(units)), key=lambda u: units[u][1] - units[u][2])  # largest first
        results: list[list[bytes]] = [[] for _ in units]
        busy: dict[Connection, int] = {}
        free = list(self._conns)
        failure: Exception | None = None
        while order or busy:
            while order and free and failure is None:
                u = order.pop(0)
                conn = free.pop()
                node, first, end, zero = units[u]
                blobs, rows = nodes[node]
                head = {
                    "kind": "part",
                    "rows": -1 if rows is None else int(rows.shape[0]),
                    "first": first,
                    "chunks": self.local.node_chunks(rows),
                    "zero": zero,
                }
                lead = [] if rows is None else [rows.astype("<i4").tobytes()]
                conn.send_bytes(msg.encode(head, lead + blobs[first:end]))
                busy[conn] = u
            for ready in wait(list(busy)):
                assert isinstance(ready, Connection)
                u = busy.pop(ready)
                try:
                    head, sections = msg.decode(ready.recv_bytes(), "part")
                except EOFError:
                    raise RuntimeError("a histogram worker process died") from None
                if head.get("ok") is not True:  # drain the others first: pipes stay in step
                    failure = GbdtMessageError(str(head.get("error", "histogram worker failed")))
                results[u] = sections
                free.append(ready)
            if failure is not None and not busy:
                raise failure
        return results
