"""The fit of an empirical profile (per country: status, cross-validated figures, coefficients, vintage),
stored with its run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("score_runs", sa.Column("fit", JSONB))


def downgrade() -> None:
    op.drop_column("score_runs", "fit")
