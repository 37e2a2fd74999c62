"""What a party checks of a job against the contract version it fetched from the registry.

Each party derives the job's terms from the contract itself (``contracts.job.job_terms``) and
compares what it is asked to train, field by field: the label party the training spec it is
given, a feature party the terms and the segment the label party sends it. Any difference is
refused (403 ``contract_mismatch``) naming the fields; nothing is created. A model family this
party does not implement is refused (422 ``family_not_implemented``); a job the registry holds
an approved or deployed model version of is never replaced (409 ``model_immutable``).
"""

from __future__ import annotations

from contracts.job import job_terms
from contracts.spec import Contract
from services.party.auth import ContractStanding
from services.party.families import FAMILY_NAMES
from services.protocol.errors import Conflict, ErrorCode, Forbidden, Unprocessable
from services.protocol.messages import PrepareJob, TrainingSpec
from services.protocol.terms import prepare_for, require_same, terms_document

IMPLEMENTED_FAMILIES = frozenset(FAMILY_NAMES)
"""The model families this party service trains and serves (services/party/families/,
docs/adr/0014-model-families.md)."""
RUNNING = frozenset({"created", "aligning", "training"})


def require_family(family: str, party: str) -> None:
    """Refuse (422 ``family_not_implemented``) a model family this party does not implement."""
    if family not in IMPLEMENTED_FAMILIES:
        raise Unprocessable(
            f"party {party} does not implement model family {family!r} "
            f"(it implements {', '.join(sorted(IMPLEMENTED_FAMILIES))})",
            code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
            detail={"party": party, "field": "model.family", "family": family},
        )


def require_replaceable(standing: ContractStanding, job_id: str, party: str, verb: str) -> None:
    """Refuse (409 ``model_immutable``) to ``verb`` a job whose model version the registry holds
    as approved or deployed."""
    if standing.job_locked:
        raise Conflict(
            f"party {party} will not {verb} job {job_id}: a model version it trained is approved "
            "or deployed, so the job is immutable",
            code=ErrorCode.MODEL_IMMUTABLE,
            detail={"party": party, "job_id": job_id},
        )


def require_running(standing: ContractStanding, job_id: str) -> None:
    """Refuse (409 ``invalid_transition``) to train a job the registry holds as ended."""
    status = standing.job_status
    if status is not None and status not in RUNNING:
        raise Conflict(
            f"job {job_id} is {status} at the registry: open a new job to train again",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"job_id": job_id, "status": status},
        )


def check_training(contract: Contract, spec: TrainingSpec, party: str) -> None:
    """The label party: ``spec`` must ask for exactly the contract's job."""
    terms = job_terms(contract)
    require_family(terms.model.family, party)
    require_same(
        terms.model_dump(mode="json"),
        terms_document(spec),
        party=party,
        what=f"training job {spec.job_id}",
    )


def check_prepare(contract: Contract, body: PrepareJob, party: str, key_column: str | None) -> None:
    """A feature party: the job's terms the label party sends must be the contract's, and the
    segment it asks this party to prepare must be the one those terms give it."""
    terms = job_terms(contract)
    require_family(terms.model.family, party)
    require_family(body.family, party)
    if body.terms is None:
        raise Forbidden(
            f"party {party} refuses job {body.job_id}: the request states no terms to check "
            "against the contract",
            code=ErrorCode.CONTRACT_MISMATCH,
            detail={"party": party, "fields": ["terms"]},
        )
    what = f"job {body.job_id}"
    require_same(
        terms.model_dump(mode="json"),
        body.terms.model_dump(mode="json"),
        party=party,
        what=what,
        prefix="terms",
    )
    if party not in terms.key_columns:
        raise Forbidden(
            f"party {party} brings no features to this contract's jobs",
            code=ErrorCode.CONTRACT_MISMATCH,
            detail={"party": party, "fields": ["party"]},
        )
    policy = contract.training.retraining  # a retraining job fine-tunes as the policy says
    want = prepare_for(
        terms,
        party,
        job_id=body.job_id,
        seed=body.seed,
        contract_id=body.contract_id,
        keys=body.keys,
        alignment=body.alignment,
        wire_dtype=body.wire_dtype,
        warm_start=body.warm_start,
        batch_size=None if policy is None else policy.batch_size,
        lr_factor=1.0 if policy is None else policy.lr_factor,
    )
    skip = {"keys", "terms"}
    require_same(
        want.model_dump(mode="json", exclude=skip),
        body.model_dump(mode="json", exclude=skip),
        party=party,
        what=what,
    )
    if key_column != terms.key_columns[party]:
        raise Conflict(
            f"party {party} joins on {key_column!r}, the contract on "
            f"{terms.key_columns[party]!r}: fix this party's key column setting",
            code=ErrorCode.CONTRACT_MISMATCH,
            detail={"party": party, "fields": ["key_column"]},
        )
