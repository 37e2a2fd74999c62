"""The label party's label privacy for one run: randomised labels and what they cost."""

from __future__ import annotations

from services.engine.dataset import LabelData
from services.engine.label_dp import PrivacySpent, randomize, rows_per_key
from services.engine.tasks import Labels
from services.protocol.errors import BadRequest
from services.protocol.messages import TrainingSpec


def private_labels(
    spec: TrainingSpec, data: LabelData, secret: bytes
) -> tuple[Labels, PrivacySpent | None]:
    """Replace ``data.labels`` by their randomised response (training and validation use them
    from now on) and answer the true labels (for the test metric only) and the cost."""
    dp = spec.protection.label_dp
    if dp.mechanism == "none":
        return data.labels, None
    try:
        noisy, spent = randomize(data.labels, data.ids, secret, dp, rows_per_key(data.handles))
    except ValueError as exc:
        raise BadRequest(f"label privacy: {exc}", detail={"field": "protection.label_dp"}) from exc
    true = data.labels
    data.labels = noisy
    return true, spent
