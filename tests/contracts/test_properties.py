"""Property tests over whole contracts: share sets, floors and the digest."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import contract_digest, parse_contract, validate_contract
from tests.contracts.util import PCB, STENCIL, assert_error, document, errors_of

SCALE = 10**6  # shares with up to six decimal places, as integers
PAYEES = ["pcb", "paste", "oem"]


def _pct(micro: int) -> str:
    return format(Decimal(micro).scaleb(-6), "f")


@st.composite
def share_sets(draw: st.DrawFn) -> dict[str, int]:
    """Random fixed shares (in millionths of a percent) over a non-empty subset of payees."""
    names = draw(st.lists(st.sampled_from(PAYEES), min_size=1, max_size=3, unique=True))
    cuts = sorted(
        draw(
            st.lists(st.integers(0, 100 * SCALE), min_size=len(names) - 1, max_size=len(names) - 1)
        )
    )
    bounds = [0, *cuts, 100 * SCALE]
    return {n: bounds[i + 1] - bounds[i] for i, n in enumerate(names)}


def _with_shares(shares: dict[str, str]) -> dict[str, Any]:
    doc = document()
    doc["commercial"]["revenue_share"]["shares"] = shares
    return doc


@given(share_sets())
def test_shares_summing_to_100_are_accepted(shares: dict[str, int]) -> None:
    contract = validate_contract(_with_shares({n: _pct(v) for n, v in shares.items()}))
    assert contract.commercial.payees == list(shares)


@given(share_sets(), st.integers(-5 * SCALE, 5 * SCALE).filter(lambda d: d != 0), st.data())
def test_perturbed_shares_are_rejected(
    shares: dict[str, int], delta: int, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(shares)))
    shares[name] = max(0, shares[name] + delta)
    if sum(shares.values()) == 100 * SCALE:
        return  # clamped back to a valid set
    errors = errors_of(_with_shares({n: _pct(v) for n, v in shares.items()}))
    if shares[name] > 100 * SCALE:
        assert_error(errors, f"commercial.revenue_share.shares.{name}", "at most 100")
    else:
        assert_error(errors, "commercial.revenue_share.shares", "not exactly 100")


@given(st.lists(st.integers(0, 40 * SCALE), min_size=4, max_size=4))
def test_floors_accepted_iff_at_most_100(values: list[int]) -> None:
    doc = document(STENCIL)
    doc["commercial"]["revenue_share"]["floors"] = {
        n: _pct(v) for n, v in zip(["pcb", "paste", "stencil", "oem"], values, strict=True)
    }
    if sum(values) <= 100 * SCALE:
        validate_contract(doc)
    else:
        assert_error(errors_of(doc), "commercial.revenue_share.floors", "more than 100")


def _shuffled(node: Any, rng: random.Random) -> Any:
    """The same document with every mapping's keys in a random order."""
    if isinstance(node, dict):
        keys = list(node)
        rng.shuffle(keys)
        return {k: _shuffled(node[k], rng) for k in keys}
    if isinstance(node, list):
        return [_shuffled(v, rng) for v in node]
    return node


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from([PCB, STENCIL]))
def test_digest_is_stable_under_key_reordering(seed: int, path: Any) -> None:
    doc = document(path)
    shuffled = _shuffled(doc, random.Random(seed))
    assert shuffled == doc  # same content (dict equality ignores order)
    assert contract_digest(validate_contract(shuffled)) == contract_digest(validate_contract(doc))


@settings(deadline=None)  # two YAML parses: slow on a loaded machine, not a regression
@given(st.sampled_from(["0.04", "0.06", "0.10", "1"]))
def test_digest_changes_when_a_term_changes(price: str) -> None:
    text = PCB.read_text(encoding="utf-8")
    changed = parse_contract(text.replace('amount: "0.05"', f'amount: "{price}"'))
    assert contract_digest(changed) != contract_digest(parse_contract(text))


def test_digest_ignores_formatting_and_defaults_spelled_out() -> None:
    text = PCB.read_text(encoding="utf-8")
    spelled = text.replace(
        "    pcb: {hidden: [128], out: 32, activation: gelu, dropout: 0.2}",
        "    pcb: {hidden: [128], out: 32, activation: gelu, dropout: 0.2, batch_norm: false}",
    )
    assert spelled != text
    assert contract_digest(parse_contract(spelled)) == contract_digest(parse_contract(text))
