"""A contract's monitoring thresholds and retraining policy (issue 18)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from contracts import ContractValidationError, validate_contract
from tests.contracts.util import PCB


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(PCB.read_text())
    return doc


def test_defaults_and_stated_terms() -> None:
    doc = _doc()
    del doc["training"]["retraining"]  # the example states one (the demo retrains under it)
    plain = validate_contract(doc)
    assert plain.training.retraining is None
    stated = validate_contract(_doc()).training.retraining
    assert stated is not None and stated.on_alert and stated.epochs == 6
    assert (stated.batch_size, stated.lr_factor) == (64, 0.2)
    assert plain.monitoring.max_feature_psi == 0.25 and plain.monitoring.min_live_metric is None
    doc = _doc()
    doc["training"]["retraining"] = {"on_alert": True, "cadence_days": 30}
    doc["monitoring"] = {"window": 200, "min_live_metric": 0.7, "max_feature_psi": 0.2}
    c = validate_contract(doc)
    assert c.training.retraining is not None and c.training.retraining.cadence_days == 30
    assert (c.monitoring.window, c.monitoring.min_live_metric) == (200, 0.7)


@pytest.mark.parametrize(
    ("section", "bad"),
    [
        ("monitoring", {"window": 5}),
        ("monitoring", {"max_feature_psi": 0}),
        ("monitoring", {"min_live_metric": 2.0}),
        ("monitoring", {"alert_webhook": "x"}),
        ("retraining", {"cadence_days": 0}),
        ("retraining", {"on_alert": "sometimes"}),
        ("retraining", {"batch_size": 0}),
        ("retraining", {"batch_size": 4}),
        ("retraining", {"batch_size": 10**6}),
        ("retraining", {"batch_size": 64.5}),
        ("retraining", {"lr_factor": 0}),
        ("retraining", {"lr_factor": 1.5}),
        ("retraining", {"lr_factor": "slow"}),
    ],
)
def test_bad_terms_are_refused(section: str, bad: dict[str, Any]) -> None:
    doc = _doc()
    if section == "retraining":
        doc["training"]["retraining"] = bad
    else:
        doc[section] = bad
    with pytest.raises(ContractValidationError):
        validate_contract(doc)
