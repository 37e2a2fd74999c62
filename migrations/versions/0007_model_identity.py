"""Jobs and model versions say what they are (issue 15): the job's spec digest; each model
version's contract version, task, columns, spec digest, segment digests and model digest.

Existing rows keep NULL (they were recorded before these existed), except a model version's
contract version, which its job holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 (written by hand)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _model_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("contract_version", sa.Integer(), nullable=True),
        sa.Column("task", sa.String(length=16), nullable=True),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("spec_digest", sa.String(length=64), nullable=True),
        sa.Column("segment_digests", sa.JSON(), nullable=True),
        sa.Column("model_digest", sa.String(length=64), nullable=True),
    ]


def upgrade() -> None:
    op.add_column("jobs", sa.Column("spec_digest", sa.String(length=64), nullable=True))
    for column in _model_columns():
        op.add_column("model_versions", column)
    op.execute(
        "UPDATE model_versions SET contract_version = "
        "(SELECT jobs.contract_version FROM jobs WHERE jobs.id = model_versions.job_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        for column in reversed(_model_columns()):
            batch.drop_column(column.name)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spec_digest")
