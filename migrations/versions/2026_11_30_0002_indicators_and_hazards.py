"""Indicator catalogue, observations with quality flags, storms and their fixes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

THEMES = "('migration', 'I', 'II', 'III', 'IV', 'V', 'context')"


def upgrade() -> None:
    op.create_table(
        "indicators",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name_es", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("theme", sa.Text, nullable=False),
        sa.Column("direction", sa.SmallInteger, nullable=False),
        sa.Column("measure", sa.Text, nullable=False),
        sa.Column("valid_min", sa.Float),
        sa.Column("valid_max", sa.Float),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"theme IN {THEMES}", name="ck_indicators_theme"),
        sa.CheckConstraint("direction IN (-1, 1)", name="ck_indicators_direction"),
        sa.CheckConstraint("measure IN ('count', 'rate')", name="ck_indicators_measure"),
    )
    op.create_table(
        "observations",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("indicator_code", sa.Text, sa.ForeignKey("indicators.code", ondelete="CASCADE"), nullable=False),
        sa.Column("boundary_set_id", sa.Text, nullable=False),
        sa.Column("pcode", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("flags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["boundary_set_id", "pcode"], ["admin_units.boundary_set_id", "admin_units.pcode"],
            ondelete="CASCADE", onupdate="CASCADE", name="fk_observations_unit",
        ),
        sa.UniqueConstraint("indicator_code", "boundary_set_id", "pcode", "period", name="uq_observations"),
        sa.CheckConstraint("value <> 'NaN' AND value <> 'Infinity' AND value <> '-Infinity'", name="ck_observations_finite"),
    )
    op.create_index("ix_observations_unit", "observations", ["boundary_set_id", "pcode"])
    op.create_table(
        "storms",
        sa.Column("storm_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_wind_kt", sa.Float),
        sa.Column("min_pressure_mb", sa.Float),
        sa.Column("track", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("ix_storms_track", "storms", ["track"], postgresql_using="gist")
    op.create_index("ix_storms_year", "storms", ["year"])
    op.create_table(
        "storm_fixes",
        sa.Column("storm_id", sa.Text, sa.ForeignKey("storms.storm_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("time", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("record", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("wind_kt", sa.Float, nullable=False),
        sa.Column("pressure_mb", sa.Float),
        sa.Column("r34_nmi", sa.Float),
        sa.Column("r64_nmi", sa.Float),
        sa.Column("rmw_nmi", sa.Float),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("ix_storm_fixes_geom", "storm_fixes", ["geom"], postgresql_using="gist")


def downgrade() -> None:
    op.drop_table("storm_fixes")
    op.drop_table("storms")
    op.drop_table("observations")
    op.drop_table("indicators")
