"""Tables of deployment approvals, usage events and per-period usage counters (issue 6).

A model version serves predictions once every approver the contract names has approved it
(:class:`ModelApproval`). Every served prediction batch is one :class:`UsageEvent`, keyed by the
event id the label party chose, so a retried or concurrent post stores it once. A
:class:`UsageCounter` row per (contract, cap period) holds the running total the usage cap is
checked against; writers lock it, so two batches cannot both pass the cap.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.models import Base, utcnow
from services.registry.models_contracts import PARTY_NAME


class ModelApproval(Base):
    """One approver's sign-off on deploying a model version."""

    __tablename__ = "model_approvals"
    __table_args__ = (UniqueConstraint("model_version_id", "approver"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    approver: Mapped[str] = mapped_column(PARTY_NAME)  # a party or owner name of the contract
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    approved_by: Mapped[str] = mapped_column(String(200))
    approved_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageEvent(Base):
    """Predictions served in one answer of the label party (``count`` rows).

    ``caller_org_id`` (the payer) is the organisation of the access token the prediction call
    carried, verified by the registry; ``caller_client_id`` and ``caller_jti`` name that token
    (null only for events stored before the registry verified callers).
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_contract_occurred", "contract_id", "occurred_at"),
        Index("ix_usage_events_payer_occurred", "caller_org_id", "occurred_at"),
    )

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"))
    contract_version: Mapped[int]
    model_version: Mapped[int]
    caller_org_id: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    reported_by: Mapped[str] = mapped_column(String(200))
    caller_client_id: Mapped[str | None] = mapped_column(String(36))
    caller_jti: Mapped[str | None] = mapped_column(String(64))


class UsageObservation(Base):
    """A feature party's own record of serving one prediction call (its side of metering).

    Every prediction asks each feature party for its part of the joint model; the label party
    names the usage event of the call, and the feature party records the call, its rows and its
    own clock, and reports them independently. The registry reconciles these records with the
    label party's events per contract and period (:mod:`services.registry.store.reconcile`).
    """

    __tablename__ = "usage_observations"
    __table_args__ = (
        Index("ix_usage_observations_contract_observed", "contract_id", "observed_at"),
    )

    observation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"))
    job_id: Mapped[str] = mapped_column(String(64))
    party: Mapped[str] = mapped_column(PARTY_NAME)
    party_org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    rows: Mapped[int] = mapped_column(BigInteger)
    observed_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageCounter(Base):
    """Predictions counted so far under a contract in one usage-cap period."""

    __tablename__ = "usage_counters"

    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class RateCounter(Base):
    """Requests counted in the current fixed window of one rate-limit bucket.

    One row per bucket (``token-client:<id>``, ``token-ip:<addr>``, ``api:<caller>``): a hit in a
    new window resets ``n`` in the same upsert, so the table never grows past one row a bucket.
    """

    __tablename__ = "rate_counters"

    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(BigInteger)
