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
import subprocess
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import ckks_worker
from services.engine.gbdt import messages as msg
from services.engine.gbdt.ckks import CACHE_BYTES, FeatureEvaluator
from services.engine.gbdt.ckks_plan import HistPlan
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.he import seal

I64 = npt.NDArray[np.int64]
Node = tuple[list[bytes], I64 | None]


class Unit(NamedTuple):
    """Chunks ``first:end`` of node ``node``; ``zero``: carries the re-randomisation;
    ``worker``: the worker whose chunk range it is (-1: any)."""

    node: int
    first: int
    end: int
    zero: bool
    worker: int


@dataclass
class _Ticket:
    """One submitted request: its nodes, units, per-unit results, units still out."""

    nodes: list[Node]
    units: list[Unit]
    results: list[list[bytes]]
    left: int = 0
    failure: Exception | None = None
    future: Future[list[list[bytes]]] | None = None


_BACKGROUND: list[ThreadPoolExecutor] = []
_BACKGROUND_LOCK = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """The process's one thread for histograms evaluated in process in the background: SEAL
    calls hold the GIL, so a second thread would not compute faster, and one per job would
    idle on after its training."""
    with _BACKGROUND_LOCK:
        if not _BACKGROUND:
            _BACKGROUND.append(ThreadPoolExecutor(1, thread_name_prefix="gbdt-histograms"))
        return _BACKGROUND[0]


