"""Exact Shapley values and leave-one-out over parties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.engine import contribution


def test_additive_game_gives_each_party_its_own_value() -> None:
    own = {"a": 0.1, "b": 0.25, "c": -0.05}
    values = contribution.coalition_values(list(own), lambda s: sum(own[p] for p in s))
    assert contribution.shapley(list(own), values) == pytest.approx(own)
    assert contribution.leave_one_out(list(own), values) == pytest.approx(own)


def test_complements_split_their_joint_value_evenly() -> None:
    # a and b only help together (xor-like signal): Shapley splits, leave-one-out double counts
    values = contribution.coalition_values(["a", "b"], lambda s: 0.3 if len(s) == 2 else 0.0)
    assert contribution.shapley(["a", "b"], values) == pytest.approx({"a": 0.15, "b": 0.15})
    assert contribution.leave_one_out(["a", "b"], values) == pytest.approx({"a": 0.3, "b": 0.3})


@given(st.lists(st.floats(-1, 1), min_size=8, max_size=8), st.integers(1, 3))
def test_efficiency_and_symmetry(noise: list[float], n: int) -> None:
    parties = [f"p{i}" for i in range(n)]
    table = {frozenset(): 0.0}

    def value(s: frozenset[str]) -> float:
        return table.setdefault(s, noise[len(table) % 8])

    values = contribution.coalition_values(parties, value)
    phi = contribution.shapley(parties, values)
    assert sum(phi.values()) == pytest.approx(values[frozenset(parties)] - values[frozenset()])


def test_too_many_parties_is_refused() -> None:
    with pytest.raises(ValueError):
        contribution.coalition_values([str(i) for i in range(9)], lambda s: 0.0)
