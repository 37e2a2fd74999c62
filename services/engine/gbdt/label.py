"""The label party's role: gradients, the choice of every split, leaf weights, the model.

It talks to each feature party only through ``send(party, kind, payload) -> bytes`` and counts
the bytes both ways. In ``ckks`` mode it generates one key set per feature party (the layout
fixes the Galois steps), sends ``g + i h`` of each node encrypted under its own key, and decrypts
only the aggregate histograms that come back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import messages as msg
from services.engine.gbdt.binning import FeatureBins, apply_bins, fit_bins
from services.engine.gbdt.ckks import LabelKeys
from services.engine.gbdt.ckks_plan import HistPlan
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.grower import Bools, Pending, Tree, sample_columns
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.splits import Candidate, Layout, complete, goes_left, histogram
from services.engine.keyed import JobKey

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]
Send = Callable[[int, str, bytes], bytes]


@dataclass
class Wire:
    """Bytes and calls per direction, and seconds spent in key generation."""

    up: int = 0
    down: int = 0
    calls: int = 0
    keygen_seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)


class VerticalSource:
    """The grower's source at the label party: its own features locally, the others remotely."""

    def __init__(
        self,
        params: GbdtParams,
        x_own: F64,
        train: I64,
        valid: I64,
        parties: int,
        send: Send,
        key: JobKey,
    ) -> None:
        self.params, self.parties, self._send = params, parties, send
        self.train, self.valid = train, valid
        self.edges: list[FeatureBins] = fit_bins(
            x_own[train], params.bins, key.seed63("gbdt", "sketch")
        )
        self.own = Layout.of(self.edges)
        bins = apply_bins(x_own, self.edges)
        self.bins, self.valid_bins = bins[train], bins[valid]
        self.col_seed = key.seed63("gbdt", "columns")
        self.row_seed = key.seed63("gbdt", "rows")
        self.own_splits: dict[str, tuple[int, int, bool]] = {}
        self.seen: dict[int, list[npt.NDArray[np.int64]]] = {}
        self.wire = Wire()
        self.remote = [self._remote_layout(p) for p in range(1, parties + 1)]
        self.keys: dict[int, LabelKeys] = {}
        if params.protection == "ckks":
            for p, lay in enumerate(self.remote, start=1):
                t = time.perf_counter()
                keys = LabelKeys(HistPlan(train.shape[0], max(1, lay.width - len(lay.widths))))
                self.wire.keygen_seconds += time.perf_counter() - t
                self.keys[p] = keys
                self.call(p, "keys", msg.encode({"kind": "keys"}, [keys.bundle]))

    def call(self, party: int, kind: str, payload: bytes) -> tuple[dict[str, object], list[bytes]]:
        """One request/response with byte accounting."""
        reply = self._send(party, kind, payload)
        self.wire.up += len(payload)
        self.wire.down += len(reply)
        self.wire.calls += 1
        self.wire.by_kind[kind] = self.wire.by_kind.get(kind, 0) + len(payload) + len(reply)
        return msg.decode(reply, kind)

    def _remote_layout(self, party: int) -> Layout:
        head, _ = self.call(party, "layout", msg.encode({"kind": "layout"}))
        counts, missing = head.get("counts"), head.get("missing")
        if (
            not isinstance(counts, list)
            or not isinstance(missing, list)
            or len(counts) != len(missing)
            or head.get("rows") != self.train.shape[0]
            or not all(isinstance(c, int) and 1 <= c <= 1024 for c in counts)
            or not all(isinstance(m, bool) for m in missing)
        ):
            raise GbdtMessageError("layout: malformed")
        return Layout(tuple(counts), tuple(missing))

    def layouts(self) -> list[Layout]:
        return [self.own, *self.remote]

    def allowed(self, tree: int) -> list[Bools]:
        rng = np.random.default_rng([self.col_seed, tree])
        out = [sample_columns(rng, len(self.own.counts), self.params.col_subsample)]
        for p in range(1, self.parties + 1):
            head, _ = self.call(p, "allowed", msg.encode({"kind": "allowed", "tree": tree}))
            mask = head.get("mask")
            if not isinstance(mask, list) or len(mask) != len(self.remote[p - 1].counts):
                raise GbdtMessageError("allowed: malformed")
            out.append(np.asarray(mask, dtype=bool))
        return out

    def submit(self, rows: I64, g: F64, h: F64) -> Pending:
        """Ask every feature party for one node's histograms; the callable collects them. In
        ``ckks`` mode the node goes out encrypted at once (``submit``) and the feature party
        computes while the label party goes on; ``collect`` takes the aggregates back."""
        own = histogram(self.bins, self.own, rows, g, h)
        if self.params.protection == "plain":
            hists = [own, *(self._plain(p, rows, g, h) for p in range(1, self.parties + 1))]
            return lambda: hists
        asked = [self._submit(p, rows, g, h) for p in range(1, self.parties + 1)]
        return lambda: [own, *(self._collect(p, rows, g, h, *a) for p, a in enumerate(asked, 1))]

    def _plain(self, p: int, rows: I64, g: F64, h: F64) -> F64:
        keep = np.zeros(self.train.shape[0])
        keep[rows] = 1.0
        head = {"kind": "histograms", "mode": "plain", "nodes": 1}
        _, back = self.call(
            p, "histograms", msg.encode(head, [(g * keep).tobytes(), (h * keep).tobytes()])
        )
        if len(back) != 1:
            raise GbdtMessageError("histograms: one per node expected")
        return msg.floats(back[0], (self.remote[p - 1].width, 2), "histogram")

    def _submit(self, p: int, rows: I64, g: F64, h: F64) -> tuple[int, float, float]:
        keys, n = self.keys[p], self.train.shape[0]
        sg = max(float(np.abs(g[rows]).max(initial=0.0)), 1e-300)
        sh = max(float(np.abs(h[rows]).max(initial=0.0)), 1e-300)
        compact = keys.plan.compact(rows.shape[0])
        if compact:
            vals = g[rows] / sg + 1j * (h[rows] / sh)
            lead = [rows.astype("<i4").tobytes()]
        else:
            vals = np.zeros(n, dtype=np.complex128)
            vals[rows] = g[rows] / sg + 1j * (h[rows] / sh)
            lead = []
        cts = keys.encrypt(vals)
        shapes = [[int(rows.shape[0]) if compact else -1, len(cts)]]
        head = {"kind": "submit", "mode": "ckks", "nodes": 1, "shapes": shapes}
        reply, _ = self.call(p, "submit", msg.encode(head, lead + cts))
        ticket = reply.get("ticket")
        if not isinstance(ticket, int) or isinstance(ticket, bool):
            raise GbdtMessageError("submit: malformed reply")
        return ticket, sg, sh

    def _collect(self, p: int, rows: I64, g: F64, h: F64, ticket: int, sg: float, sh: float) -> F64:
        keys = self.keys[p]
        _, back = self.call(p, "collect", msg.encode({"kind": "collect", "ticket": ticket}))
        banded = keys.plan.compact(rows.shape[0]) and keys.plan.band(rows.shape[0]) is not None
        if len(back) != (1 if banded else len(keys.plan.groups)):
            raise GbdtMessageError("histograms: wrong number of result ciphertexts")
        y = keys.decrypt(back, banded)
        sent = np.stack([y.real * sg, y.imag * sh], axis=1)
        total = (float(np.sum(g[rows])), float(np.sum(h[rows])))
        return complete(self.remote[p - 1], sent, total)

    def split(
        self, party: int, cand: Candidate, train: Bools, valid: Bools
    ) -> tuple[str, Bools, Bools]:
        """Apply a candidate. A feature party is told the node's rows (training and
        validation) and answers left bits for those rows only (as SecureBoost's hosts do): the
        label party never learns a party's split on rows outside the node."""
        if party == 0:
            ref = secrets.token_hex(8)
            self.own_splits[ref] = (cand.feature, cand.bin, cand.missing_left)
            e = self.edges[cand.feature]
            return (
                ref,
                goes_left(self.bins[:, cand.feature], e, cand.bin, cand.missing_left),
                goes_left(self.valid_bins[:, cand.feature], e, cand.bin, cand.missing_left),
            )
        head = {
            "kind": "split",
            "feature": cand.feature,
            "bin": cand.bin,
            "missing_left": cand.missing_left,
        }
        masks = [np.packbits(train).tobytes(), np.packbits(valid).tobytes()]
        reply, sections = self.call(party, "split", msg.encode(head, masks))
        token = reply.get("ref")
        if not isinstance(token, str) or len(sections) != 2:
            raise GbdtMessageError("split: malformed reply")
        left = np.zeros(train.shape[0], dtype=bool)
        left[train] = msg.bits(sections[0], int(train.sum()), "left bits")
        left_v = np.zeros(valid.shape[0], dtype=bool)
        left_v[valid] = msg.bits(sections[1], int(valid.sum()), "left bits")
        self.seen.setdefault(party, []).append(np.where(train, np.where(left, 1, 2), 0))
        return (token, left, left_v)

    def own_bits(self, refs: list[str], x_own: F64) -> dict[str, Bools]:
        """Left bits of the label party's own splits for prediction rows."""
        xb = apply_bins(x_own, self.edges)
        out = {}
        for ref in refs:
            f, b, left = self.own_splits[ref]
            out[ref] = goes_left(xb[:, f], self.edges[f], b, left)
        return out


def route(trees: list[Tree], bits: dict[tuple[int, str], Bools], rows: int) -> F64:
    """Sum of tree outputs for ``rows`` prediction rows given every split's left bits."""
    total = np.zeros(rows)
    for tree in trees:
        at = np.zeros(rows, dtype=np.int64)
        for _ in range(len(tree.nodes)):
            weights = np.array([n.weight for n in tree.nodes])
            leaf = np.array([n.is_leaf for n in tree.nodes])
            if leaf[at].all():
                total += weights[at]
                break
            nxt = at.copy()
            for i, node in enumerate(tree.nodes):
                sel = (at == i) & ~leaf[at]
                if node.is_leaf or not sel.any():
                    continue
                go = bits[(node.party, node.ref)][sel]
                nxt[sel] = np.where(go, node.left, node.right)
            at = nxt
    return total
