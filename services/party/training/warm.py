"""Retraining from the champion (issue 18): the label party's side.

The label party starts a retraining job's top, own bottom and every link's interactive state
(plain: ``W``; ckks: its share ``W_A``, its momentum and the initial share its offsets are drawn
around) from the champion's model; each feature party starts its segment and its own part of the
interactive state from its copy of the champion (services/party/warm_start.py). In ckks mode the
two shares only make sense together, so the label party checks, at the run's first cut, that
every feature party's segment digest (its bottom and, in ckks mode, ``W_P``) is the one it served
the champion with: a party that started fresh would make ``W_A + W_P`` noise of the offsets' size
(docs/adr/0013-retraining-and-alerts.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from services.party.binding import DataBinding
from services.party.protection import LabelLink
from services.party.training.steps import restore_snapshot
from services.protocol.errors import Conflict, ErrorCode
from services.protocol.messages import CheckpointInfo


@dataclass(frozen=True, slots=True)
class Champion:
    """What a retraining job starts from at the label party: the champion's model (this party's
    side, as :func:`~services.party.training.recovery.load_model` reads it), its binding and
    each feature party's segment digest of the champion's served model (empty: not checked)."""

    model: dict[str, torch.Tensor]
    binding: DataBinding
    segments: dict[str, str] = field(default_factory=dict)


def start_from(
    champion: Champion,
    job_id: str,
    top: torch.nn.Module,
    own: torch.nn.Module | None,
    links: Mapping[str, LabelLink],
) -> None:
    """Load the champion's weights into a new run's modules and links (409
    ``warm_start_refused`` if a link's interactive state has another shape)."""
    for name, link in links.items():
        prefix = f"link.{name}."
        for key, value in link.state().items():
            theirs = champion.model.get(prefix + key)
            if theirs is not None and tuple(theirs.shape) != value.shape:
                raise _refused(
                    job_id,
                    f"party {name}'s interactive weights are {tuple(theirs.shape)} in the "
                    f"champion and {value.shape} in this job (its encoded width changed?)",
                )
    restore_snapshot(champion.model, top, own, links)


def check_started(champion: Champion, job_id: str, infos: Mapping[str, CheckpointInfo]) -> None:
    """At the first cut: every feature party must hold the champion's segment (409
    ``warm_start_refused`` otherwise: its half of the interactive weights would not match)."""
    for name, info in infos.items():
        want = champion.segments.get(name)
        if want is not None and info.segment_digest != want:
            raise _refused(
                job_id,
                f"party {name} did not start from the champion's segment "
                f"(digest {info.segment_digest}, the champion's {want})",
            )


def _refused(job_id: str, why: str) -> Conflict:
    return Conflict(
        f"job {job_id} cannot warm-start: {why}",
        code=ErrorCode.WARM_START_REFUSED,
        detail={"job_id": job_id},
    )


__all__ = ["Champion", "check_started", "start_from"]
