"""Request counts per client and minute, shared by every worker and replica (the rate limit); unlogged: a
crash may lose the last minutes' counts, which only resets the limit early.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE UNLOGGED TABLE rate_limits (
            client text NOT NULL,
            window_start bigint NOT NULL,
            hits integer NOT NULL,
            CONSTRAINT pk_rate_limits PRIMARY KEY (client, window_start)
        )""")


def downgrade() -> None:
    op.drop_table("rate_limits")
