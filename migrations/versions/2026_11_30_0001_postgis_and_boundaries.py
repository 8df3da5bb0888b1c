"""PostGIS, sources and provenance, boundary sets, admin units and crosswalks.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    op.create_table(
        "sources",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("publisher", sa.Text, nullable=False),
        sa.Column("homepage", sa.Text),
        sa.Column("licence", sa.Text, nullable=False),
        sa.Column("citation", sa.Text, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "source_files",
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "boundary_sets",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("pcode_convention", sa.Text, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("provenance", JSONB, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )
    # at most one default set per country
    op.create_index(
        "uq_boundary_sets_default", "boundary_sets", ["country"], unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "admin_units",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "boundary_set_id", sa.Text, sa.ForeignKey("boundary_sets.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("pcode", sa.Text, nullable=False),
        sa.Column("national_code", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_key", sa.Text, nullable=False),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("parent_pcode", sa.Text),
        sa.Column("source_id", sa.Text, sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("area_km2", sa.Float, nullable=False),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
        sa.Column("geom_simple", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
        sa.UniqueConstraint("boundary_set_id", "pcode", name="uq_admin_units_set_pcode"),
        sa.CheckConstraint("level IN (1, 2)", name="ck_admin_units_level"),
    )
    op.create_index("ix_admin_units_geom", "admin_units", ["geom"], postgresql_using="gist")
    op.create_index("ix_admin_units_geom_simple", "admin_units", ["geom_simple"], postgresql_using="gist")
    op.create_index("ix_admin_units_pcode", "admin_units", ["pcode"])
    op.create_index("ix_admin_units_country_level", "admin_units", ["country", "level"])
    op.create_table(
        "crosswalk",
        sa.Column("from_set", sa.Text, sa.ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("from_pcode", sa.Text, primary_key=True),
        sa.Column("to_set", sa.Text, sa.ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("to_pcode", sa.Text, primary_key=True),
        sa.Column("share_of_from", sa.Float, nullable=False),
        sa.Column("share_of_to", sa.Float, nullable=False),
    )
    op.create_index("ix_crosswalk_to", "crosswalk", ["to_set", "to_pcode"])


def downgrade() -> None:
    op.drop_table("crosswalk")
    op.drop_table("admin_units")
    op.drop_table("boundary_sets")
    op.drop_table("source_files")
    op.drop_table("sources")
