"""A data epoch: one counter bumped inside every load transaction that writes anything (values, boundaries,
indicator definitions); score runs are keyed by it instead of a hash of every stored value.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_epoch",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("reason", sa.Text, nullable=False, server_default="created"),
        sa.CheckConstraint("id = 1", name="ck_data_epoch_single_row"),
    )
    op.execute("INSERT INTO data_epoch (id, epoch, reason) VALUES (1, 1, 'migration 0007')")


def downgrade() -> None:
    op.drop_table("data_epoch")
