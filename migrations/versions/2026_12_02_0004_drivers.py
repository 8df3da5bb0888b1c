"""Real drivers in every country: missing values with a flag, effective samples, original publishers,
and the disaster event table.

- observations.value becomes nullable: a value the source marks as "not evaluated" is stored as missing
  (NULL) with a flag that says why, never as 0; readers skip NULL values for scoring.
- observations.sample_size: the effective sample behind a survey share (weighted count).
- indicators.publisher: who produced the values (e.g. PNC for crimes), when it is not the carrier of the file.
- hazard_events: disaster records (DesInventar), matched to municipios where the names allow.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("observations", "value", existing_type=sa.Float, nullable=True)
    op.add_column("observations", sa.Column("sample_size", sa.Float))
    op.add_column("indicators", sa.Column("publisher", sa.Text))
    op.create_table(
        "hazard_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("hydromet", sa.Boolean, nullable=False),
        sa.Column("date", sa.Date),
        sa.Column("year", sa.Integer),
        sa.Column("department_name", sa.Text, nullable=False),
        sa.Column("municipio_name", sa.Text, nullable=False),
        sa.Column("boundary_set_id", sa.Text),
        sa.Column("pcode", sa.Text),
        sa.Column("place", sa.Text, nullable=False, server_default=""),
        sa.Column("deaths", sa.Float),
        sa.Column("injured", sa.Float),
        sa.Column("missing", sa.Float),
        sa.Column("houses_destroyed", sa.Float),
        sa.Column("houses_affected", sa.Float),
        sa.Column("victims", sa.Float),
        sa.Column("affected", sa.Float),
        sa.Column("glide", sa.Text, nullable=False, server_default=""),
        sa.ForeignKeyConstraint(
            ["boundary_set_id", "pcode"], ["admin_units.boundary_set_id", "admin_units.pcode"],
            ondelete="SET NULL", onupdate="CASCADE", name="fk_hazard_events_unit",
        ),
        sa.UniqueConstraint("source_id", "serial", name="uq_hazard_events_serial"),
    )
    op.create_index("ix_hazard_events_unit", "hazard_events", ["boundary_set_id", "pcode"])
    op.create_index("ix_hazard_events_type_year", "hazard_events", ["country", "event_type", "year"])


def downgrade() -> None:
    op.drop_table("hazard_events")
    op.drop_column("indicators", "publisher")
    op.drop_column("observations", "sample_size")
    op.execute("DELETE FROM observations WHERE value IS NULL")
    op.alter_column("observations", "value", existing_type=sa.Float, nullable=False)
