"""Model versions keep their live quality (issue 18): the label party's latest report of the live
metric, every party's drift scores and the alert status the contract's monitoring thresholds
give, and when it arrived. Existing rows keep NULL (no report yet).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 (written by hand)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("quality", sa.JSON(), nullable=True))
    op.add_column("model_versions", sa.Column("quality_status", sa.String(16), nullable=True))
    op.add_column(
        "model_versions", sa.Column("quality_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("quality_at")
        batch.drop_column("quality_status")
        batch.drop_column("quality")
