"""The second speed pass of the tree family keeps its arithmetic: directly scattered diagonals
equal their definition, the vectorised split search equals a loop over every candidate,
encryptions of zero made ahead re-randomise results that still decrypt to the histogram, and the
grower asks for the smaller child's histogram (the larger one is the parent's minus it)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from services.engine.gbdt import objectives
from services.engine.gbdt.binning import apply_bins, fit_bins
from services.engine.gbdt.centralized import PooledSource
from services.engine.gbdt.ckks import FeatureEvaluator, LabelKeys
from services.engine.gbdt.ckks_plan import HistPlan
from services.engine.gbdt.grower import grow
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.splits import (
    Candidate,
    Layout,
    best_split,
    complete,
    histogram,
    wire_codes,
    wire_slots,
)


def _codes(rng: np.random.Generator, rows: int, widths: list[int]) -> npt.NDArray[np.int64]:
    offsets = np.cumsum([0, *widths[:-1]])
    return np.stack(
        [rng.integers(0, w, rows) + o for w, o in zip(widths, offsets, strict=True)], 1
    ).astype(np.int64)


@pytest.mark.parametrize(("rows", "widths"), [(5000, [7, 33, 2, 12]), (2100, [131]), (300, [3])])
def test_diagonals_equal_their_definition(rows: int, widths: list[int]) -> None:
    rng = np.random.default_rng(rows)
    codes = _codes(rng, rows, widths)
    plan = HistPlan(rows, sum(widths))
    s = plan.slots
    for chunk in range(plan.chunks):
        for grp in plan.groups:
            part = codes[chunk * s : (chunk + 1) * s] - grp.offset
            m = np.zeros((s, grp.size))
            for r, f in zip(*np.nonzero((part >= 0) & (part < grp.size)), strict=True):
                m[r, part[r, f]] = 1.0
            for beta in (1, 2, 8):
                want = {}
                for k in range(grp.size):  # diag_k[i] = M[i + k, i mod J], rolled by g * beta
                    diag = np.array([m[(i + k) % s, i % grp.size] for i in range(s)])
                    if diag.any():
                        want[(k // beta, k % beta)] = np.roll(diag, (k // beta) * beta)
                got = plan.diagonals(codes, chunk, grp, beta)
                assert list(got) == list(want)
                for key, vec in want.items():
                    assert np.array_equal(got[key], vec)


def _loop_best(
    hist: npt.NDArray[np.float64],
    lay: Layout,
    tg: float,
    th: float,
    p: GbdtParams,
    allowed: npt.NDArray[np.bool_] | None,
) -> tuple[float, int, int, bool] | None:
    """Every candidate one by one, in layout order; a later one wins only when strictly better."""
    parent = tg * tg / (th + p.l2) if th + p.l2 > 0 else 0.0
    best: tuple[float, int, int, bool] | None = None
    for f, (off, count, miss) in enumerate(zip(lay.offsets, lay.counts, lay.missing, strict=True)):
        if count < 2 or (allowed is not None and not allowed[f]):
            continue
        for missing_left in (False, True) if miss else (False,):
            gl = hl = 0.0
            for b in range(count - 1):
                gl, hl = gl + hist[off + b, 0], hl + hist[off + b, 1]
                lg, lh = gl, hl
                if missing_left:
                    lg, lh = lg + hist[off + count, 0], lh + hist[off + count, 1]
                rg, rh = tg - lg, th - lh
                if min(lh, rh) < p.min_child_weight or min(lh, rh) + p.l2 <= 0:
                    continue
                gain = lg * lg / (lh + p.l2) + rg * rg / (rh + p.l2) - parent
                if gain > p.min_split_gain + 1e-12 and (best is None or gain > best[0]):
                    best = (gain, f, b, missing_left)
    return best


def test_vectorised_split_search_equals_a_loop_over_candidates() -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        nf = int(rng.integers(1, 8))
        lay = Layout(
            tuple(int(c) for c in rng.integers(1, 12, nf)),
            tuple(bool(m) for m in rng.random(nf) < 0.4),
        )
        w = lay.width
        hist = np.stack(
            [rng.normal(size=w) * rng.integers(0, 2, w), rng.random(w) * rng.integers(0, 3, w)], 1
        )
        if trial % 4 == 0:
            hist = np.round(hist, 1)  # ties: the first candidate in layout order must win
        p = GbdtParams.parse(
            {"min_child_weight": float(rng.choice([0.0, 0.5])), "l2": float(rng.choice([0, 1]))}
        )
        allowed = rng.random(nf) < 0.7 if trial % 3 == 0 else None
        tg, th = float(hist[:, 0].sum()) * 0.5, float(hist[:, 1].sum())
        got = best_split(hist, lay, tg, th, p, allowed)
        want = _loop_best(hist, lay, tg, th, p, allowed)
        if want is None:
            assert got is None
        else:
            assert got == Candidate(*want) or (
                got is not None
                and (got.feature, got.bin, got.missing_left) == want[1:]
                and got.gain == pytest.approx(want[0], rel=1e-12)
            )


def test_zeros_made_ahead_still_give_the_histogram() -> None:
    rng = np.random.default_rng(3)
    rows, widths = 3000, [9, 4]
    codes = _codes(rng, rows, widths)
    plan = HistPlan(rows, sum(widths))
    keys = LabelKeys(plan)
    ev = FeatureEvaluator(keys.bundle, plan, codes)
    while ev.stock_zero(cap=3):
        pass
    assert not ev.stock_zero(cap=3)
    vals = rng.uniform(-1, 1, rows) + 1j * rng.uniform(0, 1, rows)
    truth = np.zeros(plan.width, dtype=np.complex128)
    for f in range(len(widths)):
        np.add.at(truth, codes[:, f], vals)
    first = ev.evaluate(keys.encrypt(vals))  # takes one stocked zero per block
    assert ev.stock_zero(cap=3)  # the stock went down
    second = ev.evaluate(keys.encrypt(vals))
    for blobs in (first, second):
        assert np.abs(keys.decrypt(blobs) - truth).max() < 0.2
    assert first != second  # fresh randomness each time


class _Recording(PooledSource):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.asked: list[list[int]] = []

    def histograms(
        self,
        nodes: list[npt.NDArray[np.int64]],
        g: npt.NDArray[np.float64],
        h: npt.NDArray[np.float64],
    ) -> list[list[npt.NDArray[np.float64]]]:
        self.asked.append([int(rows.size) for rows in nodes])
        return super().histograms(nodes, g, h)


def test_grower_computes_the_smaller_child() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=(n, 4))
    x[:, 0] = rng.random(n) < 0.2  # a lopsided first split
    y = (x[:, 0] + 0.3 * x[:, 1] + 0.3 * rng.normal(size=n) > 0.6).astype(np.float64)
    edges = fit_bins(x, 16, 0)
    bins = apply_bins(x, edges)
    src = _Recording(bins, bins[:0], edges, 1.0, [4], [0])
    params = GbdtParams(depth=4, protection="plain")
    g, h = objectives.grad_hess(params, y, np.zeros((n, 1)))
    tree, _, _ = grow(params, src, 0, g[:, 0], h[:, 0], np.arange(n), n, 0)
    # one request per node, asked for as soon as its parent is split (splits in id order): the
    # root, then the smaller child of every split above the last level of splits
    depth = {0: 0}
    smaller = []
    for i, node in enumerate(tree.nodes):
        if node.is_leaf:
            continue
        depth[node.left] = depth[node.right] = depth[i] + 1
        if depth[i] + 1 < params.depth:
            smaller.append(min(tree.nodes[node.left].cover, tree.nodes[node.right].cover))
    assert src.asked == [[n]] + [[size] for size in smaller] and len(smaller) >= 3
    assert all(size <= n // 2 for size in smaller)


def _band_reference(
    plan: HistPlan, codes: npt.NDArray[np.int64], vals: npt.NDArray[np.complex128]
) -> npt.NDArray[np.complex128]:
    """What the banded evaluation computes, in numpy: babies, pre-rotated diagonals, giants,
    block folds."""
    band = plan.band(codes.shape[0])
    assert band is not None
    beta = min(8, band.window)
    (x,) = plan.pack(vals)
    acc = np.zeros(plan.slots, dtype=np.complex128)
    for (g, b), d in plan.band_diagonals(codes, band).items():
        acc += np.roll(np.roll(x, -b) * d, -g * beta)
    step = band.block
    while step < plan.slots:
        acc = acc + np.roll(acc, -step)
        step *= 2
    return acc


@pytest.mark.parametrize("n", [1, 9, 128, 300, 700])
def test_banded_nodes_sum_every_row_once_in_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    rows, widths = 24000, [7, 33, 2, 12, 77]
    codes = _codes(rng, rows, widths)
    plan = HistPlan(rows, sum(widths))
    assert plan.band(n) is not None and plan.results(n) == 1
    node = np.sort(rng.choice(rows, n, replace=False))
    vals = rng.uniform(-1, 1, n) + 1j * rng.uniform(0, 1, n)
    truth = np.zeros(plan.width, dtype=np.complex128)
    for f in range(len(widths)):
        np.add.at(truth, codes[node, f], vals)
    acc = _band_reference(plan, codes[node], vals)
    assert np.abs(acc[: plan.width] - truth).max() < 1e-9
    band = plan.band(n)
    assert band is not None  # every slot of a block is the whole sum of its code (no partials)
    for u in range(band.blocks):
        assert np.abs(acc[u * band.block : u * band.block + plan.width] - truth).max() < 1e-9


def test_banded_nodes_give_the_histogram_in_one_ciphertext() -> None:
    rng = np.random.default_rng(11)
    rows, widths = 24000, [7, 33, 2, 12, 77]
    codes = _codes(rng, rows, widths)
    plan = HistPlan(rows, sum(widths))
    keys = LabelKeys(plan)
    ev = FeatureEvaluator(keys.bundle, plan, codes)
    sizes = [n for n in (1, 9, 128, 129, 600, 3000) if plan.band(n)]
    assert sizes[:5] == [1, 9, 128, 129, 600] and 3000 not in sizes  # large: rectangular
    assert all(plan.compact(n) for n in sizes)  # banded nodes are compact nodes
    for n in (1, 9, 600):
        node = np.sort(rng.choice(rows, n, replace=False))
        vals = rng.uniform(-1, 1, n) + 1j * rng.uniform(0, 1, n)
        truth = np.zeros(plan.width, dtype=np.complex128)
        for f in range(len(widths)):
            np.add.at(truth, codes[node, f], vals)
        res = ev.evaluate(keys.encrypt(vals), node)
        assert len(res) == plan.results(n) == 1
        assert np.abs(keys.decrypt(res, banded=True) - truth).max() < 0.2
        with pytest.raises(Exception, match="histogram blobs"):
            keys.decrypt(res)  # a wide node's count of results is refused


def test_dropped_slots_come_back_from_the_node_total() -> None:
    rng = np.random.default_rng(4)
    lay = Layout((5, 1, 3, 32), (True, False, False, True))  # missing bins, a one-slot feature
    rows = 400
    bins = np.stack([rng.integers(0, w, rows) for w in lay.widths], axis=1).astype(np.uint16)
    g, h = rng.normal(size=rows), rng.uniform(0.1, 1, rows)
    node = np.sort(rng.choice(rows, 150, replace=False))
    full = histogram(bins, lay, node, g, h)
    wire = wire_slots(lay)
    assert wire.size == lay.width - 4
    codes = wire_codes(lay, bins)
    assert (codes >= 0).sum() < codes.size  # the dropped slots' rows are not counted
    sent = np.zeros((wire.size, 2))
    for f in range(bins.shape[1]):
        keep = codes[node, f] >= 0
        np.add.at(sent[:, 0], codes[node, f][keep], g[node][keep])
        np.add.at(sent[:, 1], codes[node, f][keep], h[node][keep])
    assert np.allclose(sent, full[wire])
    back = complete(lay, sent, (float(g[node].sum()), float(h[node].sum())))
    assert np.allclose(back, full)
