"""The feature party's histogram workers (forked, or started as subprocesses): same histograms
as one process, split nodes included, a padded last block of histogram slots, and a defect
reported without desynchronising them."""

from __future__ import annotations

import numpy as np
import pytest

from services.engine.gbdt import ckks_pool
from services.engine.gbdt.ckks import FeatureEvaluator, LabelKeys
from services.engine.gbdt.ckks_plan import Group, HistPlan
from services.engine.gbdt.ckks_pool import EvaluatorPool
from services.engine.gbdt.errors import GbdtMessageError


def _truth(codes: np.ndarray, rows: np.ndarray, vals: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.complex128)
    for f in range(codes.shape[1]):
        np.add.at(out, codes[rows, f], vals)
    return out


@pytest.mark.parametrize(("owned", "spawn"), [(False, False), (True, False), (False, True)])
def test_pool_matches_numpy_for_split_and_many_nodes(
    owned: bool, spawn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spawn: workers started as subprocesses (a party service's), not forked
    # owned: diagonals "too big to copy", so each worker keeps (and evaluates) its chunk range
    monkeypatch.setattr(ckks_pool, "CACHE_BYTES", 0 if owned else 1 << 30)
    rng = np.random.default_rng(3)
    rows, widths = 9000, [40, 33, 50, 10]  # width 133: blocks of 128 and a padded 8
    offsets = np.cumsum([0, *widths[:-1]])
    codes = np.stack(
        [rng.integers(0, w, rows) + o for w, o in zip(widths, offsets, strict=True)], 1
    )
    plan = HistPlan(rows, sum(widths))
    assert plan.groups == (Group(0, 128), Group(128, 8))
    keys = LabelKeys(plan)
    pool = EvaluatorPool(keys.bundle, plan, codes, workers=2, spawn=spawn)
    assert pool._owned is owned  # noqa: SLF001
    try:
        nodes, truths = [], []
        for size, compact in ((rows, False), (1500, True), (3100, True), (2500, False)):
            node = np.sort(rng.choice(rows, size, replace=False))
            vals = rng.uniform(-1, 1, size) + 1j * rng.uniform(0, 1, size)
            truths.append(_truth(codes, node, vals, plan.width))
            if compact:
                nodes.append((keys.encrypt(vals), node))
            else:
                full = np.zeros(rows, dtype=np.complex128)
                full[node] = vals
                nodes.append((keys.encrypt(full), None))
        # one node alone is split over both workers (partials added); four go to both workers
        alone = keys.decrypt(pool.evaluate(nodes[:1])[0])
        assert np.abs(alone - truths[0]).max() < 0.5
        assert np.abs(truths[0]).max() > 100  # a lost chunk or block would be off by far more
        for got, want in zip(pool.evaluate(nodes), truths, strict=True):
            assert np.abs(keys.decrypt(got) - want).max() < 0.5
        single = FeatureEvaluator(keys.bundle, plan, codes)
        assert np.abs(keys.decrypt(single.evaluate(*nodes[1])) - truths[1]).max() < 0.5
        broken = [bytes(len(nodes[1][0][0]))]
        with pytest.raises(GbdtMessageError):
            pool.evaluate([(broken, nodes[1][1]), nodes[2]])
        again = pool.evaluate(nodes[2:3])[0]  # the workers are still in step
        assert np.abs(keys.decrypt(again) - truths[2]).max() < 0.5
        # submit/collect: each node handed out as it comes, collected in any order, once
        tickets = [pool.submit([node]) for node in nodes]
        for ticket, want in reversed(list(zip(tickets, truths, strict=True))):
            assert np.abs(keys.decrypt(pool.collect(ticket)[0]) - want).max() < 0.5
        with pytest.raises(GbdtMessageError, match="no histogram request"):
            pool.collect(tickets[0])
        monkeypatch.setattr(ckks_pool, "MAX_TICKETS", 1)
        held = pool.submit(nodes[1:2])
        with pytest.raises(GbdtMessageError, match="not collected"):
            pool.submit(nodes[2:3])  # refused, nothing queued
        assert np.abs(keys.decrypt(pool.collect(held)[0]) - truths[1]).max() < 0.5
        assert not pool._queue and not pool._busy  # noqa: SLF001
    finally:
        pool.close()


def test_background_thread_answers_submit_and_reports_defects_on_collect() -> None:
    rng = np.random.default_rng(4)
    rows, widths = 3000, [12, 7]
    codes = np.stack([rng.integers(0, widths[0], rows), rng.integers(0, widths[1], rows) + 12], 1)
    plan = HistPlan(rows, sum(widths))
    keys = LabelKeys(plan)
    pool = EvaluatorPool(keys.bundle, plan, codes, workers=1, background=True)
    nodes, truths = [], []
    for size in (rows, 800):
        node = np.sort(rng.choice(rows, size, replace=False))
        vals = rng.uniform(-1, 1, size) + 1j * rng.uniform(0, 1, size)
        full = np.zeros(rows, dtype=np.complex128)
        full[node] = vals
        nodes.append((keys.encrypt(full), None))
        truths.append(_truth(codes, node, vals, plan.width))
    tickets = [pool.submit([node]) for node in nodes]
    broken = pool.submit([([bytes(len(nodes[0][0][0]))] * plan.chunks, None)])  # accepted...
    for ticket, want in reversed(list(zip(tickets, truths, strict=True))):
        assert np.abs(keys.decrypt(pool.collect(ticket)[0]) - want).max() < 0.5
    with pytest.raises(GbdtMessageError):
        pool.collect(broken)  # ...and refused when collected
    again = pool.evaluate(nodes[1:])[0]  # the thread goes on serving
    assert np.abs(keys.decrypt(again) - truths[1]).max() < 0.5
    pool.close()
