"""Small contracts for the end-to-end tests: the example's parties and columns, a model that
trains in seconds."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.cli.demo import CONTRACT
from services.protocol.messages import ProtectionMode


def small_contract(
    directory: Path,
    *,
    mode: ProtectionMode = "plain",
    epochs: int = 2,
    hidden: int = 16,
    width: int = 8,
    batch_size: int = 128,
) -> Path:
    """The example contract fixing a small model (``hidden`` units, cut ``width``), ``epochs``
    epochs in batches of ``batch_size``, and a ``mode`` cut layer; its path."""
    doc = yaml.safe_load(CONTRACT.read_text())
    doc["model"] = {
        "family": "nn",
        "bottom": {n: {"hidden": [hidden], "out": width} for n in ("pcb", "paste")},
        "optimizer": {"name": "adam", "lr": 0.01},
    }
    doc["training"] = {
        **doc["training"],
        "max_epochs": epochs,
        "batch_size": batch_size,
        "patience": 5,
    }
    if mode == "plain":
        doc["protection"] = {"scheme": "plain"}
    path = directory / f"contract-small-{mode}-{epochs}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
