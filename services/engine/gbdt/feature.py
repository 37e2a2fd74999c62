"""The feature party's role: bins its own columns, answers histogram and split requests, keeps
every threshold, and resolves its own splits for prediction rows.

Only message bytes go in and out (:meth:`FeatureParty.handle`). What it sends: its layout (bins
per feature, in a private random order), encrypted (or, in plain mode, plain) histograms, an
opaque reference per split with left bits of the training and validation rows, and left bits of
its own splits for prediction rows. It never sends a feature value, an edge or a threshold.
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import messages as msg
from services.engine.gbdt.binning import apply_bins, fit_bins
from services.engine.gbdt.ckks_plan import HistPlan
from services.engine.gbdt.ckks_pool import EvaluatorPool, default_workers
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.grower import sample_columns
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.splits import Layout, goes_left, histogram, wire_codes
from services.engine.keyed import JobKey

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MIN_POOL_CHUNKS = 4
"""Jobs of fewer ciphertexts per upload evaluate in process unless ``workers`` says otherwise."""


class FeatureParty:
    """One feature party for one job. ``x`` is its table aligned to the job's rows; ``train``
    and ``valid`` index it; ``key`` (its private job key) feeds its private randomness: the
    order in which it announces its features and its column sampling."""

    def __init__(
        self,
        params: GbdtParams,
        x: F64,
        train: I64,
        valid: I64,
        key: JobKey,
        order: I64 | None = None,
        workers: int | None = None,
        background: bool = False,
        spawn: bool = False,
    ) -> None:
        seed = key.seed63("gbdt", "order")
        rng = np.random.default_rng(seed)
        self.params, self.train, self.valid = params, train, valid
        self.order = rng.permutation(x.shape[1]) if order is None else order
        self.x = x[:, self.order]
        self.edges = fit_bins(self.x[train], params.bins, seed)
        self.layout = Layout.of(self.edges)
        self.bins = apply_bins(self.x, self.edges)
        self.train_bins = self.bins[train]
        self.col_seed = key.seed63("gbdt", "columns")
        self.splits: dict[str, tuple[int, int, bool]] = {}
        self.plan = HistPlan(train.shape[0], max(1, self.layout.width - len(self.layout.widths)))
        # small jobs: forking workers costs more than it saves
        small = self.plan.chunks < MIN_POOL_CHUNKS
        self.workers = default_workers(small) if workers is None else workers
        self.evaluator: EvaluatorPool | None = None
        self.background, self.spawn = background, spawn
        """Evaluate in process in the background thread (a party service: ``submit`` answers at
        once, :class:`services.engine.gbdt.ckks_pool.EvaluatorPool`)."""

    def close(self) -> None:
        """End this party's histogram workers (training done; prediction needs none)."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    def checkpoint(self) -> bytes:
        """What this party must keep to resume the job: its split table (everything else is
        derived again from its table and job key)."""
        splits = {ref: [f, b, left] for ref, (f, b, left) in self.splits.items()}
        return msg.encode({"kind": "feature_checkpoint", "splits": splits})

    def restore(self, blob: bytes) -> None:
        """Take back the split table of :meth:`checkpoint`."""
        head, _ = msg.decode(blob, "feature_checkpoint")
        splits = head.get("splits")
        if not isinstance(splits, dict):
            raise GbdtMessageError("feature checkpoint: malformed split table")
        table: dict[str, tuple[int, int, bool]] = {}
        for ref, entry in splits.items():
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not isinstance(entry[0], int)
                or not 0 <= entry[0] < len(self.edges)
                or not isinstance(entry[1], int)
                or not isinstance(entry[2], bool)
            ):
                raise GbdtMessageError("feature checkpoint: malformed split")
            table[str(ref)] = (entry[0], entry[1], entry[2])
        self.splits = table

    def handle(self, kind: str, payload: bytes) -> bytes:
        """Answer one request (the wire entry point)."""
        handlers = {
            "layout": self._layout,
            "keys": self._keys,
            "allowed": self._allowed,
            "histograms": self._histograms,
            "submit": self._submit,
            "collect": self._collect,
            "split": self._split,
            "resolve": self._resolve,
        }
        if kind not in handlers:
            raise GbdtMessageError(f"unknown request {kind!r}")
        return handlers[kind](payload)

    def _layout(self, payload: bytes) -> bytes:
        msg.decode(payload, "layout")
        lay = self.layout
        return msg.encode(
            {
                "kind": "layout",
                "counts": list(lay.counts),
                "missing": list(lay.missing),
                "rows": int(self.train.shape[0]),
            }
        )

    def _keys(self, payload: bytes) -> bytes:
        _, sections = msg.decode(payload, "keys")
        if len(sections) != 1:
            raise GbdtMessageError("keys: one bundle expected")
        codes = wire_codes(self.layout, self.train_bins)
        if self.evaluator is not None:
            self.evaluator.close()
        self.evaluator = EvaluatorPool(
            sections[0],
            self.plan,
            codes,
            self.workers,
            background=self.background,
            spawn=self.spawn,
        )
        return msg.encode({"kind": "keys", "ready": True})

    def _allowed(self, payload: bytes) -> bytes:
        head, _ = msg.decode(payload, "allowed")
        tree = msg.field(head, "tree", int, "allowed")
        rng = np.random.default_rng([self.col_seed, tree])
        mask = sample_columns(rng, self.x.shape[1], self.params.col_subsample)
        return msg.encode({"kind": "allowed", "mask": [bool(v) for v in mask]})

    def _histograms(self, payload: bytes) -> bytes:
        head, sections = msg.decode(payload, "histograms")
        mode = msg.field(head, "mode", str, "histograms")
        nodes = msg.field(head, "nodes", int, "histograms")
        n = self.train.shape[0]
        if mode == "plain":
            if len(sections) != 2 * nodes:
                raise GbdtMessageError("histograms: two vectors per node expected")
            out = []
            for i in range(nodes):
                g = msg.floats(sections[2 * i], (n,), "gradients")
                h = msg.floats(sections[2 * i + 1], (n,), "hessians")
                live = np.flatnonzero((g != 0.0) | (h != 0.0))  # zero rows add nothing
                out.append(histogram(self.train_bins, self.layout, live, g, h).tobytes())
            return msg.encode({"kind": "histograms", "mode": "plain", "nodes": nodes}, out)
        if mode != "ckks":
            raise GbdtMessageError(f"histograms: unknown mode {mode!r}")
        done = self._evaluator().evaluate(self._nodes(head, sections))
        res = [blob for node in done for blob in node]
        return msg.encode({"kind": "histograms", "mode": "ckks", "nodes": nodes}, res)

    def _submit(self, payload: bytes) -> bytes:
        """Encrypted nodes handed to the workers; answered at once with a ticket (``collect``
        takes the histograms), so the label party goes on while they compute."""
        head, sections = msg.decode(payload, "submit")
        if msg.field(head, "mode", str, "submit") != "ckks":
            raise GbdtMessageError("submit: ckks requests only")
        ticket = self._evaluator().submit(self._nodes(head, sections))
        return msg.encode({"kind": "submit", "ticket": ticket})

    def _collect(self, payload: bytes) -> bytes:
        head, _ = msg.decode(payload, "collect")
        ticket = msg.field(head, "ticket", int, "collect")
        done = self._evaluator().collect(ticket)
        res = [blob for node in done for blob in node]
        return msg.encode({"kind": "collect", "mode": "ckks", "nodes": len(done)}, res)

    def _evaluator(self) -> EvaluatorPool:
        if self.evaluator is None:
            raise GbdtMessageError("histograms: ckks requests need keys first")
        return self.evaluator

    def _nodes(
        self, head: dict[str, object], sections: list[bytes]
    ) -> list[tuple[list[bytes], I64 | None]]:
        """The ``(chunk ciphertexts, compact rows or None)`` of a ckks request, checked."""
        nodes = msg.field(head, "nodes", int, "histograms")
        shapes = head.get("shapes")
        if not isinstance(shapes, list) or len(shapes) != nodes:
            raise GbdtMessageError("histograms: one shape per node expected")
        todo: list[tuple[list[bytes], I64 | None]] = []
        pos, n = 0, self.train.shape[0]
        for shape in shapes:
            if (
                not isinstance(shape, list)
                or len(shape) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
                or not 0 < shape[1] <= self.plan.chunks
                or not -1 <= shape[0] <= n
            ):
                raise GbdtMessageError("histograms: malformed node shape")
            rows: I64 | None = None
            if shape[0] >= 0:
                if pos >= len(sections) or len(sections[pos]) != 4 * shape[0]:
                    raise GbdtMessageError("histograms: malformed row list")
                rows = np.frombuffer(sections[pos], dtype="<i4").astype(np.int64)
                pos += 1
                if rows.size and (rows.min() < 0 or rows.max() >= n):
                    raise GbdtMessageError("histograms: row index out of range")
            if pos + shape[1] > len(sections):
                raise GbdtMessageError("histograms: truncated ciphertext list")
            todo.append((sections[pos : pos + shape[1]], rows))
            pos += shape[1]
        if pos != len(sections):
            raise GbdtMessageError("histograms: trailing sections")
        return todo

    def _split(self, payload: bytes) -> bytes:
        head, masks = msg.decode(payload, "split")
        if len(masks) != 2:
            raise GbdtMessageError("split: the node's training and validation rows expected")
        node = msg.bits(masks[0], self.train.shape[0], "node rows")
        node_v = msg.bits(masks[1], self.valid.shape[0], "node rows")
        f = msg.field(head, "feature", int, "split")
        b = msg.field(head, "bin", int, "split")
        left = msg.field(head, "missing_left", bool, "split")
        if not (0 <= f < len(self.edges) and 0 <= b < self.edges[f].count - 1):
            raise GbdtMessageError("split: no such candidate")
        ref = secrets.token_hex(8)
        self.splits[ref] = (f, b, left)
        e = self.edges[f]
        tl = goes_left(self.train_bins[node, f], e, b, left)
        vl = goes_left(self.bins[self.valid[node_v], f], e, b, left)
        return msg.encode(
            {"kind": "split", "ref": ref}, [np.packbits(tl).tobytes(), np.packbits(vl).tobytes()]
        )

    def resolve_rows(self, refs: list[str], x: F64) -> bytes:
        """Left bits of its splits ``refs`` for prediction rows ``x`` (its own columns, in its
        original order): one packed bit row per reference."""
        xb = apply_bins(x[:, self.order], self.edges)
        out = []
        for ref in refs:
            if ref not in self.splits:
                raise GbdtMessageError("resolve: unknown split reference")
            f, b, left = self.splits[ref]
            out.append(np.packbits(goes_left(xb[:, f], self.edges[f], b, left)).tobytes())
        return msg.encode({"kind": "resolve", "rows": int(x.shape[0])}, out)

    def _resolve(self, payload: bytes) -> bytes:
        head, _ = msg.decode(payload, "resolve")
        refs = head.get("refs")
        rows = head.get("rows")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise GbdtMessageError("resolve: refs must be a list of strings")
        if not isinstance(rows, list) or not all(
            isinstance(r, int) and 0 <= r < self.x.shape[0] for r in rows
        ):
            raise GbdtMessageError("resolve: rows must be indices of this party's table")
        return self.resolve_rows(
            refs, self.x[np.asarray(rows, dtype=np.int64)][:, np.argsort(self.order)]
        )
