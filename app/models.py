"""Tables (SQLAlchemy Core). The schema itself is created by the Alembic migrations."""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("publisher", Text, nullable=False),
    Column("homepage", Text),
    Column("licence", Text, nullable=False),
    Column("citation", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True)),
)

source_files = Table(
    "source_files",
    metadata,
    Column("source_id", Text, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("url", Text),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
)

boundary_sets = Table(
    "boundary_sets",
    metadata,
    Column("id", Text, primary_key=True),
    Column("country", String(3), nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("pcode_convention", Text, nullable=False),
    Column("is_default", Boolean, nullable=False, server_default="false"),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("provenance", JSONB, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("boundary_set_id", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("pcode", Text, nullable=False),
    Column("national_code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False),
    Column("country", String(3), nullable=False),
    Column("parent_pcode", Text),
    Column("source_id", Text, ForeignKey("sources.id"), nullable=False),
    Column("area_km2", Float, nullable=False),
    Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
    Column("geom_simple", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
    UniqueConstraint("boundary_set_id", "pcode", name="uq_admin_units_set_pcode"),
    CheckConstraint("level IN (1, 2)", name="ck_admin_units_level"),
)

crosswalk = Table(
    "crosswalk",
    metadata,
    Column("from_set", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
    Column("from_pcode", Text, primary_key=True),
    Column("to_set", Text, ForeignKey("boundary_sets.id", ondelete="CASCADE"), primary_key=True),
    Column("to_pcode", Text, primary_key=True),
    Column("share_of_from", Float, nullable=False),
    Column("share_of_to", Float, nullable=False),
)
