"""Least privilege and verifiable metering (issue 14).

Admin initial access tokens (``org:admin``), resources that bind a token audience to the client
that may introspect it, operator grants to organisations, the verified caller of each usage
event, and the feature parties' own records of the calls they served.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 (written by hand)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("initial_access_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "organisation_grants",
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("grant", sa.String(length=64), nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_grants_org_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("org_id", "grant", name=op.f("pk_organisation_grants")),
    )
    op.create_table(
        "oauth_resources",
        sa.Column("resource", sa.String(length=200), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.client_id"],
            name=op.f("fk_oauth_resources_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_oauth_resources_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_oauth_resources")),
    )
    with op.batch_alter_table("oauth_resources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_resources_client_id"), ["client_id"])
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caller_client_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("caller_jti", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_usage_events_payer_occurred", ["caller_org_id", "occurred_at"], unique=False
        )
    op.create_table(
        "usage_observations",
        sa.Column("observation_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("party", sa.String(length=32), nullable=False),
        sa.Column("party_org_id", sa.String(length=36), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_usage_observations_contract_id_contracts"),
        ),
        sa.ForeignKeyConstraint(
            ["party_org_id"],
            ["organisations.id"],
            name=op.f("fk_usage_observations_party_org_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("observation_id", name=op.f("pk_usage_observations")),
    )
    with op.batch_alter_table("usage_observations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_observations_event_id"), ["event_id"])
        batch_op.create_index(
            "ix_usage_observations_contract_observed", ["contract_id", "observed_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_observations", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_observations_contract_observed")
        batch_op.drop_index(batch_op.f("ix_usage_observations_event_id"))
    op.drop_table("usage_observations")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_payer_occurred")
        batch_op.drop_column("caller_jti")
        batch_op.drop_column("caller_client_id")
    with op.batch_alter_table("oauth_resources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_resources_client_id"))
    op.drop_table("oauth_resources")
    op.drop_table("organisation_grants")
    with op.batch_alter_table("initial_access_tokens", schema=None) as batch_op:
        batch_op.drop_column("admin")
