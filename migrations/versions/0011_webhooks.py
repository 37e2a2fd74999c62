"""Organisations' webhooks (issue 18): where the registry POSTs the quality alerts of the
contracts an organisation owns or is a party to. No secret column: deliveries are signed with the
registry's token signing key.

Revision ID: 0011
Revises: 0010 (job outcomes)
Create Date: 2026-12-04 (written by hand)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_webhooks_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_webhooks")),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
