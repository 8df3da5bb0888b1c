"""Scoring results, persisted per (profile hash, data version, boundary sets).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("profile_id", sa.Text, nullable=False),
        sa.Column("profile_hash", sa.String(16), nullable=False),
        sa.Column("data_version", sa.String(32), nullable=False),
        sa.Column("sets", ARRAY(sa.Text), nullable=False),
        sa.Column("profile", JSONB, nullable=False),
        sa.Column("sensitivity", JSONB),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.UniqueConstraint("profile_hash", "data_version", "sets", name="uq_score_runs"),
    )
    op.create_table(
        "scores",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("boundary_set_id", sa.Text, primary_key=True),
        sa.Column("pcode", sa.Text, primary_key=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("ranked", sa.Boolean, nullable=False),
        sa.Column("rank", sa.Integer),
        sa.Column("rank_region", sa.Integer),
        sa.Column("tier", sa.SmallInteger),
        sa.Column("pillar", sa.Text),
        sa.Column("pillar_secondary", sa.Text),
        sa.Column("pillar_scores", JSONB, nullable=False),
        sa.Column("migration", sa.Float),
        sa.Column("coverage", sa.Float, nullable=False),
        sa.Column("top_indicators", JSONB, nullable=False),
        sa.Column("vintage", ARRAY(sa.Text), nullable=False),
        sa.Column("rank_median", sa.Float),
        sa.Column("rank_lo", sa.Integer),
        sa.Column("rank_hi", sa.Integer),
        sa.Column("p_top", sa.Float),
        sa.Column("tier_stability", sa.Float),
        sa.Column("robust", sa.Boolean),
        sa.Column("hotspot", sa.Text, nullable=False),
        sa.Column("hotspot_confidence", sa.SmallInteger),
        sa.Column("gi_z", sa.Float),
        sa.Column("zone", sa.Text),
    )
    op.create_index("ix_scores_rank", "scores", ["run_id", "country", "rank"])
    op.create_table(
        "score_zones",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("zone", sa.Text, primary_key=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("members", ARRAY(sa.Text), nullable=False),
        sa.Column("mean_score", sa.Float),
        sa.Column("max_score", sa.Float),
        sa.Column("area_km2", sa.Float, nullable=False),
        sa.Column("pillar", sa.Text),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)),
    )


def downgrade() -> None:
    op.drop_table("score_zones")
    op.drop_table("scores")
    op.drop_table("score_runs")
