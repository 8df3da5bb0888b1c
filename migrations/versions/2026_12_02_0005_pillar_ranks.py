"""Per-pillar ranks within each country beside the composite, the driver coverage and why a unit is not ranked; stored runs cleared (the pillar tags and the
geometric aggregation changed method, and runs are a cache recomputed on demand).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM score_runs")
    op.add_column("scores", sa.Column("pillar_ranks", JSONB, nullable=False, server_default="{}"))
    op.add_column("scores", sa.Column("driver_coverage", sa.Float))
    op.add_column("scores", sa.Column("not_ranked_reason", sa.Text))


def downgrade() -> None:
    op.drop_column("scores", "not_ranked_reason")
    op.drop_column("scores", "driver_coverage")
    op.drop_column("scores", "pillar_ranks")
