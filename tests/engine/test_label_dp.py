"""Randomised response on the label party's labels (issue 16): the mechanism's rates, keyed
determinism, group privacy for a key unit, and a job that reports what it spent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.engine.label_dp import keep_probability, randomize, row_epsilon, rows_per_key
from services.engine.tasks import Labels
from services.protocol.messages import JobState, LabelDpSpec, Task
from tests.conftest import InProcess
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.synthetic import Vertical

RR = LabelDpSpec(mechanism="randomized_response", epsilon=1.0)


def labels(n: int, k: int = 2, seed: int = 0) -> Labels:
    values = np.random.default_rng(seed).integers(0, k, n)
    task = Task.BINARY if k == 2 else Task.MULTICLASS
    return Labels(task, values.astype(np.int64), [str(c) for c in range(k)])


@pytest.mark.parametrize("k", [2, 4])
def test_randomised_response_keeps_each_label_at_the_dp_rate(k: int) -> None:
    n = 40_000
    y = labels(n, k)
    ids = [f"B{i}" for i in range(n)]
    noisy, spent = randomize(y, ids, b"s" * 32, RR, 1)
    keep = math.e / (math.e + k - 1)
    assert spent.keep_probability == pytest.approx(keep)
    kept = noisy.values == y.values
    assert abs(kept.mean() - keep) < 4 * math.sqrt(keep * (1 - keep) / n)
    # every other class equally likely: the ratio of any two outcomes' probabilities is e^eps
    for c in range(k):
        moved = noisy.values[(y.values == c) & ~kept]
        counts = np.bincount(moved, minlength=k)
        assert counts[c] == 0
        others = counts[np.arange(k) != c]
        assert others.max() - others.min() < 5 * math.sqrt(others.mean())
    assert spent.changed == int((~kept).sum()) and noisy.classes == y.classes


def test_the_same_secret_and_row_give_the_same_label_and_another_secret_does_not() -> None:
    y = labels(5000)
    ids = [f"B{i}" for i in range(5000)]
    a, _ = randomize(y, ids, b"a" * 32, RR, 1)
    again, _ = randomize(y, ids, b"a" * 32, RR, 1)
    other, _ = randomize(y, ids, b"b" * 32, RR, 1)
    assert np.array_equal(a.values, again.values)  # a retraining of the contract: no new cost
    assert not np.array_equal(a.values, other.values)
    # a row's outcome depends on its id, not on its position among the others
    shuffled = list(reversed(range(5000)))
    moved = Labels(y.task, y.values[shuffled], y.classes)
    b, _ = randomize(moved, [ids[i] for i in shuffled], b"a" * 32, RR, 1)
    assert np.array_equal(b.values, a.values[shuffled])


def test_a_key_unit_divides_the_budget_by_the_largest_group() -> None:
    handles = {"paste": np.array([0, 0, 0, 1, 2, 2, 0]), "other": np.array([5, 5, 6, 7, 8, 9, 10])}
    assert rows_per_key(handles) == 4
    spec = LabelDpSpec(mechanism="randomized_response", epsilon=8.0, unit="key")
    assert row_epsilon(spec, 4) == 2.0
    assert row_epsilon(spec.model_copy(update={"unit": "row"}), 4) == 8.0
    assert keep_probability(2.0, 2) == pytest.approx(math.e**2 / (math.e**2 + 1))


def test_regression_labels_are_refused() -> None:
    y = Labels(Task.REGRESSION, np.zeros(3, dtype=np.float32), [])
    with pytest.raises(ValueError, match="regression"):
        randomize(y, ["a", "b", "c"], b"k" * 32, RR, 1)


async def test_a_job_trains_on_randomised_labels_and_reports_its_budget(
    vertical: Vertical, in_process: InProcess
) -> None:
    client = in_process(vertical)
    spec = protected(vertical, "plain", epochs=2)
    dp = {"mechanism": "randomized_response", "epsilon": 2.0, "unit": "key"}
    prot = spec.protection.model_validate({**spec.protection.model_dump(), "label_dp": dp})
    status = await train(client, spec.model_copy(update={"protection": prot}))
    assert status.state is JobState.FINISHED, status.error
    spent = status.label_privacy
    assert spent["mechanism"] == "randomized_response" and spent["unit"] == "key"
    assert spent["epsilon"] == 2.0 and spent["delta"] == 0.0
    assert isinstance(spent["rows_per_key"], int) and spent["rows_per_key"] > 1
    assert spent["row_epsilon"] == pytest.approx(2.0 / spent["rows_per_key"])
    # the test metric is measured on the true labels: with almost every label randomised
    # (row epsilon ~0.1) the model is near chance there
    assert 0.3 < status.test["auc"] < 0.7
