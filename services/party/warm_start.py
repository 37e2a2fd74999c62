"""Retraining from the champion (issue 18): a feature party's side.

A retraining job names the contract's deployed job (its *champion*) in ``PrepareJob.warm_start``.
The feature party then encodes its rows with the champion's encoder and starts the new segment
and its interactive weights (ckks: its share of them) from the champion's served weights instead
of weights drawn from the new job's key. Only a trained job of the same contract (open mode:
none), with the same segment, columns, interactive width and protection mode, can be a champion;
anything else is refused (409 ``warm_start_refused``) before the job is created.
"""

from __future__ import annotations

from collections.abc import Callable

from services.party.segment import SegmentJob
from services.protocol.errors import Conflict, ErrorCode, SpliceError
from services.protocol.messages import PrepareJob


def champion_of(spec: PrepareJob, job: Callable[[str], SegmentJob]) -> SegmentJob | None:
    """The job ``spec`` warm-starts from (None: a job from scratch), checked."""
    if spec.warm_start is None:
        return None
    try:
        champion = job(spec.warm_start)
    except SpliceError as exc:
        raise _refused(spec, f"job {spec.warm_start!r} is not prepared at this party") from exc
    theirs = champion.spec
    differs = [
        name
        for name, a, b in (
            ("contract_id", theirs.contract_id, spec.contract_id),
            ("segment", theirs.segment, spec.segment),
            ("columns", theirs.columns, spec.columns),
            ("interactive", theirs.interactive, spec.interactive),
            ("protection.mode", theirs.protection.mode, spec.protection.mode),
        )
        if a != b
    ]
    if differs:
        raise _refused(spec, f"job {spec.warm_start!r} differs in {differs}")
    if champion.applied_step < 0:
        raise _refused(spec, f"job {spec.warm_start!r} never trained")
    return champion


def warm(job: SegmentJob, champion: SegmentJob) -> None:
    """Start ``job`` from ``champion``'s weights: its segment and its interactive state (plain:
    its weights; ckks: its share ``W_P`` and momentum, which the label party's share of the
    champion, carried over by the label party, completes to the champion's ``W``). The new job
    is the champion's run continued under a new key: the label party's fresh offsets of each
    step hide W's new trajectory as they did (docs/adr/0013-retraining-and-alerts.md)."""
    job.model.load_state_dict(champion.model.state_dict())
    state = champion.protection.state()
    if state:
        job.protection.load({k: v.copy() for k, v in state.items()})


def _refused(spec: PrepareJob, why: str) -> Conflict:
    return Conflict(
        f"job {spec.job_id} cannot warm-start: {why}",
        code=ErrorCode.WARM_START_REFUSED,
        detail={"warm_start": spec.warm_start},
    )


__all__ = ["champion_of", "warm"]