MAX_TICKETS = 64
"""Histogram requests a party holds uncollected (a label party needs one per node of a level)."""
WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Worker processes per feature party and job (``SPLICE_GBDT_WORKERS`` overrides; 1: none)."""


def default_workers(small: bool = False) -> int:
    """Worker count from ``SPLICE_GBDT_WORKERS`` (for every job), else :data:`WORKERS`, or
    1 for a ``small`` job (forking or starting workers costs more than they save)."""
    raw = os.environ.get("SPLICE_GBDT_WORKERS", "")
    if raw.isdigit():
        return max(1, int(raw))
    return 1 if small else WORKERS


def _serve(
    conn: Connection,
    inherited: list[Connection],
    bundle: bytes,
    plan: HistPlan,
    codes: I64,
    own: range,
) -> None:
    """A worker: evaluate chunk ranges until the pipe closes; ``own`` are the chunks of every
    dense node it is given (their diagonals are the ones it pre-encodes)."""
    for other in inherited:  # the party's ends of every pipe so far: else no EOF ever comes
        other.close()
    try:
        ev = FeatureEvaluator(bundle, plan, codes)
        ev.prepare(own)
        while True:
            try:
                while not conn.poll(0) and ev.stock_zero():  # idle: re-randomisers ahead
                    pass
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


def _stop(procs: list[BaseProcess | subprocess.Popen[bytes]], conns: list[Connection]) -> None:
    for conn in conns:
        conn.close()  # a worker exits on end of file
    for proc in procs:
        if isinstance(proc, subprocess.Popen):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            continue
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()


class EvaluatorPool:
    """Evaluates a level's nodes over ``workers`` processes (in process when 1)."""

    def __init__(
        self,
        bundle: bytes,
        plan: HistPlan,
        codes: I64,
        workers: int,
        background: bool = False,
        spawn: bool = False,
    ) -> None:
        """``spawn``: the workers are started as subprocesses (:mod:`.ckks_worker`), not forked
        (a party service: forking from its threads could hand a child a lock another thread
        held). ``background`` (with ``workers`` 1): a request is evaluated in the process's
        background thread, so ``submit`` answers at once and the label party's next steps
        overlap this party's work."""
        self.plan = plan
        self._background = background and workers <= 1
        self.local = FeatureEvaluator(bundle, plan, codes)  # checks the bundle here, loudly
        self._conns: list[Connection] = []
        self._tickets: dict[int, _Ticket] = {}
        self._next = 0
        self._queue: list[tuple[int, int]] = []
        """(ticket, unit) not yet handed to a worker, in the order they are handed out."""
        self._busy: dict[Connection, tuple[int, int]] = {}
        self._free: list[int] = []
        if workers <= 1:
            self.local.prepare()
            return
        ctx = multiprocessing.get_context("fork")
        procs: list[BaseProcess | subprocess.Popen[bytes]] = []
        workers = min(workers, plan.chunks)
        self._cuts = [plan.chunks * k // workers for k in range(workers + 1)]
        diagonals = plan.chunks * sum(g.size for g in plan.groups) * plan.poly_degree * 8
        self._owned = diagonals > CACHE_BYTES  # too big to copy: each worker keeps its range
        for k in range(workers):
            own = range(self._cuts[k], self._cuts[k + 1]) if self._owned else range(plan.chunks)
            if spawn:
                started, mine = ckks_worker.spawn(bundle, plan, codes, own)
                procs.append(started)
                self._conns.append(mine)
                continue
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(theirs, [*self._conns, mine], bundle, plan, codes, own),
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            self._conns.append(mine)
        self._free = list(range(len(self._conns)))
        self._finalizer = weakref.finalize(self, _stop, procs, self._conns)

    def close(self) -> None:
        """End the workers (also done when the pool is garbage-collected)."""
        if self._conns:
            self._finalizer()

    def _in_process(self, nodes: list[Node]) -> list[list[bytes]]:
        return [self.local.evaluate(blobs, rows) for blobs, rows in nodes]

    def evaluate(self, nodes: list[Node]) -> list[list[bytes]]:
        """Per node ``(chunk ciphertexts, compact rows or None)``: its result blobs (a
        :meth:`submit` and its :meth:`collect`)."""
        return self.collect(self.submit(nodes))

    def submit(self, nodes: list[Node]) -> int:
        """Queue ``nodes`` for the workers and hand out what free workers can take now; returns
        the ticket :meth:`collect` answers for. Checked first: a malformed node queues nothing.

        When the diagonals exceed one process's cache, a dense node is split over the workers by
        their own chunk ranges (each pre-encoded only those: the cache is shared out, not
        copied); otherwise every worker holds them all. Other nodes go whole to a free worker,
        or split in chunk ranges when there are fewer of them than workers."""
        for blobs, rows in nodes:
            chunks = self.local.node_chunks(rows)
            if len(blobs) != chunks:
                raise GbdtMessageError(f"expected {chunks} ciphertexts, got {len(blobs)}")
        if len(self._tickets) >= MAX_TICKETS:
            raise GbdtMessageError(f"more than {MAX_TICKETS} histogram requests not collected")
        ticket = self._next
        self._next += 1
        if not self._conns:  # in process: now, or in the background thread
            if self._background:
                entry = _Ticket(nodes, [], [])
                entry.future = _background().submit(self._in_process, nodes)
                self._tickets[ticket] = entry
            else:
                self._tickets[ticket] = _Ticket(nodes, [], self._in_process(nodes))
            return ticket
        units: list[Unit] = []
        loose = sum(rows is not None or not self._owned for _, rows in nodes)
        for i, (_, rows) in enumerate(nodes):
            chunks = self.local.node_chunks(rows)
            if rows is None and self._owned:
                cuts, owned = self._cuts, True
            else:
                parts = max(1, min(chunks, len(self._conns) // loose))
                cuts, owned = [chunks * k // parts for k in range(parts + 1)], False
            units += [
                Unit(i, cuts[k], cuts[k + 1], k == 0, k if owned else -1)
                for k in range(len(cuts) - 1)
            ]
        entry = _Ticket(nodes, units, [[] for _ in units])
        self._tickets[ticket] = entry
        # a worker takes its own dense ranges first, then the largest compact unit left
        order = sorted(range(len(units)), key=lambda u: units[u].first - units[u].end)
        self._queue += [(ticket, u) for u in order]
        entry.left = len(units)
        self._pump(block=False)
        return ticket

    def collect(self, ticket: int) -> list[list[bytes]]:
        """The result blobs of every node of ``ticket`` (waits for the workers)."""
        entry = self._tickets.get(ticket)
        if entry is None:
            raise GbdtMessageError(f"no histogram request {ticket} to collect")
        if entry.future is not None:
            del self._tickets[ticket]
            return entry.future.result()  # its GbdtMessageError, if any, raised here
        while entry.left:
            self._pump(block=True)
        del self._tickets[ticket]
        if entry.failure is not None:
            raise entry.failure
        if not entry.units:
            return entry.results
        out = []
        for i in range(len(entry.nodes)):
            mine = [entry.results[u] for u, unit in enumerate(entry.units) if unit.node == i]
            out.append(mine[0] if len(mine) == 1 else self.local.combine(mine))
        return out

    def _pump(self, *, block: bool) -> None:
        """Hand queued units to free workers, then take the answers that are in (waiting for
        one at least when ``block``)."""
        for w in list(self._free):
            pick = next(
                (q for q in self._queue if self._tickets[q[0]].units[q[1]].worker == w), None
            ) or next((q for q in self._queue if self._tickets[q[0]].units[q[1]].worker < 0), None)
            if pick is None:
                continue
            self._queue.remove(pick)
            self._free.remove(w)
            entry = self._tickets[pick[0]]
            unit = entry.units[pick[1]]
            blobs, rows = entry.nodes[unit.node]
            head = {
                "kind": "part",
                "rows": -1 if rows is None else int(rows.shape[0]),
                "first": unit.first,
                "chunks": self.local.node_chunks(rows),
                "zero": unit.zero,
            }
            lead = [] if rows is None else [rows.astype("<i4").tobytes()]
            self._conns[w].send_bytes(msg.encode(head, lead + blobs[unit.first : unit.end]))
            self._busy[self._conns[w]] = pick
        if not self._busy:
            return
        for ready in wait(list(self._busy), None if block else 0):
            assert isinstance(ready, Connection)
            ticket, u = self._busy.pop(ready)
            self._free.append(self._conns.index(ready))
            entry = self._tickets[ticket]
            entry.left -= 1
            try:
                head, sections = msg.decode(ready.recv_bytes(), "part")
            except EOFError:
                raise RuntimeError("a histogram worker process died") from None
            if head.get("ok") is not True:  # the others drain first: pipes stay in step
                entry.failure = GbdtMessageError(str(head.get("error", "histogram worker failed")))
            entry.results[u] = sections
