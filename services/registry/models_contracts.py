"""Tables of contracts, their versions and signatures, training jobs and model versions.

A contract is a row that stays; each text of it is a :class:`ContractVersion`, immutable once
proposed (the document is stored as the canonical JSON the parties sign, with its SHA-256). The
parties of each version are resolved to registry organisations when the version is written
(:class:`ContractParty`), so who may sign and who may train is a join, not a JSON lookup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.protocol.registry_contracts import ContractState as ContractState
from services.protocol.registry_contracts import Decision as Decision
from services.protocol.registry_contracts import JobStatus as JobStatus
from services.protocol.registry_contracts import ModelStatus as ModelStatus
from services.protocol.registry_contracts import PartyRole as PartyRole
from services.protocol.registry_contracts import VersionState as VersionState
from services.registry.models import Base, _str_enum, new_id, utcnow

DIGEST = String(64)
PARTY_NAME = String(32)


FINAL_CONTRACT_STATES = frozenset({ContractState.TERMINATED, ContractState.EXPIRED})


RUNNING_JOB_STATUSES = frozenset({JobStatus.CREATED, JobStatus.ALIGNING, JobStatus.TRAINING})


class ContractRecord(Base):
    """A contract: its owner, state, newest version and the version in force."""

    __tablename__ = "contracts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    owner_org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    state: Mapped[ContractState] = mapped_column(_str_enum(ContractState, "contract_state"))
    head_version: Mapped[int]
    active_version: Mapped[int | None]
    # End of validity of the version in force: past it, an active or suspended contract is
    # expired (computed on read; written by the next change or the sweep).
    valid_until: Mapped[datetime | None] = mapped_column(index=True)
    suspended_by: Mapped[str | None] = mapped_column(String(200))
    suspended_by_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContractVersion(Base):
    """One text of a contract. Immutable from ``proposed`` on: any change is a new version."""

    __tablename__ = "contract_versions"
    __table_args__ = (UniqueConstraint("contract_id", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"))
    version: Mapped[int]
    document: Mapped[str] = mapped_column(Text)  # canonical JSON of the validated contract
    digest: Mapped[str] = mapped_column(DIGEST, index=True)  # sha256 of ``document``
    state: Mapped[VersionState] = mapped_column(_str_enum(VersionState, "contract_version_state"))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    training_deadline: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))  # the caller's subject
    created_by_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    proposed_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]


class ContractParty(Base):
    """A party of a version, resolved to a registry organisation."""

    __tablename__ = "contract_parties"
    __table_args__ = (UniqueConstraint("version_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("contract_versions.id"))
    name: Mapped[str] = mapped_column(PARTY_NAME)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[PartyRole] = mapped_column(_str_enum(PartyRole, "party_role"))


class Signature(Base):
    """A party's accept or reject of one proposed version, bound to the digest it saw."""

    __tablename__ = "contract_signatures"
    __table_args__ = (UniqueConstraint("version_id", "party"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("contract_versions.id"))
    party: Mapped[str] = mapped_column(PARTY_NAME)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    decision: Mapped[Decision] = mapped_column(_str_enum(Decision, "signature_decision"))
    digest: Mapped[str] = mapped_column(DIGEST)
    signed_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A training job the label party runs under one agreed version of a contract."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), index=True)
    contract_version: Mapped[int]
    label_party: Mapped[str] = mapped_column(PARTY_NAME)
    label_org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus, "job_status"))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]]
    # Party name -> SHA-256 of its public key bundle for this job; write-once (store/job_keys.py).
    key_fingerprints: Mapped[dict[str, Any]] = mapped_column(JSON)
    # SHA-256 of the job's terms as the contract version fixes them (contracts/job.py); NULL for
    # jobs created before it was recorded.
    spec_digest: Mapped[str | None] = mapped_column(DIGEST)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # One entry per finished epoch, as the label party reported it (NULL: none recorded).
    history: Mapped[list[Any] | None] = mapped_column(JSON)
    # A failed or cancelled job: why, and the party at fault (a contract party name; NULL when
    # no party is, e.g. a cancellation).
    error: Mapped[str | None] = mapped_column(Text)
    failed_party: Mapped[str | None] = mapped_column(PARTY_NAME)


class ModelVersion(Base):
    """The model a finished job produced, numbered per contract."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("contract_id", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"))
    version: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    artifact_digests: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What the model is (NULL for versions recorded before these were): the contract version
    # and task it was trained under, each party's columns, the job's spec digest, each party's
    # segment digest and the model digest binding them (services/protocol/terms.py).
    contract_version: Mapped[int | None]
    task: Mapped[str | None] = mapped_column(String(16))
    columns: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    spec_digest: Mapped[str | None] = mapped_column(DIGEST)
    segment_digests: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_digest: Mapped[str | None] = mapped_column(DIGEST)
    status: Mapped[ModelStatus] = mapped_column(_str_enum(ModelStatus, "model_status"))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the version starts serving (last approval, or a rollback to it) and when it stops.
    deployed_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    # The label party's latest report of its live quality (issue 18): live metric, every
    # party's drift scores, and the status the contract's monitoring thresholds give.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quality_status: Mapped[str | None] = mapped_column(String(16))
    quality_at: Mapped[datetime | None]
