"""Jobs say how they went (issue 19): per-epoch history, and for a failed or cancelled job the
reason and the party at fault.

Existing rows keep NULL (no history was recorded for them).

Revision ID: 0010
Revises: 0009 (people and console)
Create Date: 2026-12-04 (written by hand)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("history", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("failed_party", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("failed_party")
        batch.drop_column("error")
        batch.drop_column("history")
