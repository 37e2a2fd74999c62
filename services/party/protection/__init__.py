"""Protection of the cut layer as a plug-in: one module per mode, registered here once.

Each mode implements :class:`FeatureProtection` (the feature party's side) and
:class:`LabelLink` (the label party's side) and is registered in :data:`MODES` under its
``ProtectionSpec.mode`` name. The party service (services/party/state.py, segment.py) and the
trainer (services/party/training/driver.py) call only :func:`feature_protection` and
:func:`connect`; a new mode is a new module here, an entry in ``MODES`` and its name in
``messages.ProtectionMode`` (docs/architecture.md, "Adding a protection mode").
"""

from __future__ import annotations

from collections.abc import Callable

from services.engine import he
from services.engine.interactive import F64
from services.engine.keyed import JobKey
from services.party.protection.base import FeatureProtection, KeyMismatch, LabelLink
from services.party.protection.ckks import CkksFeature, CkksLink, he_failure, he_params
from services.party.protection.plain import PlainFeature, PlainLink
from services.protocol.errors import PeerError
from services.protocol.messages import PreparedJob, PrepareJob, TrainingSpec
from services.protocol.peers import SegmentClient

MODES: dict[str, tuple[type[FeatureProtection], type[LabelLink]]] = {
    "plain": (PlainFeature, PlainLink),
    "ckks": (CkksFeature, CkksLink),
}
"""Mode name -> (feature party's side, label party's side)."""


def feature_protection(
    spec: PrepareJob,
    share: F64,
    pool: Callable[[], he.HePool],
    stored: bytes | None = None,
    *,
    trainable: bool,
) -> FeatureProtection:
    """The feature party's side of ``spec``'s protection mode (``stored``: its secret kept
    from before a restart)."""
    feature, _ = MODES[spec.protection.mode]
    return feature.create(spec, share, pool, stored, trainable=trainable)


def keeps_secret(mode: str) -> bool:
    """Whether a job in ``mode`` keeps key material that it cannot resume without."""
    feature, _ = MODES[mode]
    return feature.keeps_secret


async def connect(
    spec: TrainingSpec,
    name: str,
    client: SegmentClient,
    key: JobKey,
    prepared: PreparedJob,
    pool: Callable[[], he.HePool],
    recorded: dict[str, str] | None,
) -> LabelLink:
    """The label party's link to a prepared feature party, in the job's protection mode."""
    if prepared.mode != spec.protection.mode:
        raise PeerError(f"party {name} prepared the job in {prepared.mode} mode")
    _, link = MODES[spec.protection.mode]
    return await link.open(spec, name, client, key, prepared, pool, recorded)


__all__ = [
    "MODES",
    "CkksFeature",
    "CkksLink",
    "FeatureProtection",
    "KeyMismatch",
    "LabelLink",
    "PlainFeature",
    "PlainLink",
    "connect",
    "feature_protection",
    "keeps_secret",
    "he_failure",
    "he_params",
]
